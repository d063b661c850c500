"""Waits in collectives and stragglers among the ranks of a tensor-parallel engine, on CPU.

The stacks are shaped like vLLM 0.24's TP workers (``WorkerProc.worker_busy_loop`` reading
the engine's step broadcast from ``shm_broadcast``, the model's all-reduce through
``vllm/distributed`` down to pynccl, input preparation in ``GPUModelRunner``), read from its
source. The end-to-end test runs the real GPU collector on a fake NVML of two GPUs (GPM with
NVLink traffic), a real store and the real analyzer.
"""
from __future__ import annotations

import asyncio
import random
import time

from infersight.daemon.analysis.analyzer import Analyzer
from infersight.daemon.analysis.classify import ProcessSecond, Second
from infersight.daemon.analysis.straggler import StragglerDetector, engine_ranks
from infersight.daemon.analysis.threads import is_collective, split_process
from infersight.daemon.collectors.gpu import GpuCollector
from infersight.daemon.config.load import AnalysisConfig, Config, GpuCollectorConfig
from infersight.daemon.gpu.fake_nvml import FakeGpu, FakeNvml, gpm_values
from infersight.storage import events as q_events
from infersight.storage.model import EngineSample, Frame, StackSample, Target
from infersight.storage.thread_stacks import ThreadSecond

MIB = 1 << 20
GIB = 1 << 30
_BOOT = (("<module>", "<string>", 1), ("spawn_main", "multiprocessing/spawn.py", 122),
         ("_main", "multiprocessing/spawn.py", 135), ("BaseProcess._bootstrap", "multiprocessing/process.py", 314),
         ("BaseProcess.run", "multiprocessing/process.py", 108),
         ("WorkerProc.worker_main", "vllm/v1/executor/multiproc_executor.py", 870),
         ("WorkerProc.worker_busy_loop", "vllm/v1/executor/multiproc_executor.py", 992))
_EXEC = _BOOT + (("WorkerWrapperBase.execute_model", "vllm/v1/worker/worker_base.py", 351),
                 ("context_decorator.<locals>.decorate_context", "torch/utils/_contextlib.py", 124),
                 ("Worker.execute_model", "vllm/v1/worker/gpu_worker.py", 896),
                 ("context_decorator.<locals>.decorate_context", "torch/utils/_contextlib.py", 124),
                 ("GPUModelRunner.execute_model", "vllm/v1/worker/gpu_model_runner.py", 4140))
_FORWARD = _EXEC + (("GPUModelRunner._model_forward", "vllm/v1/worker/gpu_model_runner.py", 3480),
                    ("Module._wrapped_call_impl", "torch/nn/modules/module.py", 1779),
                    ("Module._call_impl", "torch/nn/modules/module.py", 1790),
                    ("LlamaMLP.forward", "vllm/model_executor/models/llama.py", 120),
                    ("RowParallelLinear.forward", "vllm/model_executor/layers/linear.py", 1400))
PREPARE = _EXEC + (("GPUModelRunner._prepare_inputs", "vllm/v1/worker/gpu_model_runner.py", 2124),)
BLOCK_TABLE = _EXEC + (("GPUModelRunner._prepare_inputs", "vllm/v1/worker/gpu_model_runner.py", 2150),
                       ("BlockTable.compute_slot_mapping", "vllm/v1/worker/block_table.py", 140))
ALL_REDUCE = _FORWARD + (
    ("tensor_model_parallel_all_reduce", "vllm/distributed/communication_op.py", 14),
    ("GroupCoordinator.all_reduce", "vllm/distributed/parallel_state.py", 640),
    ("OpOverloadPacket.__call__", "torch/_ops.py", 1255),
    ("all_reduce", "vllm/distributed/parallel_state.py", 135),
    ("GroupCoordinator._all_reduce_out_place", "vllm/distributed/parallel_state.py", 648),
    ("CudaCommunicator.all_reduce", "vllm/distributed/device_communicators/cuda_communicator.py", 150),
    ("PyNcclCommunicator.all_reduce", "vllm/distributed/device_communicators/pynccl.py", 140),
    ("NCCLLibrary.ncclAllReduce", "vllm/distributed/device_communicators/pynccl_wrapper.py", 400))
CUSTOM_AR = _FORWARD + (
    ("tensor_model_parallel_all_reduce", "vllm/distributed/communication_op.py", 14),
    ("GroupCoordinator.all_reduce", "vllm/distributed/parallel_state.py", 640),
    ("CustomAllreduce.custom_all_reduce", "vllm/distributed/device_communicators/custom_all_reduce.py", 300))
_READ = _BOOT + (("MessageQueue.dequeue", "vllm/distributed/device_communicators/shm_broadcast.py", 783),
                 ("_GeneratorContextManager.__enter__", "contextlib.py", 137),
                 ("MessageQueue.acquire_read", "vllm/distributed/device_communicators/shm_broadcast.py", 698))
DEQUEUE_SPIN = _READ + (("SpinCondition.wait", "vllm/distributed/device_communicators/shm_broadcast.py", 196),
                        ("sched_yield", "vllm/distributed/utils.py", 48))
DEQUEUE_POLL = _READ + (("SpinCondition.wait", "vllm/distributed/device_communicators/shm_broadcast.py", 198),
                        ("Poller.poll", "zmq/sugar/poll.py", 106))
BARRIER = (("main", "serve.py", 10), ("barrier", "torch/distributed/distributed_c10d.py", 4800),
           ("_exception_logger.<locals>.wrapper", "torch/distributed/c10d_logger.py", 81))
EVENT_SYNC = _EXEC + (("AsyncGPUModelRunnerOutput.get_output", "vllm/v1/worker/gpu_model_runner.py", 291),
                      ("Event.synchronize", "torch/cuda/streams.py", 227))
CAPTURE = _BOOT + (("GroupCoordinator.graph_capture", "vllm/distributed/parallel_state.py", 600),
                   ("LlamaModel.forward", "vllm/model_executor/models/llama.py", 400))
ELASTIC_MAIN = (("<module>", "train.py", 1), ("_exception_logger.<locals>.wrapper",
                                               "torch/distributed/elastic/multiprocessing/errors/__init__.py", 355),
                ("main", "train.py", 20), ("tokenize", "train.py", 30))


def test_waits_in_collectives_are_told_from_work_by_library_code():
    for path in (ALL_REDUCE, CUSTOM_AR, DEQUEUE_SPIN, DEQUEUE_POLL, BARRIER):
        assert is_collective(path), path[-1]
    # a collective's caller around real work, a torchrun wrapper above main, plain work
    for path in (CAPTURE, ELASTIC_MAIN, PREPARE, BLOCK_TABLE, EVENT_SYNC, ()):
        assert not is_collective(path), path[-1] if path else path


def test_the_split_counts_collectives_apart_and_keeps_the_other_kinds():
    wait = (("run", "engine.py", 1), ("Condition.wait", "threading.py", 355))
    sync_in_capture = CUSTOM_AR + (("synchronize", "torch/cuda/__init__.py", 1040),)
    ts = ThreadSecond(7, 7, "MainThread", active={ALL_REDUCE: 11, DEQUEUE_POLL: 5, PREPARE: 13, wait: 3,
                                                  EVENT_SYNC: 2, sync_in_capture: 1}, idle=4)
    # a learned GPU wait on the collective's leaf does not take it from the collectives
    learned = frozenset({"vllm/distributed/device_communicators/pynccl_wrapper.py:NCCLLibrary.ncclAllReduce"})
    work = split_process(7, [ts], learned)
    t = work.threads[0]
    assert (t.collective, t.own, t.wait, t.gpu_wait, t.idle) == (16, 13, 3, 3, 4)
    assert work.active == 35 and work.collective == 16 and work.own == 13 and work.gpu_wait == 3
    assert list(t.own_stacks) == [PREPARE]


def _t(pid, role, gpus, exited=None):
    return {"pid": pid, "role": role, "gpus": list(gpus), "exited_at": exited, "last_seen": 10.0}


def test_engines_are_the_gpus_of_one_deployment_or_every_worker_of_the_host():
    targets = [_t(1, "api_server", (0, 1)), _t(2, "engine_core", (0, 1)), _t(10, "worker", (0,)),
               _t(11, "worker", (1,)),
               _t(3, "api_server", (2, 3)), _t(12, "worker", (2,)), _t(13, "worker", (3,)),
               _t(14, "worker", (4,)), _t(15, "worker", (5, 6)),   # no engine process claims these
               _t(16, "worker", (7,), exited=5.0), _t(17, "engine_core", (7,))]
    memory = {5: {15: 1 * GIB}, 6: {15: 60 * GIB}}   # NVML lists 15 on two GPUs: its rank is where its memory is
    assert engine_ranks(targets, memory, t_from=8.0) == [{0: 10, 1: 11}, {2: 12, 3: 13}, {4: 14, 6: 15}]
    # a TP=1 engine (its core holds the GPU) and a lone worker are no multi-GPU engine
    assert engine_ranks([_t(2, "engine_core", (0,)), _t(10, "worker", (1,))], {}, 0.0) == []


def _rank_second(t, gpu, pid, stacks, sm):
    ts = ThreadSecond(pid, pid, "MainThread", active={k: v for k, v in stacks.items() if v})
    p = ProcessSecond(pid=pid, role="worker", work=split_process(pid, [ts], frozenset()))
    return Second(t=t, gpu=gpu, sm_util=sm, util_gpu=100.0, processes=[p])


TP2 = [_t(2, "engine_core", (0, 1)), _t(10, "worker", (0,)), _t(11, "worker", (1,))]


def _feed(det, store, rate, p_own, start, seconds, seed):
    """Two ranks sampled at ``rate`` Hz, rank g on its own work with probability p_own[g]."""
    rng = random.Random(seed)
    events = []
    for piece in range(start, start + seconds, 300):
        for gpu, pid in ((0, 10), (1, 11)):
            secs = []
            for t in range(piece, piece + 300):
                own = sum(rng.random() < p_own[gpu] for _ in range(rate))
                secs.append(_rank_second(t, gpu, pid, {PREPARE: own, ALL_REDUCE: rate - own}, 60.0))
            det.add(gpu, secs)
        events += det.events(store, "h", TP2, piece, piece + 300)
    return events


def _run_detector(store, rate, p_own, seconds, seed):
    det = StragglerDetector(AnalysisConfig(), rate_hz=rate)
    return [e for e in _feed(det, store, rate, p_own, 0, seconds, seed) if not e.open]


def test_balanced_ranks_sampled_slowly_give_no_finding_in_an_hour(store):
    # at 1-5 samples a second, two ranks both half on their own work drift apart by chance
    for rate in (1, 2, 5, 20):
        assert _run_detector(store, rate, {0: 0.5, 1: 0.5}, 3600, seed=rate) == [], rate
        assert _run_detector(store, rate, {0: 0.7, 1: 0.7}, 3600, seed=rate + 100) == [], rate


def test_a_straggler_sampled_at_one_hertz_is_still_found(store):
    found = _run_detector(store, 1, {0: 0.1, 1: 0.95}, 600, seed=5)
    assert found and {(e.gpu, e.evidence["slow_rank"]["pid"], e.evidence["cause"]) for e in found} == {(1, 11, "cpu")}
    assert sum(e.end - e.start for e in found) >= 400


def test_an_engine_that_goes_away_closes_its_open_straggler(store):
    det = StragglerDetector(AnalysisConfig(), rate_hz=20)
    events = _feed(det, store, 20, {0: 0.1, 1: 0.95}, 0, 300, seed=9)
    assert events and all(e.open for e in events)
    gone = [_t(2, "engine_core", (0, 1), exited=250.0), _t(10, "worker", (0,), exited=250.0),
            _t(11, "worker", (1,), exited=250.0)]
    closed = det.events(store, "h", gone, 300, 310)
    assert [(e.open, e.gpu, e.end) for e in closed] == [(False, 1, 300.0)]
    assert det.events(store, "h", gone, 310, 320) == [] and det.trackers == {}


# -- end to end: the real GPU collector on a fake NVML of two GPUs, a store, the analyzer ------

# name, seconds, per rank {stack: samples of 50}, per GPU (NVML util, SM, tensor, DRAM %), NVLink MiB/s each way.
# A GPU whose rank waits in the all-reduce runs the collective's spinning kernel: NVML util
# 100 with few SMs active; the late rank's GPU idles while its CPU prepares the step.
PHASES = (
    ("gpu_bound", 30, {0: {ALL_REDUCE: 30, DEQUEUE_SPIN: 10, PREPARE: 10}, 1: {CUSTOM_AR: 32, DEQUEUE_SPIN: 8, PREPARE: 10}},
     {0: (100, 85, 10, 72), 1: (100, 85, 10, 72)}, 2000.0),
    ("both_busy", 20, {0: {PREPARE: 44, ALL_REDUCE: 6}, 1: {PREPARE: 45, CUSTOM_AR: 5}},
     {0: (25, 20, 2, 10), 1: (25, 20, 2, 10)}, 300.0),
    ("cpu_straggler", 30, {0: {ALL_REDUCE: 30, DEQUEUE_SPIN: 14, PREPARE: 6},
                           1: {PREPARE: 30, BLOCK_TABLE: 16, ALL_REDUCE: 4}},
     {0: (100, 20, 2, 10), 1: (25, 20, 2, 10)}, 400.0),
    ("gpu_straggler", 30, {0: {ALL_REDUCE: 42, PREPARE: 8}, 1: {EVENT_SYNC: 40, PREPARE: 10}},
     {0: (100, 25, 3, 12), 1: (100, 95, 70, 30)}, 1500.0),
    ("gpu_bound", 20, {0: {ALL_REDUCE: 30, DEQUEUE_SPIN: 10, PREPARE: 10}, 1: {CUSTOM_AR: 32, DEQUEUE_SPIN: 8, PREPARE: 10}},
     {0: (100, 85, 10, 72), 1: (100, 85, 10, 72)}, 2000.0),
)
ENGINE_CORE_WAIT = (("EngineCoreProc.run_busy_loop", "vllm/v1/engine/core.py", 1265),
                    ("MultiprocExecutor.collective_rpc", "vllm/v1/executor/multiproc_executor.py", 400),
                    ("MessageQueue.dequeue", "vllm/distributed/device_communicators/shm_broadcast.py", 783))


def _record(store, t0: int) -> dict[str, tuple[int, int]]:
    """Write the recording into ``store``; returns each phase's [start, end) (Unix s)."""
    start = float(t0 - 3600)
    targets = [Target("testhost", 100, start, "vllm serve m --tensor-parallel-size 2", "api_server", (0, 1)),
               Target("testhost", 101, start, "VLLM::EngineCore", "engine_core", (0, 1)),
               Target("testhost", 200, start, "VLLM::Worker_TP0", "worker", (0,)),
               Target("testhost", 201, start, "VLLM::Worker_TP1", "worker", (1,)),
               Target("testhost", 999, start, "python3 neighbor.py", "other_gpu_process", (1,))]
    gpus = [FakeGpu(f"GPU-{i}", pci_bus_id=f"00000000:1{i}:00.0", processes=[(200 + i, 60 * GIB)]) for i in (0, 1)]
    clock = {"i": 0}
    collector = GpuCollector(GpuCollectorConfig(fast_interval_s=1.0, slow_interval_s=1.0, dcgm_url="off",
                                                events=False), "testhost", nvml=FakeNvml(gpus),
                             clock=lambda: 1000.0 + clock["i"])
    spans: dict[str, tuple[int, int]] = {}
    t = t0
    for name, length, ranks, counters, nvlink in PHASES:
        spans.setdefault(name if name not in spans else name + "_again", (t, t + length))
        # a neighbour's kernels on GPU 1 make its rank the slow one
        gpus[1].processes = [(201, 60 * GIB)] + ([(999, 12 * GIB)] if name == "gpu_straggler" else [])
        for _ in range(length):
            for gpu, (util, sm, tensor, dram) in counters.items():
                gpus[gpu].util = (float(util), float(dram))
                gpus[gpu].gpm = gpm_values(sm=sm, occupancy=sm / 3, tensor=tensor, dram=dram,
                                           nvlink_tx_mib_s=nvlink, nvlink_rx_mib_s=nvlink)
            batch = asyncio.run(collector.collect(t + 0.5))
            batch.targets = targets
            for gpu, stacks in ranks.items():
                for path, n in stacks.items():
                    batch.stack_samples.append(StackSample(t, 200 + gpu, start, 200 + gpu, "MainThread",
                                                           tuple(Frame(*f) for f in path), True, n))
            batch.stack_samples.append(StackSample(t, 101, start, 101, "MainThread",
                                                   tuple(Frame(*f) for f in ENGINE_CORE_WAIT), True, 40))
            batch.engine_samples += [EngineSample(t + 0.5, "http://127.0.0.1:8000/metrics", "vllm", "m", signal, v)
                                     for signal, v in (("requests_running", 16.0), ("generation_tokens_per_s", 900.0))]
            while not store.submit(batch):
                time.sleep(0.01)
            clock["i"] += 1
            t += 1
    store.flush()
    return spans


def _majority(windows: list[dict], gpu: int, span: tuple[int, int]) -> str:
    classes = [w["class"] for w in windows if w["gpu"] == gpu and span[0] + 2 <= w["start"] < span[1] - 2]
    return max(set(classes), key=classes.count)


def test_two_ranks_one_cpu_slow_then_one_gpu_busier_each_named_on_its_gpu(store):
    t0 = int(time.time()) - 1200
    spans = _record(store, t0)
    analyzer = Analyzer(Config(), store, rate_hz=50)
    end = t0 + sum(p[1] for p in PHASES)
    for now in range(t0 + 5, end + 40, 5):        # ticks as the live daemon makes them
        analyzer.step(float(now))
    assert analyzer.last_error is None

    windows = store.read_sync(q_events.windows, t0, end)
    assert {g: sum(w["gpu"] == g for w in windows) for g in (0, 1)} == {0: end - t0, 1: end - t0}
    # the slow rank starves its own GPU; the rank waiting in the all-reduce is not host-bound
    assert _majority(windows, 1, spans["cpu_straggler"]) == "host_bound"
    assert _majority(windows, 0, spans["cpu_straggler"]) == "stall"
    assert _majority(windows, 0, spans["gpu_bound"]) == _majority(windows, 1, spans["gpu_bound"]) == "memory_bound"
    assert _majority(windows, 1, spans["gpu_straggler"]) == "compute_bound"

    found = sorted(store.read_sync(q_events.events, t0, end + 60, kind="straggler"), key=lambda e: e["start"])
    assert [(e["gpu"], e["evidence"]["cause"], e["evidence"]["slow_rank"]["pid"]) for e in found] == \
        [(1, "cpu", 201), (1, "gpu", 201)]
    cpu, gpu = found
    for e, name in ((cpu, "cpu_straggler"), (gpu, "gpu_straggler")):
        assert abs(e["start"] - spans[name][0]) <= 3 and abs(e["end"] - spans[name][1]) <= 3, (e, spans[name])
        assert not e["open"]
    assert cpu["evidence"]["slow_rank"] == {"gpu": 1, "pid": 201, "role": "worker", "thread": "MainThread"}
    assert cpu["top_frames"][0]["frame"] == "GPUModelRunner._prepare_inputs"
    assert cpu["top_frames"][0]["share"] == round(30 / 46, 4) and cpu["top_frames"][0]["role"] == "worker"
    assert cpu["evidence"]["hot_paths"][0]["via"] == "GPUModelRunner._prepare_inputs"
    ranks = {r["gpu"]: r for r in cpu["evidence"]["ranks"]}
    assert ranks[0]["collective_share"] == round(44 / 50, 3) == cpu["evidence"]["other_ranks_collective_share"]
    assert ranks[1]["own_share"] == round(46 / 50, 3) and ranks[1]["collective_share"] == round(4 / 50, 3)
    assert ranks[0]["nvlink_rx_bytes_s"] == ranks[1]["nvlink_tx_bytes_s"] == 400.0 * MIB
    assert "GPUModelRunner._prepare_inputs" in cpu["summary"] and "88% in collectives" in cpu["summary"]

    ranks = {r["gpu"]: r for r in gpu["evidence"]["ranks"]}
    assert (ranks[0]["sm_util"], ranks[1]["sm_util"]) == (25.0, 95.0)
    assert ranks[1]["gpu_wait_share"] == round(40 / 50, 3) and ranks[0]["collective_share"] == round(42 / 50, 3)
    assert "SM 95% vs 25%" in gpu["summary"] and "pid 999 neighbor.py (12.0 GiB)" in gpu["summary"]
    assert [f["pid"] for f in gpu["evidence"]["foreign_processes"]] == [999]
    assert "top frame" not in gpu["summary"] and cpu["evidence"]["foreign_processes"] == []
