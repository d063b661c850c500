"""Gap attribution end to end through the live daemon (not replay), on the CPU.

A real Python program alternates waiting on a simulated GPU with a slow tokenizer; a fake
GPU collector reads the program's current phase and reports the GPU busy or idle. The real
daemon samples the program with py-spy, scrapes its metrics, classifies and must produce a
cpu_gpu_gap event naming the tokenizer.
"""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infersight.daemon.config.load import Config, with_overrides
from infersight.daemon.runtime import Daemon
from infersight.storage import events as q_events
from infersight.storage.model import Batch, GpuInfo, GpuSample

PROGRAM = Path(__file__).parent / "programs" / "fake_engine.py"


class PhaseFileGpu:
    """GPU 0 is busy (SM 80%) while the program says "gpu", idle (SM 1%) otherwise."""

    name = "fake_gpu"
    interval_s = 0.25

    def __init__(self, status_file: Path) -> None:
        self.status_file = status_file
        self.sent_info = False

    async def collect(self, now: float) -> Batch:
        phase = self.status_file.read_text() if self.status_file.exists() else ""
        busy = phase == "gpu"
        values = {"util_gpu": 90.0 if busy else 1.0, "sm_util": 80.0 if busy else 1.0,
                  "tensor_util": 10.0 if busy else 0.0, "dram_bw_util": 70.0 if busy else 0.5}
        batch = Batch(self.name, now, gpu_samples=[GpuSample(now, 0, values, source="simulated")])
        if not self.sent_info:
            batch.gpu_info.append(GpuInfo(gpu=0, uuid="GPU-test", name="simulated GPU (test)"))
            self.sent_info = True
        return batch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_live_daemon_names_the_code_that_starves_the_gpu(tmp_path):
    port = _free_port()
    status = tmp_path / "phase"
    prog = subprocess.Popen([sys.executable, str(PROGRAM), str(port), str(status), "4", "7"])
    try:
        deadline = time.time() + 20
        while not status.exists() and time.time() < deadline:
            time.sleep(0.1)
        config = with_overrides(Config(), **{
            "storage.path": str(tmp_path / "live.duckdb"), "storage.flush_interval_s": 0.2,
            "web.listen": f"127.0.0.1:{_free_port()}",
            "targets.pids": (prog.pid,), "targets.cmdline_patterns": (),
            "collectors.gpu.enabled": False,
            "collectors.stacks.rate_hz": 50, "collectors.stacks.recording_s": 2,
            "collectors.engines.endpoints": (f"http://127.0.0.1:{port}/metrics",),
            "analysis.interval_s": 1.0, "analysis.lag_s": 4.0,
        })
        events = asyncio.run(_run_until_gap(config, status, timeout_s=60))
    finally:
        prog.terminate()
        prog.wait(10)
    gaps = [e for e in events if e["kind"] == "cpu_gpu_gap" and e["class"] == "host_bound"]
    assert gaps, events
    top = gaps[0]["top_frames"][0]
    assert top["frame"] == "slow_tokenizer_for_test"
    assert top["pid"] == prog.pid
    assert top["share"] > 0.5
    assert gaps[0]["evidence"]["gpu_idle_pct"] > 80


async def _run_until_gap(config: Config, status: Path, timeout_s: float) -> list[dict]:
    daemon = Daemon(config, extra_collectors=[PhaseFileGpu(status)])
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), 30)
    store = daemon.agent.store
    deadline = time.time() + timeout_s
    found: list[dict] = []
    while time.time() < deadline:
        await asyncio.sleep(1.0)
        found = await store.read(q_events.events, 0, time.time() + 10)
        if any(e["kind"] == "cpu_gpu_gap" and e["class"] == "host_bound" and e["top_frames"] for e in found):
            break
    daemon.request_stop()
    await asyncio.wait_for(task, 15)
    return found
