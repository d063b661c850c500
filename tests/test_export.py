"""Parquet export: partitions written by a running agent read back with DuckDB match the
store's rows; a re-run writes no duplicates; a crash mid-write leaves no partial file
visible; the one-off CLI."""
from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from infersight.daemon.exporters import parquet as ex
from infersight.daemon.runtime import Daemon
from infersight.daemon.sdnotify import Notifier
from infersight.storage import events as q_events
from infersight.storage.model import (
    GPU_SIGNALS,
    Batch,
    EngineSample,
    Event,
    Frame,
    GpuInfo,
    GpuSample,
    HostSample,
    SamplingStat,
    StackSample,
    Target,
    Window,
)
from infersight.storage.store import Store

HOST = "gpu-node-1"
HOUR = 3600


def hours_ago(n: int) -> int:
    return (int(time.time()) // HOUR - n) * HOUR


def frames(i: int) -> tuple[Frame, ...]:
    base = (Frame("run_engine", "/srv/vllm/engine.py", 10), Frame("step", "/srv/vllm/core.py", 42 + i % 3))
    return base + ((Frame("tokenize;fast", "/srv/tok.py", 9),) if i % 2 else ())


def records(start: int) -> Batch:
    """Two hours of data from ``start`` (a whole hour), a little of every kind of table."""
    b = Batch("fixture", start, targets=[Target(HOST, 4242, 100.0, "python -m vllm", "engine_core", (0,))],
              gpu_info=[GpuInfo(0, "GPU-5c1e", "NVIDIA H100 80GB HBM3")])
    for i in range(0, 2 * HOUR, 300):
        t = start + i
        b.gpu_samples.append(GpuSample(t + 0.25, 0, {"util_gpu": 100.0, "sm_util": 80.0 + i % 7, "power_w": 500.0,
                                                     "clocks_event_reasons": 4, "mem_used_bytes": 70 << 30}))
        b.host_samples.append(HostSample(t, 20.0, 16, 1 << 33, 1 << 35, 1.0, 0.9, 0.8))
        b.stack_samples.append(StackSample(t, 4242, 100.0, 77, "MainThread", frames(i // 300), i % 600 == 0, 3))
        b.sampling_stats.append(SamplingStat(t, 4242, 100.0, 20, i % 2))
        b.engine_samples.append(EngineSample(t, "http://127.0.0.1:8000/metrics", "vllm", "llama", "requests_running",
                                             4.0))
        b.windows.append(Window(float(t), float(t + 1), 0, "compute_bound", {"sm_util": 80.0}))
    return b


def fill(path: str, start: int) -> None:
    store = Store.open(path, host=HOST)
    try:
        store.submit(records(start))
        store.flush()
        store.write_sync(q_events.upsert_events, [
            Event("gap:1", "cpu_gpu_gap", start + 100, start + 160, HOST, 0, klass="host_bound", summary="a gap"),
            Event("gap:2", "cpu_gpu_gap", start + HOUR + 10, start + HOUR + 20, HOST, 0, open=True)])
    finally:
        store.close()


def read(root: Path, table: str, columns: str = "*", order: str = "") -> list[tuple]:
    con = duckdb.connect()
    try:
        glob = str(root / f"table={table}" / "**" / "*.parquet")
        return con.execute(f"SELECT {columns} FROM read_parquet('{glob}', hive_partitioning = true) {order}").fetchall()
    finally:
        con.close()


def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet"))


def store_rows(path: str, sql: str) -> list[tuple]:
    store = Store.open(path, read_only=True)
    try:
        return store.read_sync(lambda cur: cur.execute(sql).fetchall())
    finally:
        store.close()


async def test_a_running_agent_exports_closed_hours_that_match_the_store(make_config, tmp_path):
    db = str(tmp_path / "agent.duckdb")
    start = hours_ago(3)
    fill(db, start)
    root = tmp_path / "parquet"
    config = make_config(**{"storage.path": db, "agent.host": HOST, "analysis.enabled": False,
                            "collectors.host.enabled": False, "export.enabled": True,
                            "export.directory": str(root), "export.interval_s": 1.0})
    daemon = Daemon(config, notifier=Notifier({}))
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 60)
        exporter = daemon.agent.extras["export"]
        for _ in range(600):
            if exporter.done_until is not None and exporter.done_until >= start + 2 * HOUR:
                break
            await asyncio.sleep(0.05)
        health = exporter.health()
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    assert health["ok"], health
    assert health["exported_until"] >= start + 2 * HOUR
    files = parquet_files(root)
    tables = {p.parts[-5] for p in files}
    assert tables == {f"table={t}" for t in ("gpu_samples", "host_samples", "stack_samples", "sampling_stats",
                                             "engine_samples", "windows", "events")}
    assert {p.parts[-4] for p in files} == {f"host={HOST}"}
    day = time.strftime("%Y-%m-%d", time.gmtime(start))
    assert root / "table=gpu_samples" / f"host={HOST}" / f"date={day}" / f"hour={time.gmtime(start).tm_hour:02d}" \
        / "data.parquet" in files

    # every table's rows equal the store's rows (the file is closed now: open it read-only)
    signals = ", ".join(GPU_SIGNALS)
    assert read(root, "gpu_samples", f"t, gpu, uuid, source, {signals}", "ORDER BY t") == store_rows(
        db, f"SELECT t, s.gpu, i.uuid, source, {', '.join('s.' + x for x in GPU_SIGNALS)} FROM gpu_samples s "
            "LEFT JOIN gpus i USING (gpu) ORDER BY t")
    assert read(root, "host_samples", "t, cpu_percent, mem_used_bytes", "ORDER BY t") == store_rows(
        db, "SELECT t, cpu_percent, mem_used_bytes FROM host_samples ORDER BY t")
    assert read(root, "windows", 'start, "end", gpu, class', "ORDER BY start") == store_rows(
        db, 'SELECT start, "end", gpu, klass FROM windows ORDER BY start')
    assert read(root, "engine_samples", "t, endpoint, signal, value", "ORDER BY t") == [
        (float(s.t), s.endpoint, s.signal, s.value) for s in records(start).engine_samples]
    # stacks resolved to their frames, root first, and the folded text of storage.render
    expected = [(s.bucket, s.pid, s.start_time, "engine_core", s.tid, s.thread_name,
                 [{"function": f.function, "file": f.file, "line": f.line} for f in s.frames],
                 ";".join(f"{f.function} ({f.file}:{f.line})".replace(";", ":") for f in s.frames), s.active, s.count)
                for s in records(start).stack_samples]
    assert read(root, "stack_samples", "bucket, pid, start_time, role, tid, thread_name, frames, stack, active, count",
                "ORDER BY bucket") == expected
    assert read(root, "sampling_stats", "bucket, pid, samples, errors", "ORDER BY bucket") == [
        (s.bucket, s.pid, s.samples, s.errors) for s in records(start).sampling_stats]
    # a closed event is exported in the hour it ended; an open one is not (it is still changing)
    assert read(root, "events", "id, kind, class, summary, host") == [("gap:1", "cpu_gpu_gap", "host_bound", "a gap",
                                                                      HOST)]
    assert sum(n for (n,) in read(root, "gpu_samples", "count(*)")) == len(records(start).gpu_samples)

    # the agent again on the same file: its saved progress means nothing is written twice
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    daemon = Daemon(config, notifier=Notifier({}))
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 60)
        await daemon.agent.extras["export"].tick()
        again = daemon.agent.extras["export"].health()
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    assert again["partitions_written"] == 0 and again["ok"]
    assert {p: p.stat().st_mtime_ns for p in parquet_files(root)} == mtimes


def test_cli_rerun_writes_no_duplicates(tmp_path):
    db = str(tmp_path / "store.duckdb")
    start = hours_ago(5)
    fill(db, start)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "infersight.daemon.cli", "export", "--db", db, "--host", HOST, "--out", str(out),
           "--from", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + 600)), "--to", str(start + 2 * HOUR)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    files = parquet_files(out)
    counts = {t: read(out, t, "count(*)")[0][0] for t in ("gpu_samples", "stack_samples", "windows")}
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert parquet_files(out) == files
    assert {t: read(out, t, "count(*)")[0][0] for t in counts} == counts == {
        "gpu_samples": 24, "stack_samples": 24, "windows": 24}  # --from was rounded down to the whole hour
    assert first.stdout == second.stdout and len(first.stdout.splitlines()) == len(files)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_cli_reports_a_database_held_by_a_running_agent(tmp_path):
    db = str(tmp_path / "held.duckdb")
    holder = Store.open(db, host=HOST)
    try:
        proc = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "export", "--db", db, "--out",
                               str(tmp_path / "o"), "--from", "0", "--to", "3600"],
                              capture_output=True, text=True, timeout=120)
    finally:
        holder.close()
    # DuckDB lets one process hold a file read-write; in the same process a second open fails
    # the same way, so a subprocess is the honest check
    assert proc.returncode == 1, proc.stderr
    assert "enable [export]" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_bad_times_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "export", "--db", str(tmp_path / "x"),
                           "--out", str(tmp_path / "o"), "--from", "yesterday", "--to", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "'yesterday' is neither Unix seconds nor an ISO 8601 time" in proc.stderr


CRASHING_EXPORT = """
import os, signal, sys
from pathlib import Path
from infersight.daemon.exporters import parquet as ex
from infersight.storage.store import Store

def crash(tmp, final):
    # the whole temporary is on disk: die as a power cut would, before the rename
    assert tmp.stat().st_size > 0
    os.kill(os.getpid(), signal.SIGKILL)

ex._publish = crash
store = Store.open(sys.argv[1], read_only=True)
store.read_sync(ex.export_range, Path(sys.argv[2]), "gpu-node-1", float(sys.argv[3]), float(sys.argv[3]) + 3600)
"""


def test_a_crash_mid_write_leaves_no_partial_file_visible(tmp_path):
    db = str(tmp_path / "store.duckdb")
    start = hours_ago(4)
    fill(db, start)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", CRASHING_EXPORT, db, str(out), str(start)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    leftovers = [p for p in out.rglob("*") if p.is_file()]
    assert leftovers and all(p.name.startswith(".data.parquet.") and p.name.endswith(".tmp") for p in leftovers)
    assert parquet_files(out) == []
    con = duckdb.connect()
    try:
        with pytest.raises(duckdb.IOException, match="No files found"):
            con.execute(f"SELECT * FROM read_parquet('{out}/**/*.parquet', hive_partitioning = true)")
    finally:
        con.close()
    # the next export of that partition completes it and removes the dead writer's temporary
    store = Store.open(db, read_only=True)
    try:
        results = store.read_sync(ex.export_range, out, HOST, float(start), float(start + HOUR))
    finally:
        store.close()
    assert results and not [p for p in out.rglob("*.tmp")]
    assert read(out, "gpu_samples", "count(*)")[0][0] == 12


def test_export_directory_defaults_next_to_the_database(make_config, tmp_path):
    config = make_config(**{"storage.path": str(tmp_path / "lib" / "infersight.duckdb")})
    assert ex.export_directory(config) == tmp_path / "lib" / "export"
    assert ex.partition_value("node 7/a=b") == "node_7_a_b"
    assert ex.parse_time("2024-05-01T13:00:00") == 1714568400.0 == ex.parse_time("1714568400")
    assert ex.parse_time("2024-05-01T15:00:00+02:00") == 1714568400.0
    assert math.isclose(ex.parse_time("1714568400.5"), 1714568400.5)
    assert os.sep not in ex.partition_value("../../etc")


def test_cli_missing_database_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "export", "--db", str(tmp_path / "no.duckdb"),
                           "--out", str(tmp_path / "o"), "--from", "0", "--to", "3600"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("infersight export: cannot open") and "enable [export]" not in proc.stderr
