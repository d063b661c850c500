"""The persistent outbox as the alerts component uses it: enqueue, what is due, and the
outcome of each attempt (delivered, retried later with backoff, or given up).

Everything goes through the store (``storage/outbox.py`` holds the SQL); writes are store
commands, never dropped, so a message enqueued before a crash or SIGKILL is still pending
after the restart. Delivery is at least once: a crash between a receiver's 2xx and the
write that records it sends the message again, with the same delivery id.
"""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from infersight.daemon.alerts.formats import Message, render
from infersight.daemon.alerts.grouping import Decision, Grouper
from infersight.storage import outbox as q
from infersight.storage.store import Store


def backoff_delay(attempts: int, initial_s: float, max_s: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1 = the first): exponential
    from ``initial_s``, capped at ``max_s``, with "equal jitter" (half fixed, half random)
    so targets that failed together do not retry in lockstep."""
    cap = max(initial_s, max_s)
    base = min(cap, initial_s * 2.0 ** max(0, attempts - 1))
    return base / 2 + rng() * base / 2


@dataclass(frozen=True)
class Pending:
    """One message due for delivery (the oldest pending one of its target)."""

    id: int
    target: str
    format: str
    state: str
    kind: str
    event_id: str
    body: bytes              # the exact bytes to send (and sign)
    delivery: str
    created: float
    next_attempt: float
    attempts: int


class Outbox:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def commit(self, decision: Decision, messages: list[tuple[str, str, Message]], now: float) -> list[int]:
        """Persist ``decision``'s group states and enqueue ``messages`` ((target, format,
        message)) in one transaction; returns the new message ids."""
        rows = [{"event_id": m.event.get("id", ""), "target": target, "kind": m.event.get("kind", ""),
                 "payload": orjson.dumps(render(fmt, m)).decode(), "delivery": m.delivery, "format": fmt,
                 "state": m.state} for target, fmt, m in messages]
        groups = [Grouper.to_row(k, s) for k, s in decision.changed.items()]
        if not rows and not groups:
            return []
        return await self.store.write(q.commit, rows, groups, now)

    async def load_groups(self) -> list[dict[str, Any]]:
        return await self.store.read(q.load_groups)

    async def forget_targets(self, keep: list[str], now: float) -> tuple[int, int]:
        """Drop group state and give up pending messages of targets no longer configured."""
        forgotten = await self.store.write(q.forget_groups, keep)
        given_up = await self.store.write(q.give_up_targets, keep, now)
        return forgotten, given_up

    async def heads(self) -> list[Pending]:
        rows = await self.store.read(q.heads)
        return [Pending(id=r["id"], target=r["target"], format=r["format"], state=r["state"], kind=r["kind"],
                        event_id=r["event_id"], body=r["payload"].encode(), delivery=r["delivery"],
                        created=r["created"], next_attempt=r["next_attempt"], attempts=r["attempts"]) for r in rows]

    async def delivered(self, message_id: int, now: float) -> None:
        await self.store.write(q.mark_delivered, message_id, now)

    async def retry_later(self, message_id: int, next_attempt: float, error: str) -> None:
        await self.store.write(q.reschedule, message_id, next_attempt, error)

    async def give_up(self, message_id: int, now: float, error: str, *, attempted: bool) -> None:
        await self.store.write(q.give_up, message_id, now, error, attempted)

    async def give_up_older(self, created_before: float, now: float) -> list[dict[str, Any]]:
        return await self.store.write(q.give_up_older, created_before, now)

    async def summary(self) -> dict[str, dict[str, Any]]:
        return await self.store.read(q.summary)


def new_delivery_id() -> str:
    """A unique id per message (X-Infersight-Delivery; receivers dedupe on it)."""
    return uuid.uuid4().hex
