"""Who the stacks collector samples, with real py-spy on a real process tree: serving
processes yes; helpers and other GPU processes never; a presumed engine that turns out to be
a neighbour has its sampling stopped."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest

from infersight.daemon.collectors.stacks import StacksCollector
from infersight.daemon.config.load import StacksCollectorConfig, TargetsConfig

PROGRAMS = Path(__file__).parent / "programs"


@pytest.fixture(autouse=True)
def _pyspy_installed(pyspy: str) -> None:
    """py-spy is a dependency: missing, these tests fail (conftest's ``pyspy``)."""


async def _until(collector: StacksCollector, done, limit_s: float = 30.0) -> dict[int, dict]:
    deadline = time.monotonic() + limit_s
    status: dict[int, dict] = {}
    while time.monotonic() < deadline:
        await collector.collect(time.time())
        status = {s["pid"]: s for s in collector.status()}
        if done(status):
            break
        await asyncio.sleep(0.3)
    return status


async def test_helpers_and_neighbours_are_never_sampled(spawn) -> None:
    tag = f"isight-{uuid.uuid4().hex[:8]}"
    spec = json.dumps([["VLLM::EngineCore"], ["-c", "from multiprocessing.resource_tracker import main;main(5)"]])
    api = spawn([str(PROGRAMS / "layout.py"), "60", spec.encode().hex(), "vllm", "serve", tag])
    core, tracker = json.loads(api.first_line)["children"]
    other = uuid.uuid4().hex[:8]
    neighbour = spawn([str(PROGRAMS / "idle.py"), "60", f"neighbour-{other}"])
    lonely = spawn([str(PROGRAMS / "idle.py"), "60", f"lonely-{other}"])
    nvml = {core: (0,), neighbour.pid: (0,), lonely.pid: (1,)}
    collector = StacksCollector(
        StacksCollectorConfig(rate_hz=20, recording_s=1, cpu_budget_percent=0.0),
        TargetsConfig(cmdline_patterns=(tag,), discovery_interval_s=0.5), "test-host", nvml_pids=lambda: dict(nvml))
    try:
        status = await _until(collector, lambda st: all(
            st.get(pid, {}).get("state") == "sampling" for pid in (api.pid, core, lonely.pid)))
        assert {pid: status[pid]["role"] for pid in (api.pid, core, tracker, neighbour.pid, lonely.pid)} == {
            api.pid: "api_server", core: "engine_core", tracker: "helper", neighbour.pid: "other_gpu_process",
            lonely.pid: "engine"}
        for pid in (api.pid, core, lonely.pid):
            assert status[pid]["state"] == "sampling", status[pid]
        assert status[tracker]["state"] == "not sampled: helper"
        assert status[neighbour.pid]["state"] == "not sampled: other_gpu_process"

        # the engine now also holds GPU 1: the process alone there was a neighbour all along
        nvml[core] = (0, 1)
        status = await _until(collector, lambda st: st.get(lonely.pid, {}).get("role") == "other_gpu_process"
                              and st[lonely.pid]["state"] == "closed")
        assert status[lonely.pid]["state"] == "closed" and status[lonely.pid]["gpus"] == [1]
        assert status[api.pid]["gpus"] == [0, 1] and status[api.pid]["state"] == "sampling"
    finally:
        await collector.close()
