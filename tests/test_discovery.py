"""Process discovery on real processes: patterns, NVML lists, explicit PIDs, descendants, exits."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import psutil
import pytest

from infersight.daemon.config.load import TargetsConfig
from infersight.daemon.stacks import discovery as discovery_module
from infersight.daemon.stacks.discovery import Discovery, NvmlProcesses, diff, infer_role

PROGRAMS = Path(__file__).parent / "programs"


def _config(tag: str, **kw) -> TargetsConfig:
    return TargetsConfig(cmdline_patterns=(tag,), **kw)


@pytest.mark.parametrize("cmdline, gpu, matched, role", [
    ("/usr/bin/python3 -m vllm.entrypoints.openai.api_server --model m", False, True, "api_server"),
    ("vllm serve meta-llama/Llama-3-8B --tensor-parallel-size 2", True, True, "api_server"),
    ("VLLM::EngineCore", True, True, "engine_core"),
    ("VLLM::Worker_TP1", True, True, "worker"),
    ("ray::RayWorkerWrapper.execute_method", True, False, "worker"),
    ("python3 -m sglang.launch_server --model-path m", False, True, "api_server"),
    ("sglang::scheduler_TP0", True, True, "engine_core"),
    ("/usr/bin/python3 /opt/conda/bin/text-generation-server serve bigscience/bloom --sharded", True, True, "worker"),
    ("/opt/tritonserver/backends/python/triton_python_backend_stub /models/m/1/model.py", True, True, "worker"),
    ("trtllm-serve /models/llama --backend pytorch", True, True, "api_server"),
    ("/opt/tritonserver/bin/tritonserver --model-repository=/models", False, True, "api_server"),
    ("python3 engine.py", True, False, "engine"),
    ("python3 my_pattern_tool.py", False, True, "engine"),
    ("python3 -c from multiprocessing.resource_tracker import main;main(7)", False, False, "helper"),
    # vLLM 0.24 as /proc/PID/cmdline reads it (setproctitle titles are the whole command line)
    ("/opt/venv/bin/python3 -m vllm.entrypoints.cli.main serve /models/llama-1b --load-format dummy", False, True,
     "api_server"),
    ("/opt/venv/bin/python3 /opt/venv/bin/vllm serve /models/llama-1b --port 8000", False, True, "api_server"),
    ("VLLM::APIServer_0", False, True, "api_server"),
    ("VLLM::EngineCore_DP1", True, True, "engine_core"),
    ("VLLM::Worker_TP0", True, True, "worker"),
    ("VLLM::Worker_DP0_PP1_TP3", True, True, "worker"),
    ("VllmWorker TP1", True, False, "worker"),
    ("myco::Worker_TP2", True, False, "worker"),                  # VLLM_PROCESS_NAME_PREFIX=myco
    ("/opt/venv/bin/python3 -m vllm.model_executor.models.registry", False, False, "helper"),
    ("/opt/venv/bin/python3 /opt/venv/lib/python3.12/site-packages/vllm/distributed/device_communicators/"
     "all_reduce_utils.py", True, False, "helper"),
    ("/opt/venv/bin/python3 /opt/venv/lib/python3.12/site-packages/torch/_inductor/compile_worker/__main__.py "
     "--pickler=torch._inductor.compile_worker.subproc_pool.SubprocPickler --kind=fork --workers=32 --parent=812",
     False, False, "helper"),
    ("VLLM::DPCoordinator", False, True, "helper"),
    ("/opt/venv/bin/python3 -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=8, "
     "pipe_handle=12) --multiprocessing-fork", False, False, "other"),
])
def test_roles_from_command_lines(cmdline: str, gpu: bool, matched: bool, role: str) -> None:
    assert infer_role(cmdline, gpu=gpu, matched=matched) == role


def test_default_patterns_find_a_vllm_style_api_server(spawn) -> None:
    proc = spawn([str(PROGRAMS / "idle.py"), "60", "vllm serve", "facebook/opt-125m"])
    found = {f.target.pid: f for f in Discovery(TargetsConfig(), "h", nvml=None).scan_detailed()}
    assert proc.pid in found
    hit = found[proc.pid]
    assert hit.reasons == ("pattern",) and hit.python and hit.target.role == "api_server"
    assert hit.target.host == "h" and "vllm serve" in hit.target.cmdline
    assert hit.target.start_time == psutil.Process(proc.pid).create_time()   # same key as other collectors


def test_pattern_match_needs_a_python_process(spawn) -> None:
    tag = f"isight-{uuid.uuid4().hex[:8]}"
    sleeper = spawn(["bash", "-c", "sleep 60; true", tag], python=False)   # a shell wrapper: matches, not Python
    py = spawn([str(PROGRAMS / "idle.py"), "60", tag])
    pids = {t.pid for t in Discovery(_config(tag), "h", nvml=None).scan()}
    assert py.pid in pids and sleeper.pid not in pids


def test_nvml_processes_explicit_pids_and_own_process(spawn) -> None:
    gpu_py = spawn([str(PROGRAMS / "idle.py"), "60"])
    gpu_native = spawn(["sleep", "60"], python=False)
    explicit = spawn(["sleep", "61"], python=False)
    nvml = {gpu_py.pid: [1, 0, 1], gpu_native.pid: [2], 2 ** 22 + 777: [0]}   # the last one is not running
    disc = Discovery(_config("no-such-pattern-anywhere"), "h", nvml=lambda: nvml, extra_pids=[explicit.pid, os.getpid()])
    found = {f.target.pid: f for f in disc.scan_detailed()}
    assert found[gpu_py.pid].target.gpus == (0, 1) and found[gpu_py.pid].reasons == ("nvml",)
    assert found[gpu_py.pid].target.role == "engine" and found[gpu_py.pid].python
    # A GPU process that is not Python is a target (it uses the GPU) but is not sampled.
    assert found[gpu_native.pid].target.gpus == (2,) and not found[gpu_native.pid].python
    # An explicit PID is always tried, Python or not, so a wrong one gets a clear error.
    assert found[explicit.pid].reasons == ("pid",) and found[explicit.pid].python
    assert os.getpid() not in found                                # never the agent itself
    assert 2 ** 22 + 777 not in found


def test_nvml_off_and_a_failing_lister() -> None:
    def broken() -> dict:
        raise RuntimeError("driver went away")

    disc = Discovery(_config("x"), "h", nvml=broken)
    disc.scan()
    assert disc.nvml_error is not None and "driver went away" in disc.nvml_error
    off = Discovery(_config("x", use_nvml_processes=False), "h", nvml=lambda: {os.getppid(): [0]})
    assert os.getppid() not in {t.pid for t in off.scan()}


def test_real_nvml_lister_without_a_gpu_says_why() -> None:
    lister = NvmlProcesses()
    result = lister()
    assert isinstance(result, dict)
    if not result:
        assert lister.error is None or "NVML" in lister.error


def test_python_descendants_are_targets(spawn) -> None:
    tag = f"isight-{uuid.uuid4().hex[:8]}"
    parent = spawn([str(PROGRAMS / "spawner.py"), "60", tag])
    kids = json.loads(parent.first_line)
    found = {f.target.pid: f for f in Discovery(_config(f"spawner.py 60 {tag}"), "h", nvml=None).scan_detailed()}
    assert found[parent.pid].reasons == ("pattern",)
    assert found[kids["python_child"]].reasons == ("descendant",)
    assert found[kids["python_child"]].target.role == "other"
    assert kids["other_child"] not in found                        # `sleep` is not Python
    flat = Discovery(_config(f"spawner.py 60 {tag}", include_descendants=False), "h", nvml=None).scan()
    assert kids["python_child"] not in {t.pid for t in flat}


def test_exit_and_restart_are_new_identities(spawn) -> None:
    tag = f"isight-{uuid.uuid4().hex[:8]}"
    disc = Discovery(_config(tag), "h", nvml=None)
    first = spawn([str(PROGRAMS / "idle.py"), "60", tag])
    before = {t.key: t for t in disc.scan()}
    (old,) = [t for t in before.values() if t.pid == first.pid]
    assert disc.alive(old)
    first.kill()
    first.wait()
    second = spawn([str(PROGRAMS / "idle.py"), "60", tag])        # the engine restarted: new PID
    after = {t.key: t for t in disc.scan()}
    started, exited = diff(before, after)
    assert [t.pid for t in started] == [second.pid]
    assert [t.pid for t in exited] == [first.pid]
    assert not disc.alive(old)


def _layout(spawn, tag: str, children: list[list[str]], *parent_tags: str):
    spec = json.dumps(children).encode().hex()
    parent = spawn([str(PROGRAMS / "layout.py"), "60", spec, *parent_tags, tag])
    return parent, json.loads(parent.first_line)["children"]


def test_a_vllm_layout_gets_its_roles_gpus_and_neighbours(spawn, monkeypatch) -> None:
    tag = f"isight-{uuid.uuid4().hex[:8]}"
    api, (core, tracker, probe, plain) = _layout(spawn, tag, [
        ["VLLM::EngineCore"], ["-c", "from multiprocessing.resource_tracker import main;main(5)"],
        ["-m", "vllm.model_executor.models.registry"], ["plain-child"]], "vllm", "serve")
    other = uuid.uuid4().hex[:8]                                                  # tags the pattern misses
    neighbour = spawn([str(PROGRAMS / "spawner.py"), "60", f"neighbour-{other}"])  # a training job, say
    neighbour_child = json.loads(neighbour.first_line)["python_child"]
    lonely = spawn([str(PROGRAMS / "idle.py"), "60", f"lonely-{other}"])           # a custom server on GPU 1
    nvml = {core: [0], neighbour.pid: [0], lonely.pid: [1]}
    disc = Discovery(_config(tag), "h", nvml=lambda: nvml)
    found = {f.target.pid: f for f in disc.scan_detailed()}

    def seen(pid):
        f = found[pid]
        return f.target.role, f.target.gpus, f.sample

    assert seen(api.pid) == ("api_server", (0,), True)       # bound to its engine core's GPU
    assert seen(core) == ("engine_core", (0,), True)
    assert seen(tracker) == ("helper", (), False) and seen(probe) == ("helper", (), False)
    assert seen(plain) == ("other", (0,), False)             # a new child: not sampled before its grace
    assert seen(neighbour.pid) == ("other_gpu_process", (0,), False)
    assert neighbour_child not in found                      # a neighbour's children are not targets
    assert seen(lonely.pid) == ("engine", (1,), True)        # nothing known on GPU 1: presumed the engine

    monkeypatch.setattr(discovery_module, "HELPER_GRACE_S", 0.0)
    found = {f.target.pid: f for f in disc.scan_detailed()}
    assert seen(plain) == ("other", (0,), True)              # it outlived the grace: a serving child

    # the engine restarts (no context for a while): the neighbour stays a neighbour
    nvml.pop(core)
    found = {f.target.pid: f for f in disc.scan_detailed()}
    assert seen(neighbour.pid) == ("other_gpu_process", (0,), False)
    assert seen(api.pid) == ("api_server", (), True)         # its deployment holds no GPU now
    # the engine comes back on GPUs 0 and 1: the process that was alone on GPU 1 is a neighbour now
    nvml[core] = [0, 1]
    found = {f.target.pid: f for f in disc.scan_detailed()}
    assert seen(lonely.pid) == ("other_gpu_process", (1,), False)
    assert seen(api.pid) == ("api_server", (0, 1), True)


def test_tensor_parallel_workers_are_bound_to_their_gpus(spawn) -> None:
    tag = f"isight-{uuid.uuid4().hex[:8]}"
    api, (core, w0, w1) = _layout(spawn, tag, [["VLLM::EngineCore"], ["VLLM::Worker_TP0"], ["VLLM::Worker_TP1"]],
                                  "vllm", "serve")
    found = {f.target.pid: f.target for f in Discovery(_config(tag), "h", nvml={w0: [0], w1: [1]}).scan_detailed()}
    assert (found[w0].role, found[w0].gpus) == ("worker", (0,))
    assert (found[w1].role, found[w1].gpus) == ("worker", (1,))
    assert found[core].gpus == (0, 1) and found[api.pid].gpus == (0, 1)


def test_two_engines_on_two_gpus_are_two_deployments(spawn) -> None:
    tag = f"isight-{uuid.uuid4().hex[:8]}"
    api_a, (core_a,) = _layout(spawn, tag, [["VLLM::EngineCore"]], "vllm", "serve", "a")
    api_b, (core_b,) = _layout(spawn, tag, [["VLLM::EngineCore"]], "vllm", "serve", "b")
    found = {f.target.pid: f.target for f in
             Discovery(_config(tag), "h", nvml={core_a: [0], core_b: [1]}).scan_detailed()}
    assert found[api_a.pid].gpus == (0,) and found[api_b.pid].gpus == (1,)
    assert found[core_a].role == found[core_b].role == "engine_core"


def test_command_lines_are_redacted_as_read(spawn) -> None:
    tag = f"isight-{uuid.uuid4().hex[:8]}"
    proc = spawn([str(PROGRAMS / "idle.py"), "60", tag, "--api-key", "sekrit", "HF_TOKEN=hf_sekrit"])
    (target,) = [t for t in Discovery(_config(tag), "h", nvml=None).scan() if t.pid == proc.pid]
    assert "sekrit" not in target.cmdline and target.cmdline.endswith(f"{tag} --api-key *** HF_TOKEN=***")
