"""Retention by age and by size, and rollups of old samples to coarser buckets.

Run on the writer thread via ``Store.write(run_maintenance, policy, now)``:
1. rollups: 1 s data older than ``rollup_after_s`` is replaced by one row per
   ``rollup_bucket_s`` bin (stack counts summed, gauges averaged, histogram deltas summed per
   bucket, analysis windows to the seconds of each class), so long ranges stay cheap;
   a watermark per table (table ``rollups``) makes each bin roll up once;
2. age: rows older than ``retention_s`` are deleted from every time table;
3. size: while the data in use exceeds ``max_bytes``, the oldest hour is deleted;
4. interned values: every ``intern_idle_s`` the writer's interner forgets what it has not
   used for that long, and the frames, stack nodes and threads no stored sample uses any more
   are deleted (storage/intern.py), so neither grows for the life of the process or the file.

A step that runs out of DuckDB's buffer pool is tried once more with ROOM_FACTOR times the
pool (``memory_retries`` in the report), so a small steady-state pool never stops maintenance.

DuckDB reuses the blocks freed by deletes, so the file stops growing at about the bound
instead of shrinking; "size" here is the used blocks (``pragma_database_size``) scaled by
the share of stored rows not yet deleted (blocks are freed a whole row group at a time).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

from infersight.storage import window_features as wf
from infersight.storage.intern import IDLE_S, Interner, prune_unreferenced, wants_interner
from infersight.storage.model import GPU_SIGNALS

# table -> time column (stack tables use integer buckets)
TIME_TABLES = {
    "stack_samples": "bucket", "sampling_stats": "bucket", "host_samples": "t", "process_samples": "t",
    "gpu_samples": "t", "gpu_processes": "t", "engine_samples": "t", "histogram_deltas": "t",
    "raw_samples": "t", "windows": "start", "events": '"end"',
}
# how much more buffer pool a maintenance step that ran out of it gets for its second try
ROOM_FACTOR = 4
_ROLLUPS = {
    "stack_samples": ("bucket", "target, thread, stack, active", "sum(count)::UINTEGER",
                      "target, thread, stack, active, count"),
    "sampling_stats": ("bucket", "target", "sum(samples)::UINTEGER, sum(errors)::UINTEGER", "target, samples, errors"),
    "gpu_samples": ("t", "gpu, source", ", ".join(f"avg({s})" if s != "clocks_event_reasons" else f"bit_or({s})"
                                                  for s in GPU_SIGNALS), "gpu, source, " + ", ".join(GPU_SIGNALS)),
    "engine_samples": ("t", "endpoint, engine, model, signal", "avg(value)", "endpoint, engine, model, signal, value"),
    # the engines' raw series are counters as often as gauges: the bin keeps its last value,
    # from which counters still give rates and gauges a reading
    "raw_samples": ("t", "series", "arg_max(value, t)", "series, value"),
    "process_samples": ("t", "target", "avg(cpu_percent), avg(rss_bytes)::BIGINT, avg(threads)::INTEGER, "
                        "max(ctx_voluntary), max(ctx_involuntary)",
                        "target, cpu_percent, rss_bytes, threads, ctx_voluntary, ctx_involuntary"),
    "host_samples": ("t", "cpu_count", "avg(cpu_percent), avg(mem_used_bytes)::BIGINT, max(mem_total_bytes), "
                     "avg(load1), avg(load5), avg(load15)",
                     "cpu_count, cpu_percent, mem_used_bytes, mem_total_bytes, load1, load5, load15"),
}


_HISTOGRAM_KEYS = "endpoint, engine, model, signal, bounds"
_WINDOW_INSERT = ", ".join(f'"{c}"' for c in wf.COLUMNS[1:])


def _generic_select(table: str, tcol: str, keys: str, aggs: str):
    def select(bin_expr: str) -> str:
        return (f"SELECT {bin_expr} AS {tcol}, {keys}, {aggs} FROM {table} "
                f"WHERE {tcol} >= ? AND {tcol} < ? GROUP BY ALL")
    return select


def _histogram_select(bin_expr: str) -> str:
    """Deltas of one histogram summed bucket by bucket over the bin (and their intervals)."""
    return f"""
        WITH h AS (SELECT {bin_expr} AS t, {_HISTOGRAM_KEYS}, interval_s,
                          unnest(range(1, len(counts) + 1)) AS i, unnest(counts) AS c
                   FROM histogram_deltas WHERE t >= ? AND t < ?),
        b AS (SELECT t, {_HISTOGRAM_KEYS}, i, sum(c) AS c, sum(interval_s) AS interval_s FROM h GROUP BY ALL)
        SELECT t, {_HISTOGRAM_KEYS}, list(c ORDER BY i) AS counts, max(interval_s) AS interval_s
        FROM b GROUP BY ALL"""


def _windows_select(bin_expr: str) -> str:
    """One window per class and bin, as long as the seconds of that class in the bin, laid end
    to end from the bin's first window in the order the classes first appear: class seconds
    stay exact, the order within a bin (like every rolled-up table's) is lost. Features as
    window_features.rollup_aggregates."""
    return f"""
        WITH w AS (SELECT *, {bin_expr} AS bin FROM windows WHERE start >= ? AND start < ?),
        c AS (SELECT gpu, bin, klass, min(start) AS first, sum("end" - start) AS seconds,
                     {wf.rollup_aggregates()}
              FROM w GROUP BY gpu, bin, klass),
        o AS (SELECT *, min(first) OVER b + coalesce(sum(seconds) OVER (b ORDER BY first, klass
                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS laid_at
              FROM c WINDOW b AS (PARTITION BY gpu, bin))
        SELECT laid_at AS start, laid_at + seconds AS "end", gpu, klass, {wf.select_sql()} FROM o"""


# table -> (time column, columns the SELECT gives after the time column, SELECT of one range
# given the bin expression; its two ? are the range [from, to))
_ROLLUP_SELECTS = {
    **{table: (tcol, cols, _generic_select(table, tcol, keys, aggs)) for table, (tcol, keys, aggs, cols) in _ROLLUPS.items()},
    "histogram_deltas": ("t", f"{_HISTOGRAM_KEYS}, counts, interval_s", _histogram_select),
    "windows": ("start", _WINDOW_INSERT, _windows_select),
}


@dataclass(frozen=True)
class RetentionPolicy:
    retention_s: float
    max_bytes: float
    rollup_after_s: float
    rollup_bucket_s: int
    intern_idle_s: float = IDLE_S


def used_bytes(con) -> int:
    """Bytes in used blocks of the database (what retention by size bounds)."""
    row = con.execute("SELECT used_blocks * block_size FROM pragma_database_size()").fetchone()
    return int(row[0] or 0)


@wants_interner
def run_maintenance(con, policy: RetentionPolicy, now: float, *, interner: Interner | None = None) -> dict[str, int]:
    """Roll up, then delete by age, then by size, then (given the writer's ``interner``, which
    the writer passes) age interned values out. Returns rows or entries affected per step."""
    retries = [0]

    def roomy(step, *args):
        return _with_room(con, retries, step, con, *args)

    report = {"rolled_up": roomy(rollup, now - policy.rollup_after_s, policy.rollup_bucket_s)}
    report["deleted_by_age"] = roomy(delete_before, now - policy.retention_s)
    report["deleted_by_size"] = 0
    for _ in range(10_000):  # bounded: one hour per step
        used = used_bytes(con)
        if used <= policy.max_bytes or used * live_fraction(con) <= policy.max_bytes:
            break
        oldest = _oldest(con)
        if oldest is None:
            break
        deleted = roomy(delete_before, oldest + 3600)
        report["deleted_by_size"] += deleted
        con.execute("CHECKPOINT")
        if deleted == 0:
            break
    report["interned_forgotten"] = report["dimension_rows_pruned"] = 0
    if interner is not None and interner.due(now, policy.intern_idle_s):
        report["interned_forgotten"] = interner.rotate()
        report["dimension_rows_pruned"] = sum(roomy(prune_unreferenced, interner).values())
    report["memory_retries"] = retries[0]
    return report


def _with_room(con, retries: list[int], step, *args):
    """Run one maintenance step; if DuckDB runs out of its buffer pool, run it again once with
    ROOM_FACTOR times the pool, then restore the pool (``retries[0]`` counts these).

    The pool is sized for the agent's steady state (storage.duckdb_memory_limit_mb), and a
    step over a backlog (the first rollup of hours of data, a prune over millions of samples)
    may need more once in a while. Every step is one transaction and idempotent (rollups keep
    a watermark, deletes and prunes recompute what to delete), so the failed try left nothing.
    """
    try:
        return step(*args)
    except duckdb.OutOfMemoryException:
        # SET takes no parameters: the text carries integers only
        limit = int(_bytes(con.execute("SELECT current_setting('memory_limit')").fetchone()[0]))
        con.execute(f"SET memory_limit = '{int(limit * ROOM_FACTOR)}B'")
        retries[0] += 1
        try:
            return step(*args)
        finally:
            con.execute(f"SET memory_limit = '{limit}B'")


_UNITS = {"B": 1, "BYTES": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40,
          "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12}


def _bytes(setting: str) -> float:
    """Bytes of a DuckDB size setting as ``current_setting`` writes it ('32.0 MiB', '1.2 GiB')."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", setting)
    if m is None or m.group(2).upper() not in _UNITS | {"": 1}:
        raise ValueError(f"not a DuckDB size: {setting!r}")
    return float(m.group(1)) * _UNITS.get(m.group(2).upper(), 1)


def live_fraction(con) -> float:
    """Share of the rows stored in the time tables that are not deleted (1.0 when empty).

    DuckDB frees a row group's blocks only once all of its rows are deleted (or a checkpoint
    can merge row groups), so deleted rows keep using blocks for a while: judging by used
    blocks alone would delete hour after hour, up to everything, before any space shows up.
    """
    stored = live = 0
    for table in TIME_TABLES:
        stored += con.execute(f"SELECT coalesce(sum(count), 0) FROM pragma_storage_info('{table}') "
                              "WHERE column_id = 0 AND segment_type = 'VALIDITY'").fetchone()[0]
        live += con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return min(1.0, live / stored) if stored else 1.0


def _oldest(con) -> float | None:
    parts = " UNION ALL ".join(f"SELECT min({col})::DOUBLE FROM {t}" for t, col in TIME_TABLES.items())
    row = con.execute(f"SELECT min(m) FROM ({parts}) x(m)").fetchone()
    return row[0]


def delete_before(con, cutoff: float) -> int:
    """Delete rows older than ``cutoff`` from every time table (closed events only)."""
    total = 0
    con.execute("BEGIN TRANSACTION")
    try:
        for table, col in TIME_TABLES.items():
            extra = " AND NOT open" if table == "events" else ""
            total += con.execute(f"DELETE FROM {table} WHERE {col} < ?{extra}", [cutoff]).fetchone()[0]
        con.execute("DELETE FROM outbox WHERE status IN ('delivered', 'given_up') AND done_at < ?", [cutoff])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return total


def rollup(con, before: float, bucket_s: int) -> int:
    """Replace 1 s rows older than ``before`` with one row per ``bucket_s`` bin; returns rows removed."""
    edge = (int(before) // bucket_s) * bucket_s
    removed = 0
    for table, (tcol, insert_cols, select) in _ROLLUP_SELECTS.items():
        row = con.execute("SELECT done_before FROM rollups WHERE tbl = ?", [table]).fetchone()
        start = row[0] if row else None
        if start is None:
            first = con.execute(f"SELECT min({tcol}) FROM {table}").fetchone()[0]
            if first is None:
                continue
            start = (int(first) // bucket_s) * bucket_s
        if start >= edge:
            continue
        bin_expr = f"(({tcol})::BIGINT // {bucket_s}) * {bucket_s}"
        if tcol == "bucket":
            bin_expr = f"({bin_expr})::INTEGER"
        else:
            bin_expr = f"({bin_expr})::DOUBLE"
        con.execute("BEGIN TRANSACTION")
        try:
            before_n = con.execute(f"SELECT count(*) FROM {table} WHERE {tcol} >= ? AND {tcol} < ?",
                                   [start, edge]).fetchone()[0]
            con.execute(f"CREATE TEMP TABLE _rolled AS {select(bin_expr)}", [start, edge])
            con.execute(f"DELETE FROM {table} WHERE {tcol} >= ? AND {tcol} < ?", [start, edge])
            con.execute(f"INSERT INTO {table} ({tcol}, {insert_cols}) SELECT * FROM _rolled")
            after_n = con.execute("SELECT count(*) FROM _rolled").fetchone()[0]
            con.execute("DROP TABLE _rolled")
            con.execute("DELETE FROM rollups WHERE tbl = ?", [table])
            con.execute("INSERT INTO rollups VALUES (?, ?)", [table, float(edge)])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        removed += before_n - after_n
    return removed
