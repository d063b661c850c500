"""The H100 recordings replayed through the normalizer, checked per labelled phase.

Each figure is checked twice: against what the recording's own counters and buckets say
(read independently with prometheus_client's parser), and against the ground truth the
fixture README lists per phase (means over each phase without its first and last second).
"""
from __future__ import annotations

import json
import math
from bisect import bisect_right
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infersight.daemon.engines import histograms as eh
from infersight.daemon.engines.signals import RATE_DECIMALS
from infersight.daemon.replay.engine import read_lines, replay_engine_lines

FIXTURES = Path(__file__).parent / "fixtures"
ENDPOINT = "http://127.0.0.1:8000/metrics"

# README ground truth: (generated tokens/s, requests running) per phase. For the split
# recording the README gives only the figures that differ (in brackets); idle is 0 in both.
README = {
    "h100-scenario": {
        "healthy": (3860, 5), "host_bound": (120, 160), "core_bound": (3730, 28), "memory_bound": (20000, 45),
        "idle": (0, 0), "launch_bound": (1450, 6), "compute_bound": (160, 1), "stall": (1000, 22),
        "noisy_neighbor": (3910, 15),
    },
    "h100-scenario-split": {"host_bound": (2570, 0), "idle": (0, 0)},
}
WAITING_HOST_BOUND = 16  # README: "160 running + 16 waiting" in the single-process host_bound


class Recording:
    """The replayed records and an independent reading of the raw scrapes."""

    def __init__(self, name: str):
        self.name = name
        folder = FIXTURES / name
        self.labels = [json.loads(line) for line in (folder / "labels.jsonl").read_text().splitlines()]
        lines = list(read_lines(folder / "engine_metrics.jsonl.gz"))
        self.batches = list(replay_engine_lines(lines, endpoint=ENDPOINT, quantile_window_s=10.0))
        self.raw = []   # (t, {sample name: value}, {le: cumulative ttft count})
        for line in lines:
            record = json.loads(line)
            values, ttft = {}, {}
            for fam in text_string_to_metric_families(record["text"]):
                for s in fam.samples:
                    values[s.name] = float(s.value)
                    if s.name == "vllm:time_to_first_token_seconds_bucket":
                        ttft[float(s.labels["le"])] = float(s.value)
            self.raw.append((record["t"], values, ttft))
        self.times = [t for t, _, _ in self.raw]

    def samples(self, signal):
        return {s.t: s.value for b in self.batches for s in b.engine_samples if s.signal == signal}

    def phase(self, label):
        """Scrapes inside the phase, its first and last second left out."""
        return [r for r in self.raw if label["t0"] + 1 <= r[0] <= label["t1"] - 1]

    def prev_t(self, t):
        return self.times[self.times.index(t) - 1]

    def cum_ttft(self, i):
        ttft = self.raw[i][2]
        bounds = tuple(sorted(ttft))
        return bounds, tuple(ttft[b] for b in bounds)


@pytest.fixture(scope="module", params=sorted(README))
def rec(request):
    return Recording(request.param)


def test_every_scrape_gives_records(rec):
    assert len(rec.batches) == len(rec.raw) > 60
    assert all(not b.errors for b in rec.batches)
    assert {s.engine for b in rec.batches for s in b.engine_samples} == {"vllm"}
    assert {s.model for b in rec.batches for s in b.engine_samples} == {"sim-llama-8b"}
    assert all(s.endpoint == ENDPOINT for b in rec.batches for s in b.engine_samples)


def test_token_rates_per_phase(rec):
    gen = rec.samples("generation_tokens_per_s")
    prompt = rec.samples("prompt_tokens_per_s")
    expected = README[rec.name]
    for label in rec.labels:
        inside = rec.phase(label)
        span = inside[-1][0] - inside[0][0]
        for counter, rates in (("vllm:generation_tokens_total", gen), ("vllm:prompt_tokens_total", prompt)):
            from_counter = (inside[-1][1][counter] - inside[0][1][counter]) / span
            # our per-scrape rates over the same intervals, weighted by each interval's length
            ours = sum(rates[t] * (t - rec.prev_t(t)) for t, _, _ in inside[1:]) / span
            # each rate is rounded to RATE_DECIMALS, so their weighted mean is within half a unit
            assert ours == pytest.approx(from_counter, rel=1e-6, abs=0.5 * 10 ** -RATE_DECIMALS + 1e-9), \
                (label["phase"], counter)
            assert all(rates[t] >= 0 for t, _, _ in inside)
        if label["phase"] in expected:
            want = expected[label["phase"]][0]
            got = sum(gen[t] * (t - rec.prev_t(t)) for t, _, _ in inside[1:]) / span
            assert got == pytest.approx(want, rel=0.10, abs=30), label["phase"]


def test_running_and_waiting_per_phase(rec):
    running = rec.samples("requests_running")
    waiting = rec.samples("requests_waiting")
    expected = README[rec.name]
    for label in rec.labels:
        inside = rec.phase(label)
        ours = sum(running[t] for t, _, _ in inside) / len(inside)
        raw = sum(v["vllm:num_requests_running"] for _, v, _ in inside) / len(inside)
        assert ours == pytest.approx(raw)
        if label["phase"] in expected:
            assert ours == pytest.approx(expected[label["phase"]][1], rel=0.10, abs=2.0), label["phase"]
        if rec.name == "h100-scenario" and label["phase"] == "host_bound":
            assert sum(waiting[t] for t, _, _ in inside) / len(inside) == pytest.approx(WAITING_HOST_BOUND, abs=2)


def test_ttft_deltas_rebuild_the_cumulative_buckets(rec):
    deltas = [d for b in rec.batches for d in b.histogram_deltas if d.signal == "ttft_seconds"]
    assert deltas and all(d.interval_s > 0 for d in deltas)
    bounds0, base = rec.cum_ttft(0)
    for i, t in enumerate(rec.times):
        bounds, cum = rec.cum_ttft(i)
        summed = [sum(d.counts[k] for d in deltas if d.t <= t) for k in range(len(bounds))]
        assert bounds == bounds0 and [b + s for b, s in zip(base, summed)] == pytest.approx(list(cum))


def test_ttft_quantiles_per_phase_and_window(rec):
    deltas = [d for b in rec.batches for d in b.histogram_deltas if d.signal == "ttft_seconds"]
    p95_by_phase = {}
    for label in rec.labels:
        inside = rec.phase(label)
        first, last = inside[0][0], inside[-1][0]
        i0, i1 = rec.times.index(first), rec.times.index(last)
        bounds, c0 = rec.cum_ttft(i0)
        _, c1 = rec.cum_ttft(i1)
        from_buckets = eh.quantile(0.95, bounds, tuple(b - a for a, b in zip(c0, c1)))
        mine = [d for d in deltas if first < d.t <= last]
        if not mine:
            assert from_buckets is None
            continue
        summed = tuple(sum(d.counts[k] for d in mine) for k in range(len(bounds)))
        assert eh.quantile(0.95, mine[0].bounds, summed) == pytest.approx(from_buckets)
        p95_by_phase[label["phase"]] = from_buckets
    # The emitted rolling p95 is the quantile of the buckets' growth over the last 10 s.
    p95 = rec.samples("ttft_seconds_p95")
    assert p95
    for t, value in p95.items():
        i = rec.times.index(t)
        j = max(0, bisect_right(rec.times, t - 10.0) - 1)
        bounds, now = rec.cum_ttft(i)
        _, before = rec.cum_ttft(j)
        assert value == pytest.approx(eh.quantile(0.95, bounds, tuple(a - b for a, b in zip(now, before))))
        assert 0 <= value < math.inf
    if rec.name == "h100-scenario":
        # A backlog builds in host_bound: requests wait far longer for their first token.
        assert p95_by_phase["host_bound"] > 10 * p95_by_phase["healthy"]


def test_recorded_errors_and_bad_json_are_reported():
    lines = ['{"t": 10.0, "text": "vllm:generation_tokens_total{model_name=\\"m\\"} 5\\n"}',
             "not json",
             '{"t": 11.0, "error": "URLError(ConnectionRefusedError(111))"}',
             '{"t": 12.0, "text": "<html>oops</html>"}',
             '{"t": 13.0, "text": "vllm:generation_tokens_total{model_name=\\"m\\"} 25\\n"}']
    batches = list(replay_engine_lines(lines, endpoint="e"))
    assert [b.t for b in batches] == [10.0, 11.0, 12.0, 13.0]
    assert batches[1].errors == ["e: recording line 2: not a scrape record", "e: URLError(ConnectionRefusedError(111))"]
    assert "not Prometheus text" in batches[2].errors[0]
    [rate] = [s for s in batches[3].engine_samples if s.signal == "generation_tokens_per_s"]
    assert rate.value == round(20 / 3, RATE_DECIMALS)   # across the failed scrapes, from the last good one
