"""Failures are reported, not hidden (issue 30, item 6).

- ``/api/health`` names each failing engine endpoint, hung collector, py-spy target in backoff
  and failing component as a problem (a live agent with 6 of 10 endpoints down; the rest on
  a fake agent's state).
- ``infersight check`` ends within its deadline: an endpoint that trickles one byte a second
  is judged within ``collectors.engines.timeout_s``, and a check that hangs outright is
  reported when the command's deadline passes.
"""
from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

import infersight.daemon.check as check_module
from infersight.daemon.check import run_checks
from infersight.daemon.config.load import Config, with_overrides
from infersight.daemon.runtime import Daemon
from infersight.daemon.runner import CollectorStatus
from infersight.daemon.sdnotify import Notifier
from infersight.storage.writer import WriterStats
from infersight.web.health import problems


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def metrics_servers():
    """Four real Prometheus endpoints with a vLLM counter; their URLs."""
    urls, servers = [], []
    for _ in range(4):
        registry = CollectorRegistry()
        Counter("vllm:generation_tokens", "tokens", registry=registry).inc(5)
        port = free_port()
        server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
        servers.append((server, thread))
        urls.append(f"http://127.0.0.1:{port}/metrics")
    yield urls
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(10)


async def test_health_names_every_failing_endpoint(make_config, metrics_servers):
    down = [f"http://127.0.0.1:{free_port()}/metrics" for _ in range(6)]
    config = make_config(**{"collectors.engines.enabled": True, "collectors.engines.interval_s": 0.2,
                            "collectors.engines.timeout_s": 1.0, "collectors.engines.autodiscover": False,
                            "collectors.engines.endpoints": tuple(metrics_servers + down),
                            "analysis.enabled": False})
    daemon = Daemon(config, notifier=Notifier({}))
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 60)
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                async with session.get(daemon.site_url + "/api/health") as resp:
                    health = await resp.json()
                if sum(p.startswith("engine endpoint ") for p in health["problems"]) == 6:
                    break
                await asyncio.sleep(0.1)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    assert health["status"] == "degraded"
    named = [p for p in health["problems"] if p.startswith("engine endpoint ")]
    assert sorted(p.split()[2].rstrip(":") for p in named) == sorted(down)
    assert not any(url in " ".join(health["problems"]) for url in metrics_servers)
    assert health["collectors"]["engines"]["ok"] is True, "the collector runs; its endpoints fail"


def _fake_agent(now: float, **extras):
    runner = SimpleNamespace(status={
        "gpu": CollectorStatus("gpu", 0.5, runs=10, ok=True, last_success=now - 1),
        "host": CollectorStatus("host", 1.0, runs=10, ok=True, last_success=now - 300),    # hung
        "engines": CollectorStatus("engines", 1.0, runs=3, ok=False, last_error="RuntimeError: boom"),
    })
    stacks = SimpleNamespace(status=lambda: [
        {"pid": 7, "role": "engine_core", "state": "backoff", "exited_at": None, "last_error_kind": "permission",
         "last_error": "Permission denied"},
        {"pid": 8, "role": "api_server", "state": "sampling", "exited_at": None},
        {"pid": 9, "role": "worker", "state": "backoff", "exited_at": now - 5}])
    collectors = {"stacks": stacks}
    return SimpleNamespace(runner=runner, started_at=now - 3600, collector=collectors.get, extras=extras)


def test_problems_of_collectors_targets_components_and_storage():
    now = time.time()
    analysis = SimpleNamespace(health=lambda: {"ok": False, "last_error": "IOException: disk full"})
    alerts = SimpleNamespace(health=lambda: {"targets": {}})
    store = SimpleNamespace(read_only=False, writer_alive=True)
    stats = WriterStats(last_error="IOException: No space left on device", failing_since=now - 42, retained_rows=900)
    lines = problems(_fake_agent(now, analysis=analysis, alerts=alerts), store, stats, now)
    assert lines[0] == "storage: writes failing for 42 s (900 rows waiting): IOException: No space left on device"
    assert "collector engines: RuntimeError: boom" in lines
    assert "collector host: no run finished for 300 s (interval 1 s)" in lines
    assert not any("collector gpu" in p for p in lines)
    assert "target pid 7 (engine_core): py-spy failing (permission): Permission denied" in lines
    assert not any("pid 8" in p or "pid 9" in p for p in lines)
    assert "analysis: IOException: disk full" in lines and not any(p.startswith("alerts") for p in lines)


@pytest.fixture
def trickle_url():
    """An endpoint that sends its headers, then one byte a second, for ever."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        conns = []
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            conns.append(conn)
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()
        for c in conns:
            c.close()

    def trickle(conn: socket.socket) -> None:
        try:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n")
            while not stop.is_set():
                conn.sendall(b"#")
                time.sleep(1.0)
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/metrics"
    stop.set()
    thread.join(10)
    server.close()


def test_check_judges_a_trickling_endpoint_within_its_timeout(tmp_path, trickle_url):
    conf = tmp_path / "c.toml"
    conf.write_text(f'[storage]\npath = "{tmp_path / "a.duckdb"}"\n[web]\nlisten = "127.0.0.1:{free_port()}"\n'
                    f'[collectors.gpu]\nenabled = false\n[collectors.engines]\nendpoints = ["{trickle_url}"]\n'
                    'timeout_s = 3.0\n')
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "check", "--config", str(conf)],
                          capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if trickle_url in x)
    assert line.startswith("WARN") and "no complete answer within 3 s" in line
    assert took < 15, f"check took {took:.1f} s"


def test_check_has_a_total_deadline(monkeypatch):
    hang = threading.Event()
    monkeypatch.setattr(check_module, "check_ptrace", lambda: hang.wait(60) or None)
    config = with_overrides(Config(), **{"collectors.gpu.enabled": False, "web.listen": f"127.0.0.1:{free_port()}"})
    out = io.StringIO()
    started = time.monotonic()
    try:
        code = run_checks(config, out=out, deadline_s=2.0)
    finally:
        hang.set()
    assert time.monotonic() - started < 5
    lines = out.getvalue().splitlines()
    assert any(x.startswith("WARN") and "ptrace" in x and "no answer within the check's 2 s deadline" in x
               for x in lines), lines
    assert code == 0 and lines[-1].startswith("can run")
