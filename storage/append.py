"""Turns collector batches into columns and appends them in bulk (one INSERT per table).

Runs on the writer thread inside the writer's transaction. Columns are NumPy arrays or
Python lists handed to DuckDB as a dict (a replacement scan): no row-by-row inserts.
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Iterable

# NumPy serves only as DuckDB's bulk-append format here, never for math: without this its
# OpenBLAS starts one idle thread per core at import (63 on a 64-core inference host).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

from infersight.storage import window_features
from infersight.storage.intern import Interner
from infersight.storage.model import GPU_SIGNALS, Batch

_TABLE_COLUMNS = {
    "frames": ("id", "function", "file", "line", "module"),
    "stack_nodes": ("id", "parent", "frame", "depth"),
    "threads": ("id", "target", "tid", "name"),
    "endpoints": ("id", "url"),
    "series": ("id", "endpoint", "name", "labels"),
    "targets_new": ("id", "host", "pid", "start_time", "cmdline", "role", "gpus", "first_seen", "last_seen",
                    "exited_at"),
}


def insert_rows(con, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Append ``rows`` (tuples in ``columns`` order) to ``table`` in one statement."""
    if not rows:
        return
    data = {name: list(values) for name, values in zip(columns, zip(*rows))}
    insert_columns(con, table, data)


def insert_columns(con, table: str, data: dict[str, Iterable]) -> None:
    """Append a dict of equal-length columns to ``table`` (names must match its columns)."""
    cols = {k: (v if isinstance(v, np.ndarray) else list(v)) for k, v in data.items()}
    con.register("_append_src", _as_relation_source(cols))
    names = ", ".join(f'"{k}"' for k in cols)
    try:
        con.execute(f'INSERT INTO {table} ({names}) SELECT {names} FROM _append_src')
    except Exception:
        _unregister_quietly(con, "_append_src")
        raise
    con.unregister("_append_src")


def _unregister_quietly(con, name: str) -> None:
    """Unregister after a failed statement without hiding its error: an aborted transaction
    refuses the unregister, and the next ``register`` of the name replaces the view anyway."""
    try:
        con.unregister(name)
    except Exception:
        pass


def _as_relation_source(cols: dict[str, object]):
    """A dict of NumPy arrays DuckDB can scan; lists become object arrays (strings, lists)."""
    out = {}
    for name, values in cols.items():
        if isinstance(values, np.ndarray):
            out[name] = values
        else:
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            out[name] = arr
    return out


def append_batches(con, interner: Interner, batches: list[Batch], host: str) -> int:
    """Intern and append every record of ``batches``; returns the number of rows written."""
    cols: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    written = 0
    for batch in batches:
        now = batch.t
        for target in batch.targets:
            interner.target(target, now)
        for s in batch.stack_samples:
            target = interner.target_of(host, s.pid, s.start_time, now)
            c = cols["stack_samples"]
            c["bucket"].append(s.bucket)
            c["target"].append(target)
            c["thread"].append(interner.thread(target, s.tid, s.thread_name))
            c["stack"].append(interner.stack(s.frames))
            c["active"].append(s.active)
            c["count"].append(s.count)
        for s in batch.sampling_stats:
            c = cols["sampling_stats"]
            c["bucket"].append(s.bucket)
            c["target"].append(interner.target_of(host, s.pid, s.start_time, now))
            c["samples"].append(s.samples)
            c["errors"].append(s.errors)
        for s in batch.host_samples:
            _append_fields(cols["host_samples"], s, ("t", "cpu_percent", "cpu_count", "mem_used_bytes",
                                                    "mem_total_bytes", "load1", "load5", "load15"))
        for s in batch.process_samples:
            c = cols["process_samples"]
            c["target"].append(interner.target_of(host, s.pid, s.start_time, now))
            _append_fields(c, s, ("t", "cpu_percent", "rss_bytes", "threads", "ctx_voluntary", "ctx_involuntary"))
        for s in batch.gpu_samples:
            c = cols["gpu_samples"]
            c["t"].append(s.t)
            c["gpu"].append(s.gpu)
            c["source"].append(s.source)
            for name in GPU_SIGNALS:
                c[name].append(s.values.get(name))
        for s in batch.gpu_processes:
            _append_fields(cols["gpu_processes"], s, ("t", "gpu", "pid", "used_memory_bytes", "sm_util", "mem_util"))
        for s in batch.engine_samples:
            c = cols["engine_samples"]
            c["endpoint"].append(interner.endpoint(s.endpoint))
            _append_fields(c, s, ("t", "engine", "model", "signal", "value"))
        for s in batch.histogram_deltas:
            c = cols["histogram_deltas"]
            c["endpoint"].append(interner.endpoint(s.endpoint))
            _append_fields(c, s, ("t", "engine", "model", "signal", "interval_s"))
            c["bounds"].append(list(s.bounds))
            c["counts"].append(list(s.counts))
        for s in batch.raw_series:
            c = cols["raw_samples"]
            c["t"].append(s.t)
            c["series"].append(interner.one_series(interner.endpoint(s.endpoint), s.name, s.labels))
            c["value"].append(s.value)
        if batch.windows:
            c = cols["windows"]
            for row in window_features.encode_rows(batch.windows):
                for name, value in zip(window_features.COLUMNS, row):
                    c[name].append(value)
        written += batch.row_count() - len(batch.events) - len(batch.gpu_info)
    pending = interner.take_pending()
    try:
        for table, rows in pending.items():
            if table == "targets_new":
                insert_rows(con, "targets", _TABLE_COLUMNS[table], rows)
            elif table == "targets_seen":
                _update_targets(con, rows)
            else:
                insert_rows(con, table, _TABLE_COLUMNS[table], rows)
        for table, data in cols.items():
            insert_columns(con, table, data)
        for batch in batches:
            if batch.gpu_info:
                upsert_gpu_info(con, batch.gpu_info, batch.t)
    except Exception:
        interner.forget_pending(pending)
        raise
    return written


def _append_fields(c: dict[str, list], record: object, names: tuple[str, ...]) -> None:
    for name in names:
        c[name].append(getattr(record, name))


def _update_targets(con, rows: list[tuple]) -> None:
    """Refresh last_seen (and role, GPUs, exit) of targets seen again; last row per id wins."""
    latest = {row[0]: row for row in rows}
    con.register("_seen", _as_relation_source({
        "id": [r[0] for r in latest.values()], "cmdline": [r[1] for r in latest.values()],
        "role": [r[2] for r in latest.values()], "gpus": [r[3] for r in latest.values()],
        "last_seen": [r[4] for r in latest.values()], "exited_at": [r[5] for r in latest.values()]}))
    try:
        con.execute("""
            UPDATE targets SET last_seen = s.last_seen,
                role = CASE WHEN s.role <> 'unknown' THEN s.role ELSE targets.role END,
                cmdline = CASE WHEN s.cmdline <> '' THEN s.cmdline ELSE targets.cmdline END,
                gpus = CASE WHEN len(s.gpus) > 0 THEN s.gpus ELSE targets.gpus END,
                exited_at = coalesce(s.exited_at, targets.exited_at)
            FROM _seen s WHERE targets.id = s.id""")
    finally:
        con.unregister("_seen")


def upsert_gpu_info(con, infos, now: float) -> None:
    """Replace the static facts of each GPU in ``infos``."""
    fields = ("gpu", "uuid", "name", "pci_bus_id", "driver", "mem_bus_width_bits", "max_mem_clock_mhz",
              "peak_dram_bw_bytes_s", "power_limit_w", "mig_mode", "gpm_supported", "parent_gpu")
    con.execute("DELETE FROM gpus WHERE gpu IN (SELECT unnest(?))", [[i.gpu for i in infos]])
    insert_rows(con, "gpus", fields + ("updated",),
                [tuple(getattr(i, f) for f in fields) + (now,) for i in infos])
