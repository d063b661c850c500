"""Builds a store holding ``hours`` of the simulated default load, time-compressed.

The batches of every simulated second go through ``Store.submit`` (the live writer path:
interning, bulk appends); every simulated ``storage.maintenance_interval_s`` the daemon's own
maintenance (rollups, retention) runs with the simulated clock, and the analysis steps over
the new data with it, as ``infersight replay`` drives it. Differences from a live agent, said
where the figures are printed: the writer flushes once per simulated maintenance interval
(60 s of data per transaction, not 1 s), and the analysis steps once per simulated minute
instead of every 5 s (the per-second windows it writes are the same).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from _workload import Workload

from infersight.daemon.analysis.analyzer import Analyzer
from infersight.daemon.config.load import Config, store_options
from infersight.storage import retention
from infersight.storage.store import Store


@dataclass
class BuildReport:
    t_from: int
    t_to: int
    seconds_built: float
    rows_submitted: int
    stack_rows: int
    stack_samples: int
    batches_dropped: int
    maintenance_runs: int
    rolled_up_rows: int
    analysis_steps: int
    file_bytes: int
    memory_retries: int = 0      # maintenance steps run again with more buffer pool


def policy_of(config: Config) -> retention.RetentionPolicy:
    s = config.storage
    return retention.RetentionPolicy(retention_s=s.retention_hours * 3600, max_bytes=s.max_size_mb * 2**20,
                                     rollup_after_s=s.rollup_after_hours * 3600, rollup_bucket_s=s.rollup_bucket_s)


def remove_db(path: str) -> None:
    for suffix in ("", ".wal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


def build(path: str, config: Config, workload: Workload, hours: float, t_to: int, *, analysis: bool = True,
          progress=print) -> BuildReport:
    """Write ``hours`` of load ending at Unix second ``t_to`` into a new store at ``path``."""
    remove_db(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    span = int(hours * 3600)
    t_from = t_to - span
    store = Store.open(path, host=config.host, **store_options(config.storage))
    policy = policy_of(config)
    clock = [float(t_from)]
    analyzer = Analyzer(config, store, clock=lambda: clock[0]) if analysis else None
    step_s = int(config.storage.maintenance_interval_s)
    rows = stack_rows = samples = runs = rolled = steps = retried = 0
    started = time.perf_counter()
    last_report = started
    for b in workload.first_batches(t_from):
        store.submit(b)
    for chunk in range(t_from, t_to, step_s):
        for second in range(chunk, min(chunk + step_s, t_to)):
            for batch in workload.second(second):
                rows += batch.row_count()
                if batch.stack_samples:
                    stack_rows += len(batch.stack_samples)
                    samples += sum(s.count for s in batch.stack_samples)
                if not store.submit(batch):
                    store.flush()      # the queue is full: wait for the writer, then submit again
                    store.submit(batch)
        now = float(min(chunk + step_s, t_to))
        clock[0] = now
        store.flush()
        if analyzer is not None:
            analyzer.step(now)
            steps += 1
        report = store.write_sync(retention.run_maintenance, policy, now, timeout=600)
        runs += 1
        rolled += report["rolled_up"]
        retried += report["memory_retries"]
        if time.perf_counter() - last_report > 30:
            last_report = time.perf_counter()
            done = (now - t_from) / span
            progress(f"  built {done:5.1%} of {hours:g} h in {last_report - started:.0f} s "
                     f"({store.size_bytes() / 2**20:.0f} MiB so far)")
    dropped = store.stats().batches_dropped
    store.close()
    return BuildReport(t_from, t_to, time.perf_counter() - started, rows, stack_rows, samples, dropped, runs,
                       rolled, steps, _file_bytes(path), retried)


def _file_bytes(path: str) -> int:
    return sum(os.path.getsize(path + s) for s in ("", ".wal") if os.path.exists(path + s))


def table_bytes(path: str, scratch_dir: str) -> dict[str, tuple[int, int]]:
    """Per table: (rows, bytes the table takes when written alone into a fresh file).

    DuckDB reports no per-table size, so each table is copied into an empty database and the
    growth of that file is its size (same compression, freshly packed, whole 256 KiB blocks:
    an estimate).
    """
    import duckdb

    out: dict[str, tuple[int, int]] = {}
    src = duckdb.connect(path, read_only=True)
    try:
        # the table's own DDL: it carries column compression (events' text is zstd)
        tables = src.execute("SELECT table_name, sql FROM duckdb_tables() WHERE database_name = current_database() "
                             "ORDER BY 1").fetchall()
    finally:
        src.close()
    for table, ddl in tables:
        scratch = os.path.join(scratch_dir, f"t_{table}.duckdb")
        remove_db(scratch)
        con = duckdb.connect(scratch)
        try:
            con.execute("ATTACH ? AS src (READ_ONLY)", [path])
            con.execute(ddl)
            con.execute("CHECKPOINT")
            before = _file_bytes(scratch)
            con.execute(f'INSERT INTO "{table}" SELECT * FROM src."{table}"')
            n = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            con.execute("DETACH src")
            con.execute("CHECKPOINT")
            after = _file_bytes(scratch)
        finally:
            con.close()
        out[table] = (int(n), max(0, after - before))
        remove_db(scratch)
    return out
