"""vLLM 0.24's families as the real engine served them (tests/fixtures/vllm-small, vllm-large:
``vllm serve`` on an H200 under labelled load, scraped once a second by the recorder).

The ground truth is read from the raw text with regular expressions, independently of the
parser and normalizer under test.
"""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from infersight.daemon.engines.ingest import EndpointIngest
from infersight.daemon.replay.engine import read_lines, replay_engine_lines

FIXTURES = Path(__file__).parent / "fixtures"
RECORDINGS = ("vllm-small", "vllm-large")


def records(name: str) -> list[dict]:
    with gzip.open(FIXTURES / name / "engine_metrics.jsonl.gz", "rt") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def raw(text: str, family: str) -> list[tuple[str, float]]:
    """(labels, value) of every sample of ``family`` in a scrape, by regular expression."""
    return [(m.group(1), float(m.group(2)))
            for m in re.finditer(rf"^{re.escape(family)}\{{([^}}]*)\}} (\S+)$", text, re.M)]


def replayed(name: str) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for batch in replay_engine_lines(read_lines(FIXTURES / name / "engine_metrics.jsonl.gz"), endpoint=name):
        for s in batch.engine_samples:
            series.setdefault(s.signal, []).append((s.t, s.value))
    return series


@pytest.mark.parametrize("name", RECORDINGS)
def test_every_answered_scrape_is_a_sample_with_its_latency(name):
    answered = [r for r in records(name) if "text" in r]
    series = replayed(name)
    latencies = [v for _, v in series["scrape_latency_seconds"]]
    assert latencies == pytest.approx([r["latency_s"] for r in answered])
    # the scrapes a 0.8 s deadline would have lost are there
    slow = [r for r in answered if r["latency_s"] > 0.8]
    assert slow and sum(v > 0.8 for v in latencies) == len(slow)


@pytest.mark.parametrize("name", RECORDINGS)
def test_steps_per_second_integrate_to_the_step_counter(name):
    """The rate of iteration_tokens_total_count times the time between scrapes adds up to the
    steps the counter counted (a restart's new process counted from zero)."""
    answered = [r for r in records(name) if "text" in r]
    expected, prev = 0.0, None
    for r in answered:
        [(_, count)] = raw(r["text"], "vllm:iteration_tokens_total_count")
        [(_, created)] = raw(r["text"], "vllm:iteration_tokens_total_created")
        if prev is not None:
            expected += count if (count < prev[0] or created != prev[1]) else count - prev[0]
        prev = (count, created)
    series = replayed(name)
    times = [r["t"] + r["latency_s"] for r in answered]
    dt = {b: b - a for a, b in zip(times, times[1:])}
    integrated = sum(v * dt[t] for t, v in series["steps_per_s"])
    assert expected > 1000 and integrated == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", RECORDINGS)
def test_waiting_by_reason_matches_the_raw_gauges(name):
    answered = [r for r in records(name) if "text" in r]
    capacity = [sum(v for labels, v in raw(r["text"], "vllm:num_requests_waiting_by_reason")
                    if 'reason="capacity"' in labels) for r in answered]
    series = replayed(name)
    assert [v for _, v in series["requests_waiting_capacity"]] == capacity
    assert max(capacity) > 0 and {v for _, v in series["requests_waiting_deferred"]} == {0.0}


@pytest.mark.parametrize("name", RECORDINGS)
def test_latency_histograms_give_quantiles_under_load(name):
    series = replayed(name)
    for signal in ("iteration_tokens_p50", "prefill_time_seconds_p95", "decode_time_seconds_p50"):
        assert series[signal] and all(v >= 0 for _, v in series[signal]), signal
    # tokens per step: between 1 and vLLM's largest bucket bound
    assert all(1 <= v <= 16384 for _, v in series["iteration_tokens_p99"])


@pytest.mark.parametrize("name", RECORDINGS)
def test_prefix_cache_queries_flow_and_the_hit_ratio_is_what_the_counters_say(name):
    answered = [r for r in records(name) if "text" in r]
    hits = {v for r in answered for _, v in raw(r["text"], "vllm:prefix_cache_hits_total")}
    series = replayed(name)
    assert max(v for _, v in series["prefix_cache_queries_per_s"]) > 100
    if hits == {0.0}:       # these runs found nothing in the cache (random prompts)
        assert {v for _, v in series["prefix_cache_hit_ratio"]} == {0.0}


@pytest.mark.parametrize("name", RECORDINGS)
def test_flop_counters_exported_but_not_counting_give_no_mfu(name):
    """vLLM 0.24 registers estimated_*_per_gpu always but counts only with --enable-mfu-metrics;
    these runs went without it: every value is 0 while thousands of tokens flowed."""
    answered = [r for r in records(name) if "text" in r]
    assert {v for r in answered for _, v in raw(r["text"], "vllm:estimated_flops_per_gpu_total")} == {0.0}
    series = replayed(name)
    assert max(v for _, v in series["generation_tokens_per_s"]) > 1000
    assert not {"flops_per_gpu_per_s", "read_bytes_per_gpu_per_s", "write_bytes_per_gpu_per_s"} & set(series)
    ingest = EndpointIngest(name, 10.0, 5000)
    out = ingest.ingest(answered[-1]["t"], answered[-1]["text"])
    assert out.off == ["flops_per_gpu_per_s", "read_bytes_per_gpu_per_s", "write_bytes_per_gpu_per_s"]
