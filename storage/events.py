"""Findings (events) and analysis windows: write commands and queries.

Events are written through ``Store.write(upsert_events, [...])`` so they are never dropped;
an event keeps its id while it is ongoing and each update replaces the stored row.
"""
from __future__ import annotations

import time
from typing import Any

import orjson

from infersight.storage import window_features as wf
from infersight.storage.append import insert_rows
from infersight.storage.model import Event, Window

_EVENT_COLUMNS = ("id", "kind", "host", "gpu", "start", "end", "severity", "klass", "summary", "evidence",
                  "top_frames", "open", "updated")


def upsert_events(con, events: list[Event]) -> int:
    """Insert or replace ``events`` by id in one transaction; returns how many."""
    if not events:
        return 0
    latest = {e.id: e for e in events}
    now = time.time()
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM events WHERE id IN (SELECT unnest(?))", [list(latest)])
        insert_rows(con, "events", _EVENT_COLUMNS, [
            (e.id, e.kind, e.host, e.gpu, e.start, e.end, e.severity, e.klass, e.summary,
             orjson.dumps(e.evidence, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
             orjson.dumps(e.top_frames).decode(), e.open, now)
            for e in latest.values()])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return len(latest)


def delete_events(con, ids: list[str]) -> int:
    """Remove events by id (an open finding that later data re-segmented away)."""
    if not ids:
        return 0
    con.execute("DELETE FROM events WHERE id IN (SELECT unnest(?))", [list(ids)])
    return len(ids)


def replace_windows(con, gpu: int, t_from: float, t_to: float, windows: list[Window]) -> int:
    """Replace the stored windows of ``gpu`` that start in [t_from, t_to) with ``windows``."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute('DELETE FROM windows WHERE gpu = ? AND start >= ? AND start < ?', [gpu, t_from, t_to])
        insert_rows(con, "windows", wf.COLUMNS, wf.encode_rows(windows))
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return len(windows)


def _event_row(r: tuple) -> dict[str, Any]:
    d = dict(zip(_EVENT_COLUMNS, r))
    d["evidence"] = orjson.loads(d["evidence"] or "{}")
    d["top_frames"] = orjson.loads(d["top_frames"] or "[]")
    d["class"] = d.pop("klass")
    d["duration_s"] = round(d["end"] - d["start"], 3)
    return d


def events(cur, t_from: float, t_to: float, *, kind: str | None = None, gpu: int | None = None,
           limit: int = 1000) -> list[dict[str, Any]]:
    """Events overlapping [t_from, t_to), newest first."""
    params: list = [t_to, t_from]
    extra = ""
    if kind is not None:
        extra += " AND kind = ?"
        params.append(kind)
    if gpu is not None:
        extra += " AND gpu = ?"
        params.append(gpu)
    cols = ", ".join(f'"{c}"' for c in _EVENT_COLUMNS)
    rows = cur.execute(f'SELECT {cols} FROM events WHERE start < ? AND "end" >= ?{extra} '
                       f'ORDER BY start DESC LIMIT {int(limit)}', params).fetchall()
    return [_event_row(r) for r in rows]


def event(cur, event_id: str) -> dict[str, Any] | None:
    cols = ", ".join(f'"{c}"' for c in _EVENT_COLUMNS)
    row = cur.execute(f"SELECT {cols} FROM events WHERE id = ?", [event_id]).fetchone()
    return _event_row(row) if row else None


def event_counts(cur) -> dict[str, int]:
    """Events stored per kind (all time)."""
    return {k: int(n) for k, n in cur.execute("SELECT kind, count(*) FROM events GROUP BY 1").fetchall()}


def windows(cur, t_from: float, t_to: float, gpu: int | None = None, limit: int = 200_000) -> list[dict[str, Any]]:
    """Analysis windows starting in [t_from, t_to), by GPU then oldest first, at most ``limit``."""
    params: list = [t_from, t_to]
    extra = ""
    if gpu is not None:
        extra = " AND gpu = ?"
        params.append(gpu)
    rows = cur.execute(f'SELECT start, "end", gpu, klass, {wf.select_sql()} FROM windows '
                       f"WHERE start >= ? AND start < ?{extra} ORDER BY gpu, start LIMIT {int(limit)}", params).fetchall()
    decode = wf.Decoder()
    last = len(wf.NAMES) + 5
    return [{"start": r[0], "end": r[1], "gpu": r[2], "class": r[3], "features": decode(r[4], r[5:last], r[last])}
            for r in rows]


def class_seconds(cur, t_from: float, t_to: float) -> dict[tuple[int, str], float]:
    """Seconds per (gpu, class) in the range."""
    rows = cur.execute('SELECT gpu, klass, sum("end" - start) FROM windows WHERE start >= ? AND start < ? '
                       "GROUP BY 1, 2", [t_from, t_to]).fetchall()
    return {(g, k): float(s) for g, k, s in rows}
