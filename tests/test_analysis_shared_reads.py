"""The reads every GPU's analysis shares (daemon/analysis/seconds.py ``HostSeconds``), the
incremental scan of GPU-wait frames, and rankings that do not depend on the order in which
the database returns grouped rows."""
from __future__ import annotations

import time

import pytest

from infersight.daemon.analysis import attribution
from infersight.daemon.analysis.seconds import (
    GPU_WAIT_PATTERNS,
    EngineScope,
    WaitFrames,
    build_seconds,
    read_host_seconds,
)
from infersight.daemon.analysis.threads import ProcessWork, ThreadWork
from infersight.daemon.config.load import Config
from infersight.storage import analysis as q
from infersight.storage.model import Batch, EngineSample, Frame, GpuSample, StackSample, Target

SYNC = Frame("synchronize", "torch/cuda/__init__.py", 10)
EVENT_SYNC = Frame("Event.synchronize", "torch/cuda/streams.py", 20)
MAIN = Frame("main", "serve.py", 1)
STEP = Frame("step", "engine.py", 5)


def _load(store, t0: float, gpus=(0, 1, 2), leaf: Frame = SYNC) -> Target:
    """Four seconds of one engine on ``gpus``: GPU samples, engine tokens per GPU's endpoint,
    and per second 10 samples in ``step`` plus 6 waiting in ``leaf``."""
    target = Target("testhost", 4242, t0 - 10, "python serve.py", "engine")
    batch = Batch("fixture", t0, targets=[target])
    for i in range(4):
        for gpu in gpus:
            batch.gpu_samples.append(GpuSample(t0 + i + 0.5, gpu, {"util_gpu": 100.0, "sm_util": 50.0}))
            batch.engine_samples.append(EngineSample(t0 + i + 0.5, f"http://127.0.0.1:80{gpu:02d}/metrics", "vllm",
                                                     "m", "generation_tokens_per_s", 1000.0 * (gpu + 1)))
        bucket = int(t0) + i
        batch.stack_samples.append(StackSample(bucket, 4242, target.start_time, 4242, "MainThread", (MAIN, STEP),
                                               True, 10))
        batch.stack_samples.append(StackSample(bucket, 4242, target.start_time, 4242, "MainThread", (MAIN, leaf),
                                               True, 6))
    while not store.submit(batch):
        store.flush()
    store.flush()
    return target


def test_gpus_sharing_one_host_read_build_what_each_reads_alone(store) -> None:
    t0 = float(int(time.time()) - 100)
    _load(store, t0)
    cfg = Config().analysis
    mapping = {f"http://127.0.0.1:80{g:02d}/metrics": (g,) for g in (0, 1, 2)}
    host = store.read_sync(read_host_seconds, int(t0), int(t0) + 4)
    for gpu in (0, 1, 2):
        scope = EngineScope.for_gpu(gpu, mapping)
        alone = store.read_sync(build_seconds, gpu, int(t0), int(t0) + 4, cfg, scope)
        shared = store.read_sync(build_seconds, gpu, int(t0), int(t0) + 4, cfg, scope, host)
        assert shared == alone and len(alone) == 4
        assert {s.gen_tokens_s for s in shared} == {1000.0 * (gpu + 1)}     # each GPU still its own engine
        assert [(p.pid, p.active, p.gpu_wait) for p in shared[0].processes] == [(4242, 16, 6)]
    assert sorted(host.threads) == list(range(int(t0), int(t0) + 4))
    assert [(ts.pid, ts.tid, ts.active_samples) for ts in host.threads[int(t0)]] == [(4242, 4242, 16)]


def test_shared_reads_of_another_range_are_refused(store) -> None:
    t0 = float(int(time.time()) - 100)
    _load(store, t0)
    host = store.read_sync(read_host_seconds, int(t0), int(t0) + 2)
    with pytest.raises(ValueError, match="not \\["):
        store.read_sync(build_seconds, 0, int(t0), int(t0) + 4, Config().analysis, None, host)


def test_wait_frames_are_scanned_once_and_new_ones_found_later(store) -> None:
    t0 = float(int(time.time()) - 100)
    _load(store, t0)
    first, top = store.read_sync(q.wait_frames_since, GPU_WAIT_PATTERNS, 0)
    assert len(first) == 1 and top >= first[0]
    assert store.read_sync(q.wait_frames_since, GPU_WAIT_PATTERNS, top) == ([], top)   # nothing new: nothing scanned

    waits = WaitFrames()
    assert store.read_sync(waits.read) == first
    _load(store, t0 + 10, leaf=EVENT_SYNC)        # a wait frame first seen later
    later = store.read_sync(waits.read)
    assert len(later) == 2 and set(first) < set(later)
    # the incremental reader agrees with a full scan
    assert later == sorted(store.read_sync(q.wait_frames_since, GPU_WAIT_PATTERNS, 0)[0])
    host = store.read_sync(read_host_seconds, int(t0) + 10, int(t0) + 14, waits)
    assert host.stacks[int(t0) + 10][4242]["gpu_wait"] == 6


def test_code_rankings_do_not_depend_on_row_order() -> None:
    root = ("main", "serve.py", 1)                  # analysis paths: (function, file, line), root first
    a = ((root, ("f", "a.py", 3)), 7)
    b = ((root, ("g", "b.py", 4)), 7)
    c = ((root, ("f", "a.py", 9)), 7)               # f's second line, as often as its first
    d = ((root, ("e", "c.py", 2)), 7)               # as often as g
    who = {"pid": 1, "role": "engine", "thread": "MainThread"}
    one = attribution.code_of(dict([a, b, c, d]), who, 5)
    other = attribution.code_of(dict([d, c, b, a]), who, 5)
    assert one == other
    assert [(f["frame"], f["line"]) for f in one[0]] == [("f", 3), ("e", 2), ("g", 4)]   # ties: by name, lowest line
    assert [h["frame"] for h in one[1]] == ["f", "e", "g"]


def test_the_busiest_of_equally_busy_threads_is_the_lower_tid() -> None:
    def thread(tid: int) -> ThreadWork:
        return ThreadWork(tid, f"t{tid}", own=20)

    for order in ((7, 3, 5), (5, 7, 3)):
        work = ProcessWork(1, [thread(t) for t in order])
        assert work.busiest_thread().tid == 3
