"""Replayed scrapes that the recorder timed: stamped when answered, latency kept as a signal."""
from __future__ import annotations

import json

import pytest

from infersight.daemon.replay.engine import replay_engine_lines


def line(t: float, tokens: float, latency: float | None = None, text: bool = True) -> str:
    record: dict = {"t": t}
    if latency is not None:
        record["latency_s"] = latency
    if text:
        record["text"] = f'vllm:generation_tokens_total{{engine="0",model_name="m"}} {tokens}\n'
    else:
        record["error"] = "TimeoutError()"
    return json.dumps(record)


def test_timed_scrapes_are_stamped_when_answered_and_keep_their_latency():
    # the engine makes 100 tokens/s; the recorder asked every second, the answers came 0.1 or 1.5 s later
    lines = [line(0.0, 10.0, 0.1), line(1.1, 260.0, 1.5), line(3.0, 310.0, 0.1), line(4.1, 410.0, 0.0)]
    batches = list(replay_engine_lines(lines, endpoint="rec"))
    assert [b.t for b in batches] == pytest.approx([0.1, 2.6, 3.1, 4.1])
    rates = [s.value for b in batches for s in b.engine_samples if s.signal == "generation_tokens_per_s"]
    assert rates == pytest.approx([100.0] * 3)   # stamped when asked they would read 227, 26 and 91
    latencies = [(s.t, s.value, s.engine) for b in batches for s in b.engine_samples
                 if s.signal == "scrape_latency_seconds"]
    assert latencies == [(pytest.approx(0.1), 0.1, "vllm"), (pytest.approx(2.6), 1.5, "vllm"),
                         (pytest.approx(3.1), 0.1, "vllm"), (pytest.approx(4.1), 0.0, "vllm")]


@pytest.mark.parametrize("latency", [-1.0, "1.5", True, 1e9])
def test_an_unusable_latency_is_ignored(latency):
    record = json.loads(line(5.0, 1.0))
    record["latency_s"] = latency
    [batch] = replay_engine_lines([json.dumps(record)], endpoint="rec")
    assert batch.t == 5.0 and not [s for s in batch.engine_samples if s.signal == "scrape_latency_seconds"]


def test_untimed_and_failed_scrapes_give_no_latency():
    batches = list(replay_engine_lines([line(0.0, 1.0), line(1.0, 0.0, latency=15.0, text=False)], endpoint="rec"))
    assert not [s for b in batches for s in b.engine_samples if s.signal == "scrape_latency_seconds"]
    assert batches[1].errors == ["rec: TimeoutError()"]
