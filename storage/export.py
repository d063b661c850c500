"""Parquet export of one table's rows in one hour, through DuckDB's ``COPY ... TO ... (FORMAT PARQUET)``.

Each exported table is self-contained, so files from many hosts can be queried together by
DuckDB, ClickHouse, Trino or Spark without this host's dimension tables: interned ids are
resolved (a stack becomes its frames, root first, plus the same folded text as
``storage.render.folded``; a target becomes pid, start_time and role; an endpoint its URL).
Unsigned integers are widened to signed types, which every reader supports. A window's
``features`` stay one JSON text column, as ``/api/windows`` answers them, though the store keeps
them as typed columns (storage/window_features.py). Times stay
Unix seconds (DOUBLE, or INTEGER seconds for stack buckets). The host is not a column: it is
a partition key of the directory tree (daemon/export.py), and a column of the same name
would clash with it.

An hour's rows are those whose time column falls in ``[hour, hour + 3600)``: ``t`` for
samples, ``bucket`` for stack tables, ``start`` for windows, and ``end`` for events, which
are exported once closed (an open finding is still changing).
"""
from __future__ import annotations

from dataclasses import dataclass

from infersight.storage import window_features as wf
from infersight.storage.model import GPU_SIGNALS

HOUR_S = 3600


@dataclass(frozen=True)
class TableSpec:
    """``select`` has one ``?`` pair for [from, to); ``time`` is the column that places a row."""

    time: str
    select: str
    where: str = ""


def _folded(frames: str) -> str:
    # the frame text of render._folded_name: "function (file:line)", ';' and newlines replaced
    text = ("CASE WHEN coalesce(f.file, '') <> '' THEN f.\"function\" || ' (' || f.file || ':' || "
            "coalesce(f.line, 0) || ')' ELSE f.\"function\" END")
    clean = f"replace(replace(replace({text}, ';', ':'), chr(10), ' '), chr(13), ' ')"
    return f"array_to_string(list_transform({frames}, lambda f: {clean}), ';')"


_GPU_COLUMNS = ", ".join(f"s.{name}::BIGINT AS {name}" if name == "clocks_event_reasons" else f"s.{name}"
                         for name in GPU_SIGNALS)

TABLES: dict[str, TableSpec] = {
    "stack_samples": TableSpec("bucket", f"""
        WITH RECURSIVE leaves AS (SELECT DISTINCT stack FROM stack_samples WHERE bucket >= ? AND bucket < ?),
        walk(leaf, node, frames) AS (
            SELECT stack, stack, []::STRUCT("function" VARCHAR, file VARCHAR, line INTEGER)[] FROM leaves
            UNION ALL
            SELECT w.leaf, n.parent, list_prepend({{'function': fr."function", 'file': fr.file, 'line': fr.line}},
                                                  w.frames)
            FROM walk w JOIN stack_nodes n ON n.id = w.node JOIN frames fr ON fr.id = n.frame
            WHERE w.node <> 0),
        paths AS (SELECT leaf, frames FROM walk WHERE node = 0)
        SELECT s.bucket, g.pid, g.start_time, g.role, th.tid, th.name AS thread_name, p.frames,
               {_folded('p.frames')} AS stack, s.active, s.count::BIGINT AS count
        FROM stack_samples s JOIN targets g ON g.id = s.target JOIN threads th ON th.id = s.thread
             JOIN paths p ON p.leaf = s.stack
        WHERE s.bucket >= ? AND s.bucket < ?"""),
    "sampling_stats": TableSpec("bucket", """
        SELECT s.bucket, g.pid, g.start_time, g.role, s.samples::BIGINT AS samples, s.errors::BIGINT AS errors
        FROM sampling_stats s JOIN targets g ON g.id = s.target WHERE s.bucket >= ? AND s.bucket < ?"""),
    "host_samples": TableSpec("t", """
        SELECT t, cpu_percent, cpu_count, mem_used_bytes, mem_total_bytes, load1, load5, load15
        FROM host_samples WHERE t >= ? AND t < ?"""),
    "process_samples": TableSpec("t", """
        SELECT p.t, g.pid, g.start_time, g.role, p.cpu_percent, p.rss_bytes, p.threads, p.ctx_voluntary,
               p.ctx_involuntary
        FROM process_samples p JOIN targets g ON g.id = p.target WHERE p.t >= ? AND p.t < ?"""),
    "gpu_samples": TableSpec("t", f"""
        SELECT s.t, s.gpu, i.uuid, s.source, {_GPU_COLUMNS}
        FROM gpu_samples s LEFT JOIN gpus i ON i.gpu = s.gpu WHERE s.t >= ? AND s.t < ?"""),
    "gpu_processes": TableSpec("t", """
        SELECT t, gpu, pid, used_memory_bytes, sm_util, mem_util FROM gpu_processes WHERE t >= ? AND t < ?"""),
    "engine_samples": TableSpec("t", """
        SELECT s.t, e.url AS endpoint, s.engine, s.model, s.signal, s.value
        FROM engine_samples s LEFT JOIN endpoints e ON e.id = s.endpoint WHERE s.t >= ? AND s.t < ?"""),
    "histogram_deltas": TableSpec("t", """
        SELECT h.t, e.url AS endpoint, h.engine, h.model, h.signal, h.bounds, h.counts, h.interval_s
        FROM histogram_deltas h LEFT JOIN endpoints e ON e.id = h.endpoint WHERE h.t >= ? AND h.t < ?"""),
    "raw_samples": TableSpec("t", """
        SELECT r.t, e.url AS endpoint, s.name, s.labels, r.value
        FROM raw_samples r JOIN series s ON s.id = r.series LEFT JOIN endpoints e ON e.id = s.endpoint
        WHERE r.t >= ? AND r.t < ?"""),
    "windows": TableSpec("start", f"""
        SELECT w.start, w."end", w.gpu, i.uuid, w.klass AS class, {wf.json_sql("w")} AS features
        FROM windows w LEFT JOIN gpus i ON i.gpu = w.gpu WHERE w.start >= ? AND w.start < ?"""),
    "events": TableSpec('"end"', """
        SELECT id, kind, gpu, start, "end", severity, klass AS class, summary, evidence, top_frames, updated
        FROM events WHERE "end" >= ? AND "end" < ? AND NOT open""", where=" AND NOT open"),
}


def hours_with_rows(cur, table: str, t_from: float, t_to: float) -> list[int]:
    """Start (Unix seconds) of every hour in [t_from, t_to) holding exportable rows of ``table``."""
    spec = TABLES[table]
    rows = cur.execute(f"SELECT DISTINCT (floor({spec.time} / {HOUR_S}) * {HOUR_S})::BIGINT FROM {table} "
                       f"WHERE {spec.time} >= ? AND {spec.time} < ?{spec.where} ORDER BY 1",
                       [t_from, t_to]).fetchall()
    return [int(r[0]) for r in rows]


def first_time(cur) -> float | None:
    """The earliest time any exported table holds (where a fresh export starts)."""
    parts = " UNION ALL ".join(f"SELECT min({spec.time})::DOUBLE FROM {table}" for table, spec in TABLES.items())
    return cur.execute(f"SELECT min(m) FROM ({parts}) x(m)").fetchone()[0]


def select_hour(table: str) -> tuple[str, int]:
    """The SELECT of one hour of ``table`` and how many [from, to) pairs it takes."""
    sql = TABLES[table].select
    return sql, sql.count("?") // 2


def copy_hour(cur, table: str, hour: int, path: str) -> int:
    """Write the rows of ``table`` in ``[hour, hour + 3600)`` to the Parquet file ``path``
    (zstd, one file); returns the rows written. ``path`` is written in place: callers write to
    a temporary name and rename (daemon/export.py)."""
    sql, pairs = select_hour(table)
    params = [hour, hour + HOUR_S] * pairs
    literal = path.replace("'", "''")
    row = cur.execute(f"COPY ({sql}) TO '{literal}' (FORMAT PARQUET, COMPRESSION ZSTD)", params).fetchone()
    return int(row[0]) if row else 0


def count_hour(cur, table: str, hour: int) -> int:
    """Rows ``copy_hour`` would write (0 means: no file for this partition)."""
    sql, pairs = select_hour(table)
    return int(cur.execute(f"SELECT count(*) FROM ({sql})", [hour, hour + HOUR_S] * pairs).fetchone()[0])
