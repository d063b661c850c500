"""Per-second bucketing of recordings, the active/idle split, thread CPU history and the rate governor."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from infersight.daemon.stacks.buckets import BucketAccumulator, finalize, is_wait_frame, largest_remainder, split_active
from infersight.daemon.stacks.budget import RateGovernor
from infersight.daemon.stacks.parse import parse_chrometrace
from infersight.daemon.stacks.thread_cpu import ThreadCpuHistory, read_thread_cpu
from infersight.storage.model import Frame

FIXTURES = Path(__file__).parent / "fixtures"


def _ev(ph: str, name: str, ts: float, tid: int, filename: str = "app.py", line: int = 1) -> dict:
    return {"args": {"filename": filename, "line": line}, "cat": "py-spy", "name": name, "ph": ph,
            "pid": 1, "tid": tid, "ts": int(ts * 1e6)}


def _recording(t0: float, t1: float, switch: float | None = None, tid: int = 11) -> list[dict]:
    """One thread: ``work`` from t0 (then ``wait`` from ``switch``), closed at t1; seconds since ts 0."""
    events = [_ev("B", f"thread ({tid}): w", t0, tid, "", 0), _ev("B", "work", t0, tid)]
    if switch is not None:
        events += [_ev("E", "work", switch, tid), _ev("B", "Condition.wait", switch, tid, "threading.py", 327)]
        events += [_ev("E", "Condition.wait", t1, tid, "threading.py", 327)]
    else:
        events += [_ev("E", "work", t1, tid)]
    return events + [_ev("E", f"thread ({tid}): w", t1, tid, "", 0)]


@given(st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1, max_size=30))
def test_largest_remainder_keeps_total_and_stays_within_one(values: list[float]) -> None:
    total = round(sum(values))
    out = largest_remainder(values, total)
    assert sum(out) == total
    assert all(math.floor(v) <= o <= math.floor(v) + 1 for v, o in zip(values, out))


def test_wait_frames() -> None:
    assert is_wait_frame(Frame("Condition.wait", "/usr/lib/python3.12/threading.py", 327))
    assert is_wait_frame(Frame("EpollSelector.select", "selectors.py", 468))
    assert is_wait_frame(Frame("Queue.get", "queue.py", 171))
    assert not is_wait_frame(Frame("Cache.get", "app/cache.py", 3))     # "get" waits only in queues
    assert not is_wait_frame(Frame("synchronize", "torch/cuda/__init__.py", 1162))


def test_split_active_tiers_and_unknown_share() -> None:
    waits = [False, False, True]                      # stack 2 has a waiting leaf
    counts = {0: 6, 1: 2, 2: 12}
    rows = split_active(counts, 0.5, waits)           # 10 of 20 samples ran
    active = {s: n for s, a, n in rows if a}
    idle = {s: n for s, a, n in rows if not a}
    assert active == {0: 6, 1: 2, 2: 2}               # running stacks first, the wait takes the rest
    assert idle == {2: 10}
    assert sum(n for _, _, n in rows) == 20
    guessed = split_active(counts, None, waits)
    assert {(s, a) for s, a, _ in guessed} == {(0, True), (1, True), (2, False)}
    assert {s: n for s, a, n in split_active(counts, 0.0, waits)} == counts
    assert all(not a for _, a, _ in split_active(counts, 0.0, waits))


def test_buckets_follow_wall_clock_and_totals_follow_pyspy() -> None:
    origin = 1000.0
    # 0.25 s .. 3.25 s after origin: work until 2.0, then waiting; py-spy said 60 samples.
    timeline = parse_chrometrace(_recording(0.25, 3.25, switch=2.0))
    acc = BucketAccumulator()
    use = acc.add_recording(timeline, origin, samples=60, errors=3, rate_hz=20)
    assert (use.used_from, use.used_to) == (1000.25, 1003.25)
    assert math.isclose(use.samples, 60.0)
    done = acc.take_complete()
    assert [b.bucket for b in done] == [1000, 1001, 1002]          # 1003 is still open
    samples, stats = finalize(done, acc, 7, 1.5)
    assert [s.samples for s in stats] == [15, 20, 20]
    assert sum(s.errors for s in stats) <= 3
    by_bucket: dict[int, dict[str, int]] = {}
    for s in samples:
        by_bucket.setdefault(s.bucket, {})
        by_bucket[s.bucket][s.frames[-1].function] = by_bucket[s.bucket].get(s.frames[-1].function, 0) + s.count
        assert (s.pid, s.start_time, s.tid, s.thread_name) == (7, 1.5, 11, "w")
    assert set(by_bucket[1000]) == {"work"} and set(by_bucket[1002]) == {"Condition.wait"}
    # 1001: "work" until the switch, moved one sampling interval (1/20 s) earlier than seen.
    assert by_bucket[1001] == {"work": 19, "Condition.wait": 1}
    # No CPU readings: the leaf decides, the wait is idle.
    assert all(s.active == (s.frames[-1].function == "work") for s in samples)
    rest, rest_stats = finalize(acc.take_all(), acc, 7, 1.5)
    assert [s.bucket for s in rest_stats] == [1003] and rest_stats[0].samples == 5


def test_overlapping_recordings_count_each_second_once() -> None:
    acc = BucketAccumulator()
    first = parse_chrometrace(_recording(0.1, 5.2))               # wall 100.1 .. 105.2
    second = parse_chrometrace(_recording(0.05, 4.0))              # origin 104.5: wall 104.55 .. 108.5
    acc.add_recording(first, 100.0, samples=102, errors=0, rate_hz=20)
    use = acc.add_recording(second, 104.5, samples=79, errors=0, rate_hz=20)
    assert use.used_from == 105.2 and acc.covered_until == 108.5   # the second one only from where the first ended
    samples, stats = finalize(acc.take_all(), acc, 1, 0.0)
    per_bucket = {s.bucket: s.samples for s in stats}
    assert sorted(per_bucket) == list(range(100, 109))
    assert all(per_bucket[b] == 20 for b in range(101, 108))       # whole seconds: one second's samples, not two


def test_a_gap_between_recordings_stays_uncovered() -> None:
    acc = BucketAccumulator()
    acc.add_recording(parse_chrometrace(_recording(0.0, 2.0)), 10.0, samples=40, errors=0, rate_hz=20)
    acc.add_recording(parse_chrometrace(_recording(0.0, 2.0)), 14.0, samples=40, errors=0, rate_hz=20)
    _, stats = finalize(acc.take_all(), acc, 1, 0.0)
    assert [s.bucket for s in stats] == [10, 11, 14, 15]


def test_cpu_share_splits_one_stack_and_a_vanished_thread_is_cut() -> None:
    history = ThreadCpuHistory()
    for k in range(0, 6):
        cpu = {11: 0.25 * k}                           # thread 11 runs a quarter of each second
        if k < 3:
            cpu[12] = 0.0                              # thread 12 is gone from second 3 on
        history.add(200.02 + k, cpu)
    events = _recording(0.0, 5.0, tid=11) + _recording(0.0, 5.0, tid=12)
    acc = BucketAccumulator()
    acc.add_recording(parse_chrometrace(events), 200.0, samples=None, errors=None, rate_hz=20,
                      gone_at=history.gone_at)
    samples, _ = finalize(acc.take_all(), acc, 1, 0.0, share=history.share)
    t11 = [s for s in samples if s.tid == 11 and 200 <= s.bucket <= 203]
    active = sum(s.count for s in t11 if s.active)
    assert active == 4 * 5                             # 5 of each second's 20 samples ran
    assert sum(s.count for s in t11) == 80
    t12 = [s for s in samples if s.tid == 12]
    # Cut at the first reading without it (203.02), not stretched to the recording's end (205).
    assert max(s.bucket for s in t12) == 202 and sum(s.count for s in t12) == 60
    # It never ran while readings bracket a second; its last second has no reading after it,
    # so the leaf decides there.
    assert all(not s.active for s in t12 if s.bucket < 202)


def test_include_idle_false_drops_idle_rows_only() -> None:
    acc = BucketAccumulator()
    acc.add_recording(parse_chrometrace(_recording(0.0, 3.0, switch=1.5)), 50.0, samples=None, errors=None,
                      rate_hz=10)
    samples, stats = finalize(acc.take_all(), acc, 1, 0.0, include_idle=False)
    assert samples and all(s.active for s in samples)
    assert sum(s.samples for s in stats) == 30         # the stats still count every sample taken


def test_real_timeline_buckets_add_up() -> None:
    with gzip.open(FIXTURES / "h100-scenario/stacks/644.chrometrace.json.gz", "rb") as fh:
        timeline = parse_chrometrace(json.load(fh))
    processes = json.loads((FIXTURES / "h100-scenario/processes.json").read_text())["processes"]
    launch = next(p["pyspy_launch_wall"] for p in processes if p["pid"] == 644)
    acc = BucketAccumulator()
    use = acc.add_recording(timeline, launch, samples=None, errors=None, rate_hz=50)
    samples, stats = finalize(acc.take_all(), acc, 644, launch)
    span = (timeline.last_us - timeline.first_us) / 1e6
    assert len(stats) in (math.ceil(span), math.ceil(span) + 1)
    # Without a sample count the nominal rate applies: every thread's seconds at 50 per second.
    threads = len(timeline.tracks)
    assert abs(sum(s.count for s in samples) - use.samples) <= len(stats) * threads
    assert all(s.bucket == math.floor(s.bucket) for s in samples)


def test_read_thread_cpu_of_this_process() -> None:
    import os
    import threading

    cpu = read_thread_cpu(os.getpid())
    assert cpu is not None and threading.get_native_id() in cpu
    assert read_thread_cpu(2 ** 22 + 12345) is None


def test_rate_governor_settles_within_budget() -> None:
    gov = RateGovernor(max_rate=20, budget_percent=1.25)
    # A target that costs 0.5% of a core per Hz: 20 Hz is far over budget.
    rate = 20
    for _ in range(6):
        rate = gov.observe(rate, sampling_cpu_s=0.005 * rate * 10, sampling_wall_s=10, attach_cpu_s=0.02,
                           recording_s=10, overlap_s=0.5)
    assert rate == 2
    assert gov.cost_percent is not None and gov.cost_percent <= 1.25
    cheap = RateGovernor(max_rate=20, budget_percent=1.25)
    assert cheap.observe(20, 0.005, 10, 0.01, 10, 0.5) == 20         # well within budget: stays at the maximum
    fixed = RateGovernor(max_rate=20, budget_percent=0)
    assert fixed.observe(20, 5.0, 10, 0.01, 10, 0.5) == 20           # budget 0: fixed rate
    back_up = RateGovernor(max_rate=20, budget_percent=1.25)
    back_up.rate = 2
    assert back_up.observe(2, 0.0001, 10, 0.0, 10, 0.5) == 4         # cheaper than thought: at most doubles
