"""The analysis mechanisms built for real engines, on literal inputs: roofs and latency_bound,
the start-up state, episode splitting, learned GPU waits, culprit threads."""
from __future__ import annotations

import random

from infersight.daemon.analysis.classify import ProcessSecond, Second, classify
from infersight.daemon.analysis.lifecycle import Lifecycle, startup_share
from infersight.daemon.analysis.threads import GpuWaitLearner, split_process
from infersight.daemon.config.load import AnalysisConfig
from infersight.storage.thread_stacks import ThreadSecond

CFG = AnalysisConfig()


def _second(sm, tensor, dram, util=100.0, cpu=None):
    procs = [ProcessSecond(pid=1, role="engine_core", cpu_pct=cpu)] if cpu is not None else []
    return Second(t=0, gpu=0, util_gpu=util, sm_util=sm, tensor_util=tensor, dram_bw_util=dram, running=8,
                  gen_tokens_s=100.0, processes=procs)


def test_busy_classes_follow_the_measured_roofs():
    # DESIGN.md's H100/H200 phases: GEMM, copy, GEMV, prefill, batched 7 B decode
    assert classify(_second(96.6, 93.8, 25.8), CFG, 50)[0] == "compute_bound"
    assert classify(_second(99.5, 0.0, 90.1), CFG, 50)[0] == "memory_bound"
    assert classify(_second(82.5, 2.4, 89.6), CFG, 50)[0] == "memory_bound"
    assert classify(_second(94.0, 69.0, 24.0), CFG, 50)[0] == "compute_bound"
    assert classify(_second(71.0, 28.0, 36.0), CFG, 50)[0] == "latency_bound"
    assert classify(_second(80.4, 32.4, 49.9), CFG, 50)[0] == "latency_bound"


def test_a_saturated_process_makes_a_half_busy_gpu_host_bound():
    assert classify(_second(43.0, 8.7, 34.3, util=58.7, cpu=100.0), CFG, 50)[0] == "host_bound"
    assert classify(_second(65.0, 10.9, 52.1, util=86.0, cpu=100.0), CFG, 50)[0] == "memory_bound"
    assert classify(_second(43.0, 8.7, 34.3, util=58.7, cpu=50.0), CFG, 50)[0] == "memory_bound"


def test_lifecycle_wins_over_the_counters():
    assert classify(_second(0.0, 0.0, 0.0, util=0.0, cpu=100.0), CFG, 50, "starting")[0] == "starting"


IMPORT = (("<module>", "x.py", 1), ("_call_with_frames_removed", "<frozen importlib._bootstrap>", 2))
WORK = (("<module>", "x.py", 1), ("step", "engine/core.py", 5))


def _proc(t, share, cpu, role="engine_core", start=0.0, exited=None):
    return {"pid": 7, "start_time": start, "exited_at": exited, "role": role, "own_cpu_pct": cpu, "startup_share": share}


def test_startup_share_counts_stacks_with_start_up_code_anywhere():
    assert startup_share({IMPORT: 3, WORK: 1}) == 0.75
    assert startup_share({}) == 0.0
    build = (("main", "w.py", 1), ("LlamaDecoderLayer.__init__", "transformers/models/llama/modeling_llama.py", 9),
             ("Linear.reset_parameters", "torch/nn/modules/linear.py", 3))
    request = (("main", "w.py", 1), ("Request.__init__", "vllm/v1/request.py", 4))
    assert startup_share({build: 1}) == 1.0
    assert startup_share({request: 1}) == 0.0


def test_an_engine_stays_starting_through_a_pause_until_it_serves_or_idles_with_metrics_up():
    lc = Lifecycle(startup_max_s=900)
    assert lc.step(1, [_proc(1, 1.0, 100)], served=False) == "starting"
    # vLLM's engine core pauses between compiling and capturing graphs: not ready yet
    for t in range(2, 8):
        assert lc.step(t, [_proc(t, 0.0, 1)], served=False) == "starting"
    assert lc.step(8, [_proc(8, 0.0, 100)], served=False) == "starting"
    assert lc.step(9, [_proc(9, 0.0, 100)], served=True) is None
    assert lc.step(10, [_proc(10, 1.0, 100)], served=False) is None   # once done, done


def test_an_engine_with_metrics_up_and_quiet_is_ready():
    lc = Lifecycle(startup_max_s=900)
    lc.step(1, [_proc(1, 1.0, 100)], served=False)
    states = [lc.step(t, [_proc(t, 0.0, 1)], served=False, answering=True) for t in range(2, 6)]
    assert states[-1] is None and states[0] == "starting"


def test_a_plain_process_leaves_start_up_when_start_up_code_stops():
    lc = Lifecycle(startup_max_s=900)
    lc.step(1, [_proc(1, 1.0, 100, role="engine")], served=False)
    states = [lc.step(t, [_proc(t, 0.0, 100, role="engine")], served=False) for t in range(2, 9)]
    assert states[:4] == ["starting"] * 4 and states[-1] is None


def test_an_old_process_never_starts_and_an_exiting_one_stops():
    lc = Lifecycle(startup_max_s=900)
    assert lc.step(5000, [_proc(5000, 1.0, 100)], served=False) is None
    assert lc.step(5001, [_proc(5001, 0.0, 100, exited=5010)], served=False) == "stopping"
    assert lc.step(5002, [_proc(5002, 0.0, 100, exited=5010)], served=True) is None


def test_a_leaf_whose_share_rises_with_the_gpu_is_learned_as_a_gpu_wait():
    learner = GpuWaitLearner(busy_sm_pct=40)
    rng = random.Random(1)
    for i in range(60):
        busy = i % 2 == 0
        sm = rng.uniform(60, 90) if busy else rng.uniform(5, 30)
        wait = int(40 * (0.6 if busy else 0.05))
        learner.feed(9, sm, {"model.py:get_output": wait, "sched.py:prepare": 40 - wait})
    assert learner.waits(9) == frozenset({"model.py:get_output"})
    fresh = GpuWaitLearner(busy_sm_pct=40)
    fresh.feed(9, 80, {"model.py:get_output": 30})
    assert fresh.waits(9) == frozenset()


def test_split_process_sorts_own_work_waits_and_gpu_waits():
    poll = (("run", "asyncio/runners.py", 1), ("Runner.run", "asyncio/runners.py", 2))
    sync = (("step", "e.py", 1), ("synchronize", "torch/cuda/__init__.py", 3))
    learned = (("step", "e.py", 1), ("get_output", "model.py", 4))
    ts = ThreadSecond(pid=3, tid=3, name="MainThread", active={poll: 10, sync: 5, learned: 5, WORK: 20})
    work = split_process(3, [ts], frozenset({"model.py:get_output"}))
    t = work.threads[0]
    assert (t.own, t.wait, t.gpu_wait) == (20, 10, 10)
    assert work.busiest_thread() is t and list(t.own_stacks) == [WORK]
