"""The daemon end to end: collector isolation seen through /api/health, and graceful shutdown
of a real ``infersight run`` process on SIGTERM/SIGINT (collectors stopped, queue flushed,
DB closed, exit 0 within 5 s)."""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import aiohttp
import pytest

from infersight.daemon.config.listen import split_listen
from infersight.daemon.runtime import Daemon
from infersight.daemon.sdnotify import Notifier
from infersight.storage.model import Batch, HostSample
from infersight.storage.store import Store


class Boom:
    """Fails every run with an injected exception."""

    name, interval_s = "boom", 0.1

    async def collect(self, now: float) -> Batch:
        raise RuntimeError("injected failure for the test")


class Counter:
    """A healthy collector: one host sample per run."""

    name, interval_s = "counter", 0.1

    def __init__(self) -> None:
        self.runs = 0
        self.closed = False

    async def collect(self, now: float) -> Batch:
        self.runs += 1
        return Batch(self.name, now, host_samples=[HostSample(now, 1.0, 1, 1, 2, 0.0, 0.0, 0.0)])

    async def close(self) -> None:
        self.closed = True


class StartFails:
    name, interval_s = "startfails", 0.1

    def __init__(self) -> None:
        self.runs = 0

    async def start(self) -> None:
        raise PermissionError("no access to the thing")

    async def collect(self, now: float) -> Batch:
        self.runs += 1
        return Batch(self.name, now)


async def _get_json(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_a_failing_collector_leaves_the_others_running(make_config):
    counter, starter = Counter(), StartFails()
    daemon = Daemon(make_config(**{"collectors.host.enabled": False}), extra_collectors=[Boom(), counter, starter],
                    notifier=Notifier({}))
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 60)
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                health = await _get_json(session, daemon.site_url + "/api/health")
                c = health["collectors"]
                if c["boom"]["failures"] >= 3 and c["counter"]["runs"] >= 3:
                    break
                await asyncio.sleep(0.05)
        runs_seen = counter.runs
        for _ in range(600):  # the healthy one keeps going after the failures
            if counter.runs >= runs_seen + 3:
                break
            await asyncio.sleep(0.05)
        assert counter.runs >= runs_seen + 3
    finally:
        daemon.request_stop()
        code = await asyncio.wait_for(task, 30)
    assert code == 0
    assert health["status"] == "degraded"
    assert "collector boom: RuntimeError: injected failure for the test" in health["problems"]
    assert c["boom"]["ok"] is False and c["boom"]["last_success"] is None
    assert c["boom"]["last_error"] == "RuntimeError: injected failure for the test"
    assert c["counter"]["ok"] is True and c["counter"]["failures"] == 0
    assert c["startfails"]["ok"] is False
    assert c["startfails"]["last_error"] == "start failed: PermissionError: no access to the thing"
    assert starter.runs == 0  # a collector whose start failed is never scheduled
    assert counter.closed  # shutdown closed the collectors
    reopened = Store.open(daemon.config.storage.path, read_only=True)
    try:
        stored = reopened.read_sync(lambda cur: cur.execute("SELECT count(*) FROM host_samples").fetchone()[0])
    finally:
        reopened.close()
    assert stored == counter.runs  # every sample of the healthy collector reached the file


class InFlight:
    """Signals when a run has started; the run then takes ``seconds`` (forever when None)."""

    interval_s = 0.1

    def __init__(self, name: str, seconds: float | None) -> None:
        self.name, self.seconds = name, seconds
        self.started = asyncio.Event()

    async def collect(self, now: float) -> Batch:
        self.started.set()
        if self.seconds is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.seconds)
        return Batch(self.name, now, host_samples=[HostSample(now, 2.0, 1, 1, 2, 0.0, 0.0, 0.0)])


async def test_runs_in_flight_at_shutdown_finish_or_end_quietly(make_config):
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    sched_log = logging.getLogger("apscheduler")
    sched_log.addHandler(handler)
    short, hung = InFlight("short", 0.1), InFlight("hung", None)
    daemon = Daemon(make_config(**{"collectors.host.enabled": False}), extra_collectors=[short, hung],
                    notifier=Notifier({}))
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 60)
        await asyncio.wait_for(asyncio.gather(short.started.wait(), hung.started.wait()), 30)
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    finally:
        sched_log.removeHandler(handler)
        daemon.request_stop()
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []
    store = Store.open(daemon.config.storage.path, read_only=True)
    try:
        cpu = store.read_sync(lambda c: [r[0] for r in c.execute("SELECT cpu_percent FROM host_samples").fetchall()])
    finally:
        store.close()
    assert cpu == [2.0]  # the run that was under way finished and its batch was flushed


def _http_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def sleeper():
    """A real child process to name with --pid."""
    proc = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"])
    yield proc
    proc.kill()
    proc.wait(10)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_flushes_and_exits_0(tmp_path, agent_process, sleeper, sig):
    db = tmp_path / "agent.duckdb"
    cfg = tmp_path / "agent.toml"
    # a minute-long flush interval: rows reach the file only through the shutdown flush
    cfg.write_text("[storage]\nflush_interval_s = 60\n[collectors.host]\ninterval_s = 0.2\n", encoding="utf-8")
    agent = agent_process(["--config", str(cfg), "--db", str(db), "--listen", "127.0.0.1:0",
                           "--pid", str(sleeper.pid)])
    url = agent.wait_started()
    host, port = split_listen(url.removeprefix("http://"))
    assert host == "127.0.0.1" and port > 0  # port 0 was resolved to the bound port
    health = _http_json(url + "/api/health")
    deadline = time.monotonic() + 60
    while health["collectors"]["host"]["runs"] < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
        health = _http_json(url + "/api/health")
    runs = health["collectors"]["host"]["runs"]
    assert runs >= 3
    assert agent.stop(sig, timeout=5.0) == 0
    log = agent.drain()
    assert "event=stopped" in log
    assert "Traceback" not in log and "level=error" not in log
    store = Store.open(str(db))  # the lock is released and the file is consistent
    try:
        host_rows, proc_rows = store.read_sync(lambda c: c.execute(
            "SELECT (SELECT count(*) FROM host_samples), (SELECT count(*) FROM process_samples p "
            "JOIN targets g ON g.id = p.target WHERE g.pid = ?)", [sleeper.pid]).fetchone())
    finally:
        store.close()
    assert host_rows >= runs
    assert proc_rows >= runs  # the --pid target was sampled on every run


def test_non_loopback_listen_without_token_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "run", "--db", str(tmp_path / "x.duckdb"),
                           "--listen", "0.0.0.0:0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("infersight: config error: web.listen: 0.0.0.0 is not loopback")
    assert not (tmp_path / "x.duckdb").exists()


def test_busy_port_exits_1_with_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "run", "--db",
                               str(tmp_path / "x.duckdb"), "--listen", f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("infersight: cannot start:") and str(port) in last
    assert "--listen" in last, "the line says how to pick another port"
    assert "Traceback" not in proc.stderr


def test_unusable_db_path_exits_1_with_one_line(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "run", "--db", str(blocker / "a.duckdb"),
                           "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"infersight: storage error: cannot create the folder of "
                                                   f"{blocker}/a.duckdb: ")
