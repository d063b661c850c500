"""The alert outbox and the alerts' grouping state: write commands and queries.

Messages wait in table ``outbox`` (status ``pending``) until a delivery succeeds
(``delivered``) or is abandoned (``given_up``); both carry ``done_at`` so retention deletes
them by age. Write functions run on the writer thread through ``Store.write`` (never
dropped); an enqueue and the grouping state it follows from commit in one transaction, so
a crash leaves both or neither. Times are Unix seconds.
"""
from __future__ import annotations

from typing import Any

from infersight.storage.append import insert_rows

_MESSAGE_COLUMNS = ("id", "event_id", "target", "kind", "payload", "created", "next_attempt", "attempts", "status",
                    "last_error", "done_at", "delivery", "format", "state")
GROUP_COLUMNS = ("target", "kind", "host", "gpu", "status", "severity", "event", "first_start", "last_end",
                 "closed_until", "open", "occurrences", "announced", "ongoing_announced", "settle_since", "last_sent",
                 "updated")
_MESSAGE_INPUT = ("event_id", "target", "kind", "payload", "delivery", "format", "state")


def commit(con, messages: list[dict[str, Any]], groups: list[dict[str, Any]], now: float) -> list[int]:
    """Enqueue ``messages`` (dicts with the keys of _MESSAGE_INPUT) as pending, due now, and
    replace the stored state of each group in ``groups`` (dicts with GROUP_COLUMNS except
    ``updated``), in one transaction. Returns the new messages' ids in order."""
    con.execute("BEGIN TRANSACTION")
    try:
        first = int(con.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchall()[0][0]) + 1
        ids = list(range(first, first + len(messages)))
        insert_rows(con, "outbox", _MESSAGE_COLUMNS, [
            (i, m["event_id"], m["target"], m["kind"], m["payload"], now, now, 0, "pending", None, None,
             m["delivery"], m["format"], m["state"]) for i, m in zip(ids, messages)])
        for g in groups:
            con.execute("DELETE FROM alert_groups WHERE target = ? AND kind = ? AND host = ? "
                        "AND gpu IS NOT DISTINCT FROM ?", [g["target"], g["kind"], g["host"], g["gpu"]])
        insert_rows(con, "alert_groups", GROUP_COLUMNS,
                    [tuple(g[c] for c in GROUP_COLUMNS[:-1]) + (now,) for g in groups])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return ids


def load_groups(cur) -> list[dict[str, Any]]:
    """Every stored group state (dicts keyed by GROUP_COLUMNS)."""
    cols = ", ".join(f'"{c}"' for c in GROUP_COLUMNS)
    return [dict(zip(GROUP_COLUMNS, r)) for r in cur.execute(f"SELECT {cols} FROM alert_groups").fetchall()]


def forget_groups(con, keep_targets: list[str]) -> int:
    """Delete the group state of targets not in ``keep_targets`` (removed from the config)."""
    return con.execute("DELETE FROM alert_groups WHERE NOT list_contains(?, target)",
                       [list(keep_targets)]).fetchall()[0][0]


def heads(cur) -> list[dict[str, Any]]:
    """The oldest pending message of every target (delivery is in order per target)."""
    rows = cur.execute("""
        SELECT id, target, format, state, kind, event_id, payload, delivery, created, next_attempt, attempts
        FROM outbox WHERE status = 'pending'
        QUALIFY row_number() OVER (PARTITION BY target ORDER BY id) = 1
        ORDER BY id""").fetchall()
    names = ("id", "target", "format", "state", "kind", "event_id", "payload", "delivery", "created",
             "next_attempt", "attempts")
    return [dict(zip(names, r)) for r in rows]


def mark_delivered(con, message_id: int, now: float) -> None:
    con.execute("UPDATE outbox SET status = 'delivered', attempts = attempts + 1, done_at = ?, next_attempt = NULL "
                "WHERE id = ? AND status = 'pending'", [now, message_id])


def reschedule(con, message_id: int, next_attempt: float, error: str) -> None:
    """Count a failed attempt and set when the next one is due."""
    con.execute("UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ? "
                "WHERE id = ? AND status = 'pending'", [next_attempt, error, message_id])


def give_up(con, message_id: int, now: float, error: str, attempted: bool) -> None:
    """Abandon one message with the reason; ``attempted`` counts the attempt that decided it."""
    con.execute("UPDATE outbox SET status = 'given_up', attempts = attempts + ?, done_at = ?, next_attempt = NULL, "
                "last_error = ? WHERE id = ? AND status = 'pending'", [1 if attempted else 0, now, error, message_id])


def give_up_older(con, created_before: float, now: float) -> list[dict[str, Any]]:
    """Abandon every pending message created before ``created_before``; returns them (id,
    target, attempts and the recorded reason, "gave up after N attempts: <last error>"), oldest first."""
    rows = con.execute("""
        UPDATE outbox SET status = 'given_up', done_at = ?, next_attempt = NULL,
            last_error = 'gave up after ' || attempts || ' attempts: ' || coalesce(last_error, 'never attempted')
        WHERE status = 'pending' AND created < ?
        RETURNING id, target, attempts, last_error""", [now, created_before]).fetchall()
    return [dict(zip(("id", "target", "attempts", "last_error"), r)) for r in sorted(rows)]


def give_up_targets(con, keep_targets: list[str], now: float) -> int:
    """Abandon pending messages of targets no longer configured."""
    return con.execute("""
        UPDATE outbox SET status = 'given_up', done_at = ?, next_attempt = NULL,
            last_error = 'target no longer configured'
        WHERE status = 'pending' AND NOT list_contains(?, target)""", [now, list(keep_targets)]).fetchall()[0][0]


def summary(cur) -> dict[str, dict[str, Any]]:
    """Per target: pending, delivered and given_up counts, the oldest pending message's
    creation time, the last delivery time and the newest recorded error."""
    out: dict[str, dict[str, Any]] = {}
    rows = cur.execute("""
        SELECT target,
            count(*) FILTER (WHERE status = 'pending'),
            count(*) FILTER (WHERE status = 'delivered'),
            count(*) FILTER (WHERE status = 'given_up'),
            min(created) FILTER (WHERE status = 'pending'),
            max(done_at) FILTER (WHERE status = 'delivered'),
            arg_max(last_error, id) FILTER (WHERE last_error IS NOT NULL)
        FROM outbox GROUP BY target""").fetchall()
    for target, pending, delivered, given_up, oldest, last_ok, last_error in rows:
        out[target] = {"pending": pending, "delivered": delivered, "given_up": given_up,
                       "oldest_pending_created": oldest, "last_delivered_at": last_ok, "last_error": last_error}
    return out


def messages(cur, target: str | None = None) -> list[dict[str, Any]]:
    """Every stored message (oldest first), for tests and inspection."""
    cols = ", ".join(f'"{c}"' for c in _MESSAGE_COLUMNS)
    where, params = ("WHERE target = ?", [target]) if target is not None else ("", [])
    rows = cur.execute(f"SELECT {cols} FROM outbox {where} ORDER BY id", params).fetchall()
    return [dict(zip(_MESSAGE_COLUMNS, r)) for r in rows]
