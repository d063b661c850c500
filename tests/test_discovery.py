"""Process discovery on real processes: patterns, NVML lists, explicit PIDs, descendants, exits."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import psutil
import pytest

from infersight.daemon.config.load import TargetsConfig
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
