"""The versioned schema. Migrations run in order at open, each in its own transaction.

A migration is (version, description, steps); a step is a SQL statement, or a function of the
connection for a conversion SQL cannot say as exactly (migration 4 re-encodes rows with the
same code that writes new ones). Never edit a released migration: add a new one. Times are
Unix seconds: DOUBLE, or INTEGER seconds for 1 s stack buckets.
"""
from __future__ import annotations

import time
from typing import Callable, Union

import orjson

from infersight.storage import window_features
from infersight.storage.append import insert_rows
from infersight.storage.model import GPU_SIGNALS

Step = Union[str, Callable[..., None]]

_INT_SIGNALS = {"clocks_event_reasons": "UBIGINT", "mem_used_bytes": "BIGINT", "mem_total_bytes": "BIGINT",
                "ecc_errors_uncorrected": "BIGINT", "retired_pages": "BIGINT"}


def _gpu_signal_columns() -> str:
    return ",\n        ".join(f"{name} {_INT_SIGNALS.get(name, 'FLOAT')}" for name in GPU_SIGNALS)


# the feature columns of windows as migration 4 created them (window_features.FEATURES may
# only grow after it, through new migrations that add columns)
_V4_FEATURES = ("present UINTEGER, util_gpu DOUBLE, sm_util DOUBLE, tensor_util DOUBLE, dram_bw_util DOUBLE, "
                "running DOUBLE, waiting DOUBLE, gen_tokens_s DOUBLE, busiest_pid INTEGER, busiest_role VARCHAR, "
                "busiest_own_cpu_pct DOUBLE, \"mode\" VARCHAR, dram_bw_bytes_s DOUBLE, dram_bw_of_peak DOUBLE, "
                "mbu DOUBLE, mfu DOUBLE, extra VARCHAR")
_CONVERT_CHUNK = 100_000


def _windows_as_columns(con) -> None:
    """Migration 4: re-encode every window's features JSON into the typed columns."""
    con.execute("ALTER TABLE windows RENAME TO windows_json")
    con.execute(f'CREATE TABLE windows (start DOUBLE, "end" DOUBLE, gpu SMALLINT, klass VARCHAR, {_V4_FEATURES})')
    top = con.execute("SELECT coalesce(max(rowid) + 1, 0) FROM windows_json").fetchone()[0]
    for lo in range(0, top, _CONVERT_CHUNK):
        rows = con.execute('SELECT start, "end", gpu, klass, features FROM windows_json WHERE rowid >= ? AND rowid < ?',
                           [lo, lo + _CONVERT_CHUNK]).fetchall()
        if rows:
            insert_rows(con, "windows", window_features.COLUMNS,
                        [(*r[:4], *window_features.encode(orjson.loads(r[4] or "{}"))) for r in rows])
    con.execute("DROP TABLE windows_json")


MIGRATIONS: list[tuple[int, str, list[Step]]] = [
    (1, "core tables", [
        """CREATE TABLE meta (key VARCHAR, value VARCHAR)""",
        # identifies this file to per-process caches (a reopened path may be another file)
        """INSERT INTO meta VALUES ('db_id', uuid()::VARCHAR)""",
        """CREATE TABLE targets (
        id INTEGER, host VARCHAR, pid INTEGER, start_time DOUBLE, cmdline VARCHAR, role VARCHAR,
        gpus INTEGER[], first_seen DOUBLE, last_seen DOUBLE, exited_at DOUBLE)""",
        """CREATE TABLE threads (id INTEGER, target INTEGER, tid BIGINT, name VARCHAR)""",
        """CREATE TABLE frames (id INTEGER, function VARCHAR, file VARCHAR, line INTEGER, module VARCHAR)""",
        # A stack is a node of a prefix tree: (parent node, frame). Samples point at the leaf.
        """CREATE TABLE stack_nodes (id INTEGER, parent INTEGER, frame INTEGER, depth SMALLINT)""",
        """CREATE TABLE stack_samples (
        bucket INTEGER, target UINTEGER, thread UINTEGER, stack UINTEGER, active BOOLEAN, count UINTEGER)""",
        """CREATE TABLE sampling_stats (bucket INTEGER, target UINTEGER, samples UINTEGER, errors UINTEGER)""",
        """CREATE TABLE host_samples (
        t DOUBLE, cpu_percent FLOAT, cpu_count SMALLINT, mem_used_bytes BIGINT, mem_total_bytes BIGINT,
        load1 FLOAT, load5 FLOAT, load15 FLOAT)""",
        """CREATE TABLE process_samples (
        t DOUBLE, target UINTEGER, cpu_percent FLOAT, rss_bytes BIGINT, threads INTEGER,
        ctx_voluntary BIGINT, ctx_involuntary BIGINT)""",
        """CREATE TABLE gpus (
        gpu INTEGER, uuid VARCHAR, name VARCHAR, pci_bus_id VARCHAR, driver VARCHAR,
        mem_bus_width_bits INTEGER, max_mem_clock_mhz INTEGER, peak_dram_bw_bytes_s DOUBLE,
        power_limit_w DOUBLE, mig_mode BOOLEAN, gpm_supported BOOLEAN, parent_gpu INTEGER, updated DOUBLE)""",
        f"""CREATE TABLE gpu_samples (
        t DOUBLE, gpu SMALLINT, source VARCHAR,
        {_gpu_signal_columns()})""",
        """CREATE TABLE gpu_processes (
        t DOUBLE, gpu SMALLINT, pid INTEGER, used_memory_bytes BIGINT, sm_util FLOAT, mem_util FLOAT)""",
        """CREATE TABLE endpoints (id INTEGER, url VARCHAR)""",
        """CREATE TABLE engine_samples (
        t DOUBLE, endpoint USMALLINT, engine VARCHAR, model VARCHAR, signal VARCHAR, value DOUBLE)""",
        """CREATE TABLE histogram_deltas (
        t DOUBLE, endpoint USMALLINT, engine VARCHAR, model VARCHAR, signal VARCHAR,
        bounds DOUBLE[], counts DOUBLE[], interval_s DOUBLE)""",
        """CREATE TABLE series (id INTEGER, endpoint USMALLINT, name VARCHAR, labels VARCHAR)""",
        """CREATE TABLE raw_samples (t DOUBLE, series UINTEGER, value DOUBLE)""",
        """CREATE TABLE events (
        id VARCHAR, kind VARCHAR, host VARCHAR, gpu INTEGER, start DOUBLE, "end" DOUBLE,
        severity VARCHAR, klass VARCHAR, summary VARCHAR, evidence VARCHAR, top_frames VARCHAR,
        open BOOLEAN, updated DOUBLE)""",
        """CREATE TABLE windows (start DOUBLE, "end" DOUBLE, gpu SMALLINT, klass VARCHAR, features VARCHAR)""",
    ]),
    (2, "alert outbox and rollup bookkeeping", [
        """CREATE TABLE outbox (
        id BIGINT, event_id VARCHAR, target VARCHAR, kind VARCHAR, payload VARCHAR, created DOUBLE,
        next_attempt DOUBLE, attempts INTEGER, status VARCHAR, last_error VARCHAR, done_at DOUBLE)""",
        """CREATE TABLE rollups (tbl VARCHAR, done_before DOUBLE)""",
    ]),
    (3, "alert delivery ids and grouping state", [
        # delivery: a unique id per message (receivers dedupe on it); format: the payload's
        # format, so a target whose format changed is not sent a payload of the old one
        """ALTER TABLE outbox ADD COLUMN delivery VARCHAR""",
        """ALTER TABLE outbox ADD COLUMN format VARCHAR""",
        """ALTER TABLE outbox ADD COLUMN state VARCHAR""",
        # one row per (webhook target, event kind, host, GPU): what that target was told, so
        # grouping and cooldowns survive a restart
        """CREATE TABLE alert_groups (
        target VARCHAR, kind VARCHAR, host VARCHAR, gpu INTEGER, status VARCHAR, severity VARCHAR,
        event VARCHAR, first_start DOUBLE, last_end DOUBLE, closed_until DOUBLE, open BOOLEAN,
        occurrences INTEGER, announced INTEGER, ongoing_announced BOOLEAN, settle_since DOUBLE,
        last_sent DOUBLE, updated DOUBLE)""",
    ]),
    (4, "analysis windows: typed feature columns instead of JSON text", [_windows_as_columns]),
    # findings' text (a summary sentence, evidence and top frames as JSON) takes zstd at about
    # 45 % of the size of DuckDB's default string compression (measured on the 24 h bench store)
    (5, "events: zstd for the text columns", [
        """CREATE TABLE events_v5 (
        id VARCHAR, kind VARCHAR, host VARCHAR, gpu INTEGER, start DOUBLE, "end" DOUBLE,
        severity VARCHAR, klass VARCHAR, summary VARCHAR USING COMPRESSION zstd,
        evidence VARCHAR USING COMPRESSION zstd, top_frames VARCHAR USING COMPRESSION zstd,
        open BOOLEAN, updated DOUBLE)""",
        """INSERT INTO events_v5 SELECT id, kind, host, gpu, start, "end", severity, klass, summary, evidence,
        top_frames, open, updated FROM events""",
        """DROP TABLE events""",
        """ALTER TABLE events_v5 RENAME TO events""",
    ]),
]

CURRENT_VERSION = MIGRATIONS[-1][0]


def applied_version(con) -> int:
    """The highest migration applied to ``con``'s database (0 for a new file)."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
    ).fetchone()[0]
    if not exists:
        return 0
    row = con.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def migrate(con, upto: int = CURRENT_VERSION) -> list[int]:
    """Apply every migration newer than the file's version, up to ``upto``; returns those applied.

    Raises RuntimeError when the file was written by a newer infersight (unknown version).
    """
    con.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER, description VARCHAR, applied_at DOUBLE)")
    have = applied_version(con)
    if have > CURRENT_VERSION:
        raise RuntimeError(f"database schema version {have} is newer than this infersight ({CURRENT_VERSION})")
    done = []
    for version, description, statements in MIGRATIONS:
        if version <= have or version > upto:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for step in statements:
                if callable(step):
                    step(con)
                else:
                    con.execute(step)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, description, time.time()])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        done.append(version)
    return done
