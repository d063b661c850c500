"""Faults: a crash during heavy ingest, a full disk, the size bound, a soak, collectors failing.

- SIGKILL while a process writes through Store as fast as it can: the file opens again,
  everything committed before the kill is there, what is missing is only the tail written
  after the last commit (so at most one flush interval), and no acknowledged event or outbox
  entry is lost.
- A full disk (a 20 MiB tmpfs, or where mounting is not allowed a file-size limit on the
  agent's process): the agent keeps running and answering, health says degraded, and once
  there is space again it writes and health says ok.
- Retention by size keeps the file within 10% of ``storage.max_size_mb`` under sustained load.
- An accelerated soak of the real agent (many rows per second, maintenance every second,
  retention and rollups after seconds, a client polling the API): RSS and open file
  descriptors stop growing after warm-up. ``INFERSIGHT_SOAK_S`` sets its length (CI: 120 s;
  nightly: 1800).
- py-spy missing, NVML raising and an engine endpoint down, each in turn: the other
  collectors keep writing.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from fault_agent import make_stacks

from infersight.storage import retention
from infersight.storage.model import Batch, EngineSample, GpuSample, StackSample, Target
from infersight.storage.store import Store

HERE = Path(__file__).resolve().parent
FAULT_AGENT = HERE / "fault_agent.py"

# The child of the SIGKILL test: writes stack batches through Store as fast as the writer
# takes them (it commits on its own flush timer, 0.2 s) and, once a second, one event and one outbox
# message through the never-dropped command path. It reports on stdout what was
# submitted, what the writer reported committed (rows_written, in submission order) and which
# events and messages were acknowledged.
_CRASH_CHILD = r'''
import sys, time
from infersight.storage.model import Batch, Event, StackSample, Target
from infersight.storage import events, outbox
from infersight.storage.store import Store
from fault_agent import make_stacks

ROWS = int(sys.argv[2])
store = Store.open(sys.argv[1], host="crash-host", flush_interval_s=0.2)
stacks = make_stacks(200)
store.submit(Batch("load", 0.0, targets=[Target("crash-host", 7, 1.0, "python engine")]))
store.flush()
base = store.stats().rows_written
durable = -1
k = 0
next_event = time.monotonic() + 1.0
while True:
    # as fast as the writer takes it: wait while the queue is long instead of overflowing it
    while store.stats().queue_depth > 256:
        time.sleep(0.002)
    batch = Batch("load", float(k), stack_samples=[
        StackSample(k, 7, 1.0, 100 + j % 40, "t", stacks[(k + j) % len(stacks)], True, 1 + j % 5)
        for j in range(ROWS)])
    print(("sub %d" if store.submit(batch) else "drop %d") % k, flush=True)
    k += 1
    rows = store.stats().rows_written - base
    if rows != durable:
        durable = rows
        print("durable %d" % rows, flush=True)
    if time.monotonic() >= next_event:
        next_event += 1.0
        eid = "ev-%d" % k
        store.write_sync(events.upsert_events, [Event(eid, "cpu_gpu_gap", k, k + 1, "crash-host", 0)])
        print("event %s" % eid, flush=True)
        ids = store.write_sync(outbox.commit, [{"event_id": eid, "target": "oncall", "kind": "cpu_gpu_gap",
                                                "payload": "{}", "delivery": eid, "format": "slack",
                                                "state": "open"}], [], time.time())
        print("outbox %d" % ids[0], flush=True)
'''


def test_sigkill_during_heavy_ingest_keeps_every_commit(tmp_path):
    rows_per_batch = 200
    db = tmp_path / "crash.duckdb"
    script = tmp_path / "crash_child.py"
    script.write_text(_CRASH_CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), str(db), str(rows_per_batch)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    # what the child printed, by kind: batch numbers ("sub", "drop"), durable row counts,
    # acknowledged event ids and outbox ids
    seen: dict[str, list] = {"sub": [], "drop": [], "durable": [], "event": [], "outbox": []}
    submitted, dropped, durable, acked_events, acked_outbox = seen.values()

    def record(line: str) -> None:
        kind, _, value = line.strip().partition(" ")
        if kind in seen:
            seen[kind].append(value if kind == "event" else int(value))

    deadline = time.monotonic() + 120
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            record(line)
            # kill in the middle of the stream: timer flushes and commands behind us
            if (len(acked_outbox) >= 3 and len(durable) >= 6) or time.monotonic() > deadline:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(30)
        rest = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read() if proc.stderr else ""
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    assert proc.returncode == -signal.SIGKILL, f"the child ended on its own ({proc.returncode}): {stderr[-2000:]}"
    # lines already in the pipe when it was killed still count (they were printed before the kill)
    for line in rest.splitlines():
        record(line)

    store = Store.open(str(db), host="crash-host")
    try:
        per_bucket = dict(store.read_sync(lambda cur: cur.execute(
            "SELECT bucket, count(*) FROM stack_samples GROUP BY 1").fetchall()))
        events_stored = {r[0] for r in store.read_sync(lambda cur: cur.execute("SELECT id FROM events").fetchall())}
        outbox_stored = {r[0] for r in store.read_sync(lambda cur: cur.execute("SELECT id FROM outbox").fetchall())}
    finally:
        store.close()
    assert len(acked_outbox) >= 3 and len(durable) >= 6, "the child did not get far enough before the kill"
    assert not dropped, "the writer queue overflowed; the test would not show what a crash loses"
    # each batch is written whole or not at all
    assert all(n == rows_per_batch for n in per_bucket.values()), per_bucket
    stored = sorted(per_bucket)
    # no holes: what survived is exactly the oldest batches, in submission order
    assert stored == submitted[:len(stored)]
    # everything the writer had reported committed survived the kill
    assert len(stored) * rows_per_batch >= max(durable)
    # what was lost is only the tail after the last commit, a part of the load
    assert len(stored) > 0 and len(submitted) - len(stored) < len(submitted)
    assert set(acked_events) <= events_stored
    assert set(acked_outbox) <= outbox_stored


# -- the agent as a subprocess -----------------------------------------------------------------

class Agent:
    """``tests/fault_agent.py`` as a subprocess; stderr collected on a thread."""

    def __init__(self, args: list[str], preexec_fn=None) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, str(FAULT_AGENT), *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                     preexec_fn=preexec_fn)
        self.lines: list[str] = []
        self.started = threading.Event()
        self.url = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            m = re.search(r"event=started listen=(\S+)", line)
            if m and not self.started.is_set():
                self.url = m.group(1)
                self.started.set()

    def wait_started(self, timeout: float = 60.0) -> str:
        if not self.started.wait(timeout):
            raise AssertionError("agent did not start:\n" + "\n".join(self.lines[-30:]))
        return self.url

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            return json.loads(resp.read())

    def wait_for(self, what: str, predicate, timeout: float = 120.0):
        """Poll /api/health until ``predicate(health)`` is true; returns that health."""
        deadline = time.monotonic() + timeout
        health = {}
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the agent exited:\n" + "\n".join(self.lines[-30:])
            health = self.get("/api/health")
            if predicate(health):
                return health
            time.sleep(0.5)
        raise AssertionError(f"{what} not seen within {timeout} s; last health: {health}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        self._reader.join(10)
        if self.proc.stderr:
            self.proc.stderr.close()


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` with one file; returns it."""
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\xa5" * (1 << 20))
                fh.flush()
        except OSError:
            pass
    return filler


def _storage_failing(health: dict) -> bool:
    return health["status"] == "degraded" and health["storage"]["last_error"] is not None


def _limit_file_size(limit_bytes: int):
    """A preexec_fn: writes past ``limit_bytes`` in any file fail with EFBIG (SIGXFSZ ignored).
    The hard limit stays unlimited, so the test can lift the soft one later (prlimit)."""

    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))

    return preexec


@pytest.mark.slow
@pytest.mark.parametrize("how", ["tmpfs", "file_size_limit"])
def test_disk_full_degrades_and_recovers(tmp_path, how):
    small = tmp_path / "small"
    # a real full file system where mounting is allowed (root); else the same failure
    # injected as a file-size limit on the agent's process
    mounted = how == "tmpfs" and _mount_tmpfs(small, "20m")
    small.mkdir(exist_ok=True)
    db = small / "agent.duckdb"
    preexec = None if mounted else _limit_file_size(4 << 20)
    agent = Agent(["--db", str(db), "--rows", "2000", "--interval", "0.1",
                   "--set", "storage.maintenance_interval_s=2"], preexec_fn=preexec)
    try:
        agent.wait_started()
        agent.wait_for("rows written", lambda h: h["storage"]["rows_written"] > 0)
        filler = _fill(small) if mounted else None
        failing = agent.wait_for("storage failing", _storage_failing)
        # still alive and answering: health, queries, metrics of the others
        assert agent.proc.poll() is None
        assert failing["collectors"]["load"]["ok"] is True
        now = time.time()
        agent.get(f"/api/flamegraph?from={now - 60}&to={now}")
        # space again
        if filler is not None:
            filler.unlink()
        else:
            resource.prlimit(agent.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        written = failing["storage"]["rows_written"]
        healthy = agent.wait_for("recovery", lambda h: h["status"] == "ok" and h["storage"]["rows_written"] > written)
        assert healthy["storage"]["last_error"] is None
        assert agent.stop() == 0, "\n".join(agent.lines[-30:])
        # the file opens afterwards and holds rows
        store = Store.open(str(db), host="fault-host")
        try:
            assert store.read_sync(lambda c: c.execute("SELECT count(*) FROM stack_samples").fetchone()[0]) > 0
        finally:
            store.close()
    finally:
        agent.close()
        if mounted:
            subprocess.run(["umount", "-l", str(small)], capture_output=True, timeout=30)


# -- the size bound ---------------------------------------------------------------------------

def _load_second(second: int, stacks, rng, walk: list[float], threads: int = 400) -> Batch:
    """One second of a serving host: most threads idle in a few waits, a quarter active over
    many stacks, 8 GPUs every 0.5 s drifting like real counters, 10 engine signals."""
    batch = Batch("load", float(second))
    for th in range(threads):
        if th % 4:
            batch.stack_samples.append(StackSample(second, PID_SIZE, 1.0, th, "t", stacks[th % 5], False, 20))
        else:
            for _ in range(3):
                batch.stack_samples.append(StackSample(second, PID_SIZE, 1.0, th, "t", stacks[rng.randrange(len(stacks))],
                                                       True, rng.randint(1, 10)))
    for half in (0.0, 0.5):
        for gpu in range(8):
            walk[gpu] = min(100.0, max(0.0, walk[gpu] + rng.uniform(-3, 3)))
            batch.gpu_samples.append(GpuSample(second + half, gpu, {
                "util_gpu": round(walk[gpu]), "sm_util": round(walk[gpu] * 0.8, 1),
                "power_w": round(100 + walk[gpu] * 5, 1)}, "gpm"))
    for i in range(10):
        batch.engine_samples.append(EngineSample(second + 0.3, "http://127.0.0.1:8000/metrics", "vllm", "m",
                                                 f"signal_{i}", round(rng.uniform(0, 100), 2)))
    return batch


PID_SIZE = 77


def _file_sizes(path: str) -> tuple[int, int]:
    """(database file, its WAL) in bytes; 0 for one that does not exist."""
    return tuple(os.path.getsize(path + s) if os.path.exists(path + s) else 0 for s in ("", ".wal"))


@pytest.mark.slow
def test_size_bound_holds_within_ten_percent_under_sustained_load(tmp_path):
    """Time-compressed sustained load through the writer, the daemon's maintenance every
    simulated minute with a 64 MiB bound. Once retention by size has started deleting, the
    database file never exceeds the bound by more than 10%.

    The bound is on the database file. Its WAL beside it holds rows not yet checkpointed and
    is bounded by DuckDB's own auto-checkpoint (16 MiB, checked here too). The file overshoots
    by a few MiB whatever the bound: a checkpoint lands up to 16 MiB of WAL in blocks at once,
    between two maintenance runs, and it frees the blocks of the row groups it rewrites only
    for the next one to reuse. With this load that measured 14% over a 32 MiB bound, so the
    test uses 64 MiB (the default is 4096). Rollups are off so the data reaches the bound in a
    few simulated hours.
    """
    import random

    bound = 64 * 2**20
    policy = retention.RetentionPolicy(retention_s=1e9, max_bytes=bound, rollup_after_s=1e9, rollup_bucket_s=60)
    store = Store.open(str(tmp_path / "bounded.duckdb"), host="size-host", flush_interval_s=0.2)
    rng = random.Random(11)
    stacks = make_stacks(300)
    walk = [50.0] * 8
    t0 = 1_700_000_000
    store.submit(Batch("load", t0, targets=[Target("size-host", PID_SIZE, 1.0, "python engine")]))
    sizes: list[int] = []
    wal = 0
    deletions = 0
    minute = 0
    try:
        while deletions < 2 and minute < 1200:
            for s in range(60):
                store.submit(_load_second(t0 + minute * 60 + s, stacks, rng, walk))
            store.flush()
            before = _file_sizes(store.path)
            report = store.write_sync(retention.run_maintenance, policy, t0 + (minute + 1) * 60.0, timeout=300)
            after = _file_sizes(store.path)
            wal = max(wal, before[1], after[1])
            if report["deleted_by_size"]:
                deletions += 1
            if deletions:
                sizes += [before[0], after[0]]
            minute += 1
        assert store.stats().batches_dropped == 0
    finally:
        store.close()
    assert deletions >= 2, f"retention by size never ran twice in {minute} simulated minutes"
    worst = max(sizes)
    assert worst > 0.8 * bound, "the load never came near the bound; the test shows nothing"
    assert worst <= 1.1 * bound, f"the file reached {worst / 2**20:.1f} MiB for a {bound / 2**20:.0f} MiB bound"
    assert wal <= 16 * 2**20 + 4 * 2**20, f"the WAL reached {wal / 2**20:.1f} MiB"


# -- the soak ---------------------------------------------------------------------------------

SOAK_S = float(os.environ.get("INFERSIGHT_SOAK_S", "180"))


def _after_warm_up(values: list[float]) -> tuple[list[float], list[float]]:
    """The samples after warm-up (the first third, at least a minute) in two equal halves."""
    start = max(60, len(values) // 3)
    rest = values[start:]
    return rest[:len(rest) // 2], rest[len(rest) // 2:]


@pytest.mark.slow
def test_soak_has_no_memory_or_descriptor_growth_after_warm_up(tmp_path):
    """The real agent at ~40x the default row rate, every periodic job sped up: maintenance
    every second, rollups after 36 s, retention after 72 s, analysis every second; a client
    asks for health, flame graphs, diffs, series, events and the timeline all the while.

    RSS and open descriptors are read once a second. After warm-up (the first third, at
    least a minute) the rest is cut in two halves: the second half's peak must not exceed the
    first half's by more than 10 MB (RSS swings with the data DuckDB holds until a
    checkpoint, a cycle of tens of seconds here, so peaks are compared over halves spanning
    whole cycles), nor its descriptors by more than 2 (connections in flight). The CI run
    catches fast leaks; the nightly one (30 min) slow ones.
    """
    import psutil

    agent = Agent(["--db", str(tmp_path / "soak.duckdb"), "--rows", "1000", "--interval", "0.1",
                   "--set", "storage.maintenance_interval_s=1", "--set", "storage.rollup_after_hours=0.01",
                   "--set", "storage.rollup_bucket_s=2", "--set", "storage.retention_hours=0.02",
                   "--set", "analysis.interval_s=1", "--set", "analysis.lag_s=2"])
    rss: list[float] = []
    fds: list[int] = []
    # DuckDB's spill files of a query in flight (a sort or hash table over the buffer pool's
    # limit) come and go with the query: not the agent's descriptors; checked at the end
    spill_dir = str(tmp_path / "soak.duckdb.tmp")
    try:
        agent.wait_started()
        proc = psutil.Process(agent.proc.pid)
        started = time.monotonic()
        while time.monotonic() - started < SOAK_S:
            now = time.time()
            for path in ("/api/health", f"/api/flamegraph?from={now - 60}&to={now}",
                         f"/api/diff?a_from={now - 60}&a_to={now - 30}&b_from={now - 30}&b_to={now}",
                         f"/api/series?signal=sm_util&gpu=0&from={now - 120}&to={now}",
                         f"/api/events?from={now - 600}&to={now}", f"/api/ui/timeline?from={now - 300}&to={now}"):
                agent.get(path)
            rss.append(proc.memory_info().rss / 1e6)
            fds.append(proc.num_fds() - _spill_files(proc, spill_dir))
            time.sleep(max(0.0, 1.0 - (time.time() - now)))
        health = agent.get("/api/health")
        assert agent.stop() == 0, "\n".join(agent.lines[-30:])
    finally:
        agent.close()
    assert health["status"] == "ok", health["problems"]
    assert health["storage"]["rows_written"] > 0 and health["storage"]["batches_dropped"] == 0
    first, second = _after_warm_up(rss)
    assert max(second) <= max(first) + 10.0, (
        f"RSS kept growing after warm-up: peak {max(first):.1f} MB, then {max(second):.1f} MB; "
        f"samples {[round(x) for x in rss]}")
    first_fd, second_fd = _after_warm_up([float(f) for f in fds])
    assert max(second_fd) <= max(first_fd) + 2, f"open descriptors kept growing: {fds}"
    left = os.listdir(spill_dir) if os.path.isdir(spill_dir) else []
    assert not left, f"spill files left after the agent stopped: {left}"


def _spill_files(proc, spill_dir: str) -> int:
    """Descriptors ``proc`` holds on files in DuckDB's spill folder (0 when it vanished)."""
    import psutil

    try:
        return sum(1 for f in proc.open_files() if f.path.startswith(spill_dir))
    except (OSError, psutil.Error):  # a file closed or the process gone as /proc was read
        return 0


# -- collectors failing in turn ---------------------------------------------------------------

@pytest.mark.slow
async def test_collectors_failing_in_turn_never_stop_the_others(make_config, tmp_path):
    """py-spy missing (all along), then NVML raising on every call, then the engine's endpoint
    down (NVML fine again): in each phase the failing collector says so in /api/health and
    every other collector keeps writing."""
    from aiohttp import ClientSession, web

    from infersight.daemon.collectors.engines import EngineCollector
    from infersight.daemon.collectors.gpu import GpuCollector
    from infersight.daemon.collectors.stacks import StacksCollector
    from infersight.daemon.config.load import (
        EnginesCollectorConfig,
        GpuCollectorConfig,
        StacksCollectorConfig,
        TargetsConfig,
    )
    from infersight.daemon.gpu.fake_nvml import FakeGpu, FakeNvml
    from infersight.daemon.runtime import Daemon
    from infersight.daemon.sdnotify import Notifier

    metrics = (HERE / "fixtures" / "engine-metrics" / "vllm.prom").read_text()

    async def serve_metrics(request):
        return web.Response(text=metrics, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", serve_metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    host = "turns-host"
    nvml = FakeNvml([FakeGpu(uuid="GPU-turns-0")])
    stacks = StacksCollector(StacksCollectorConfig(pyspy_path=str(tmp_path / "no-such-py-spy")),
                             TargetsConfig(pids=(target.pid,), cmdline_patterns=(), use_nvml_processes=False),
                             host, nvml_pids=lambda: {})
    gpu = GpuCollector(GpuCollectorConfig(fast_interval_s=0.2, slow_interval_s=1.0, dcgm_url="off", events=False),
                       host, nvml=nvml)
    engines = EngineCollector(EnginesCollectorConfig(interval_s=0.2, timeout_s=0.15, autodiscover=False,
                                                     endpoints=(f"http://127.0.0.1:{port}/metrics",)), host)
    config = make_config(**{"collectors.host.interval_s": 0.2, "analysis.enabled": False, "agent.host": host,
                            "targets.pids": (target.pid,)})
    daemon = Daemon(config, extra_collectors=[stacks, gpu, engines], notifier=Notifier({}))
    task = asyncio.create_task(daemon.run())
    tables = {"host": "process_samples", "gpu": "gpu_samples", "engines": "engine_samples"}

    def counts() -> dict[str, int]:
        return {name: daemon.agent.store.read_sync(
            lambda cur, t=table: cur.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for name, table in tables.items()}

    async def phase(failing: str, check) -> dict:
        """Wait until ``check(health)`` shows the failure, then until every other collector
        wrote more rows; returns the last health."""
        health: dict = {}
        async with ClientSession() as session:
            for _ in range(300):
                async with session.get(daemon.site_url + "/api/health") as resp:
                    health = await resp.json()
                if check(health["collectors"][failing]):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"{failing}: failure not shown in health: {health['collectors'][failing]}")
            before = counts()
            for _ in range(300):
                await asyncio.sleep(0.1)
                now = counts()
                if all(now[n] > before[n] for n in tables if n != failing):
                    break
            else:
                raise AssertionError(f"while {failing} failed, the others stopped: {before} -> {counts()}")
            async with session.get(daemon.site_url + "/api/health") as resp:
                health = await resp.json()
            others = {n: st for n, st in health["collectors"].items() if n != failing}
            assert all(st["ok"] is not False for st in others.values()), others
            return health

    def problem(st: dict) -> str:
        return " ".join([str(st.get("last_error") or ""), *map(str, st.get("recent_item_errors") or [])])

    try:
        await asyncio.wait_for(daemon.ready.wait(), 60)
        await phase("stacks", lambda st: "py-spy" in problem(st))
        nvml.broken = True
        await phase("gpu", lambda st: st["ok"] is False or st["last_error"] or "NVML" in problem(st)
                    or bool(st.get("no_data")))
        nvml.broken = False
        await runner.cleanup()        # closes the listener and the keep-alive connections
        await phase("engines", lambda st: "127.0.0.1" in problem(st) or st["ok"] is False)
        assert daemon.agent.store.writer_alive
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
        if runner.server is not None:
            await runner.cleanup()
        target.kill()
        target.wait()
