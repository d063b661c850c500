"""A real Prometheus server scrapes a running agent, and the agent's GPU class and collector
health are read back through Prometheus' HTTP query API."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import aiohttp
import pytest

from infersight.daemon.runtime import Daemon
from infersight.daemon.sdnotify import Notifier
from infersight.storage.model import CLASSES, Batch, GpuInfo, GpuSample, Window

pytestmark = pytest.mark.slow


class FakeGpu:
    """A GPU running a bf16 GEMM, already analysed: every run adds one second of samples and its
    compute-bound window (the analysis itself is off, so nothing rewrites these windows)."""

    name, interval_s = "fakegpu", 0.5

    async def collect(self, now: float) -> Batch:
        return Batch(self.name, now, gpu_info=[GpuInfo(0, "GPU-5c1e", "NVIDIA H100 80GB HBM3")],
                     gpu_samples=[GpuSample(now, 0, {"util_gpu": 100.0, "sm_util": 96.6, "tensor_util": 93.8,
                                                     "dram_bw_util": 25.8})],
                     windows=[Window(now - 1.0, now, 0, "compute_bound", {"running": 4.0})])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def query(session: aiohttp.ClientSession, base: str, promql: str) -> list[dict]:
    async with session.get(f"{base}/api/v1/query", params={"query": promql}) as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


async def wait_for(session, base: str, promql: str, deadline: float, log_path) -> list[dict]:
    while True:
        try:
            result = await query(session, base, promql)
            if result:
                return result
        except aiohttp.ClientError:
            pass  # Prometheus still starting
        if time.monotonic() > deadline:
            try:
                async with session.get(f"{base}/api/v1/targets") as resp:
                    targets = await resp.text()
            except aiohttp.ClientError as exc:
                targets = repr(exc)
            pytest.fail(f"no result for {promql!r}; targets: {targets[:2000]}\nprometheus log:\n"
                        f"{log_path.read_text()[-4000:]}")
        await asyncio.sleep(0.5)


async def test_prometheus_scrapes_the_agent(make_config, tmp_path, require_tool):
    prometheus = require_tool("prometheus")
    config = make_config(**{"agent.host": "gpu-node-1", "analysis.enabled": False, "collectors.host.enabled": False})
    daemon = Daemon(config, extra_collectors=[FakeGpu()], notifier=Notifier({}))
    task = asyncio.create_task(daemon.run())
    proc = None
    try:
        await asyncio.wait_for(daemon.ready.wait(), 60)
        target = daemon.site_url.removeprefix("http://")
        port = free_port()
        (tmp_path / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: infersight
    metrics_path: /metrics
    static_configs:
      - targets: ["{target}"]
""")
        log_path = tmp_path / "prometheus.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                     f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                     f"--web.listen-address=127.0.0.1:{port}"],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        async with aiohttp.ClientSession() as session:
            up = await wait_for(session, base, 'up{job="infersight"} == 1', deadline, log_path)
            assert up[0]["metric"]["instance"] == target
            cls = await wait_for(session, base, 'infersight_gpu_class{job="infersight"} == 1', deadline, log_path)
            assert [(r["metric"]["class"], r["metric"]["gpu"], r["metric"]["uuid"], r["metric"]["host"])
                    for r in cls] == [("compute_bound", "0", "GPU-5c1e", "gpu-node-1")]
            zero = await query(session, base, 'infersight_gpu_class{job="infersight"} == 0')
            assert sorted(r["metric"]["class"] for r in zero) == sorted(
                [k for k in CLASSES if k != "compute_bound"])
            ok = await wait_for(session, base, 'infersight_collector_success{collector="fakegpu"}', deadline,
                                log_path)
            assert ok[0]["value"][1] == "1"
            sm = await wait_for(session, base, "infersight_gpu_sm_utilization_ratio", deadline, log_path)
            assert float(sm[0]["value"][1]) == pytest.approx(0.966)
            # the class counter grows between scrapes as new windows come in
            seconds = await wait_for(session, base, 'increase(infersight_gpu_class_seconds_total'
                                     '{class="compute_bound"}[10s]) > 0', deadline, log_path)
            assert seconds[0]["metric"]["gpu"] == "0"
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
