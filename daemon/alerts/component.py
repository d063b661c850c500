"""The alerts daemon component: findings in, grouped messages out through the outbox.

Wiring: :meth:`AlertsComponent.for_daemon` follows the analyzer (its ``on_events``
callbacks run after every analysis tick with the events it wrote); other sources of
findings call :meth:`AlertsComponent.submit`. Each batch is folded by the
:class:`~.grouping.Grouper`; the messages it decides on and the new group states commit in
one transaction. :meth:`tick` (every ``interval_s``) resolves settled groups, gives up
messages older than ``alerts.max_age_s``, and delivers what is due, oldest first per
target, targets in parallel, each attempt recorded before the next.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Callable

from infersight.daemon.alerts import formats
from infersight.daemon.alerts.grouping import Decision, Grouper
from infersight.daemon.alerts.outbox import Outbox, Pending, backoff_delay, new_delivery_id
from infersight.daemon.alerts.sender import Redactor, Result, Sender, redact_url
from infersight.daemon.config.load import Config
from infersight.daemon.logfmt import kv
from infersight.storage.model import Event
from infersight.storage.store import Store

log = logging.getLogger("infersight.alerts")

DELIVERY_INTERVAL_S = 1.0   # how often due messages are looked for (a retry is at most this late)
MAX_ROUNDS_PER_TICK = 20    # messages per target per tick at most, so one tick stays short
CLOSE_WAIT_S = 2.0          # within the daemon's 4 s shutdown budget


class AlertsComponent:
    name = "alerts"
    interval_s = DELIVERY_INTERVAL_S

    def __init__(self, config: Config, store: Store, *, sender: Sender | None = None,
                 clock: Callable[[], float] = time.time, rng: Callable[[], float] = random.random) -> None:
        self.cfg = config.alerts
        self.targets = {w.name: w for w in self.cfg.webhooks}
        self.external_url = config.web.external_url
        self.listen: Callable[[], str] = lambda: config.web.listen
        self.outbox = Outbox(store)
        self.sender = sender or Sender(self.cfg.timeout_s, clock)
        self.clock = clock
        self.rng = rng
        self.grouper = Grouper(self.cfg.webhooks, cooldown_s=self.cfg.cooldown_s,
                               send_resolved=self.cfg.send_resolved, max_age_s=self.cfg.max_age_s)
        self._scrubbers = [Redactor(w.url, w.secret) for w in self.cfg.webhooks]
        self._group_lock = asyncio.Lock()
        self._deliver_lock = asyncio.Lock()
        self._analyzer: Any = None
        self._analysed_until: Any = None
        self._summary: dict[str, dict[str, Any]] = {}
        self._last_outcome: dict[str, str] = {}
        self.last_error: str | None = None
        self.enqueued = 0
        self.attempts = 0

    @classmethod
    def for_daemon(cls, daemon: Any) -> "AlertsComponent":
        """The component of a running Daemon, following its analyzer when one runs."""
        component = cls(daemon.config, daemon.agent.store)
        # links name the address the web server really bound (web.listen may say port 0)
        component.listen = lambda: (daemon.site_url or "").partition("://")[2] or daemon.config.web.listen
        analyzer = daemon.agent.extras.get("analysis")
        if analyzer is not None:
            component.follow(analyzer)
        return component

    def follow(self, analyzer: Any) -> None:
        """Take the findings of ``analyzer`` (an object with ``on_events`` and ``done_until``)."""
        self._analyzer = analyzer
        analyzer.on_events.append(self._on_analysis)

    async def _on_analysis(self, events: list[Event]) -> None:
        done = getattr(self._analyzer, "done_until", None)
        progressed = done is not None and done != self._analysed_until
        self._analysed_until = done
        await self.submit(events, progressed=progressed)

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the grouping state and drop what belongs to targets no longer configured."""
        for row in await self.outbox.load_groups():
            key, state = Grouper.from_row(row)
            if key.target in self.targets:
                self.grouper.states[key] = state
        forgotten, given_up = await self.outbox.forget_targets(list(self.targets), self.clock())
        if given_up:
            log.warning("event=alerts_given_up reason=target_removed messages=%d", given_up)
        await self.sender.start()
        self._summary = await self.outbox.summary()
        log.info("event=alerts_started targets=%s groups=%d",
                 kv(",".join(f"{w.name}:{w.format}:{redact_url(w.url)}" for w in self.cfg.webhooks)),
                 len(self.grouper.states))

    async def close(self) -> None:
        # an attempt in flight gets a moment to finish and be recorded; one that does not stays
        # pending and goes out again after the restart (delivery is at least once)
        try:
            await asyncio.wait_for(self._deliver_lock.acquire(), CLOSE_WAIT_S)
            self._deliver_lock.release()
        except asyncio.TimeoutError:
            log.warning("event=alerts_close_while_sending")
        await self.sender.close()

    # -- findings in --------------------------------------------------------------------------------
    async def submit(self, events: list[Event], *, progressed: bool = False) -> int:
        """Fold ``events`` in and enqueue the messages they cause; returns how many. Never
        raises: a failure is logged and shown in health. ``progressed``: see Grouper.fold."""
        try:
            async with self._group_lock:
                now = self.clock()
                return await self._commit(self.grouper.fold(events, now, progressed), now)
        except Exception as exc:
            self._failed("alerts_enqueue_failed", exc)
            return 0

    async def _commit(self, decision: Decision, now: float) -> int:
        if not decision:
            return 0
        messages = []
        base = formats.base_url(self.external_url, self.listen())
        for notice in decision.notices:
            target = self.targets[notice.key.target]
            g, ev = notice.group, notice.group.event
            start, end = min(g.first_start, ev["start"]), max(g.last_end, ev["end"])
            messages.append((target.name, target.format, formats.Message(
                state=notice.state, event=ev, span_start=g.first_start, span_end=g.last_end,
                occurrences=g.occurrences, link=formats.ui_link(base, start, end, ev.get("gpu"), ev["id"]),
                created=now, delivery=new_delivery_id())))
        await self.outbox.commit(decision, messages, now)
        self.grouper.apply(decision)
        self.enqueued += len(messages)
        for target, _, m in messages:
            log.info("event=alert_enqueued target=%s state=%s kind=%s host=%s gpu=%s event_id=%s delivery=%s",
                     kv(target), m.state, kv(m.event.get("kind")), kv(m.event.get("host")), m.event.get("gpu"),
                     kv(m.event.get("id")), m.delivery)
        return len(messages)

    # -- messages out ------------------------------------------------------------------------------------
    async def tick(self) -> None:
        """Resolve settled groups, give up old messages, deliver what is due. Never raises."""
        async with self._deliver_lock:
            try:
                await self._tick()
                self.last_error = None
            except Exception as exc:
                self._failed("alerts_tick_failed", exc)

    async def _tick(self) -> None:
        async with self._group_lock:
            now = self.clock()
            await self._commit(self.grouper.expire(now), now)
        now = self.clock()
        for row in await self.outbox.give_up_older(now - self.cfg.max_age_s, now):
            self._last_outcome[row["target"]] = "given_up"
            log.warning("event=alert_given_up target=%s id=%s attempts=%s error=%s", kv(row["target"]), row["id"],
                        row["attempts"], kv(row["last_error"] or "never attempted"))
        for _ in range(MAX_ROUNDS_PER_TICK):
            now = self.clock()
            due = [h for h in await self.outbox.heads() if h.next_attempt is not None and h.next_attempt <= now]
            if not due:
                break
            await asyncio.gather(*(self._attempt(h) for h in due))
        self._summary = await self.outbox.summary()

    async def _attempt(self, msg: Pending) -> None:
        target = self.targets.get(msg.target)
        now = self.clock()
        if target is None or target.format != msg.format:
            why = "target no longer configured" if target is None else \
                f"target format changed from {msg.format} to {target.format}"
            await self.outbox.give_up(msg.id, now, why, attempted=False)
            log.warning("event=alert_given_up target=%s id=%s error=%s", kv(msg.target), msg.id, kv(why))
            return
        self.attempts += 1
        result: Result = await self.sender.send(target, msg.body, msg.delivery)
        now = self.clock()
        dest = redact_url(target.url)
        self._last_outcome[target.name] = result.outcome
        if result.outcome == "delivered":
            await self.outbox.delivered(msg.id, now)
            log.info("event=alert_delivered target=%s dest=%s id=%s state=%s event_id=%s attempts=%d status=%s",
                     kv(target.name), dest, msg.id, msg.state, kv(msg.event_id), msg.attempts + 1, result.status)
        elif result.outcome == "give_up":
            await self.outbox.give_up(msg.id, now, result.error or "refused", attempted=True)
            log.warning("event=alert_given_up target=%s dest=%s id=%s attempts=%d error=%s", kv(target.name), dest,
                        msg.id, msg.attempts + 1, kv(result.error))
        else:
            if result.retry_after is not None:
                delay = min(result.retry_after, self.cfg.max_age_s)   # the receiver said when
            else:
                delay = backoff_delay(msg.attempts + 1, self.cfg.backoff_initial_s, self.cfg.backoff_max_s, self.rng)
            await self.outbox.retry_later(msg.id, now + delay, result.error or "failed")
            log.warning("event=alert_retry target=%s dest=%s id=%s attempts=%d retry_in_s=%.2f error=%s",
                        kv(target.name), dest, msg.id, msg.attempts + 1, delay, kv(result.error))

    # -- state ------------------------------------------------------------------------------------------
    def _failed(self, event: str, exc: BaseException) -> None:
        self.last_error = self.scrub(f"{type(exc).__name__}: {exc}")
        log.error("event=%s error=%s", event, kv(self.last_error))

    def scrub(self, text: str) -> str:
        """``text`` without any target's URL or secret."""
        for scrub in self._scrubbers:
            text = scrub(text)
        return text

    def health(self) -> dict[str, Any]:
        """Per target: format, destination (scheme and host only), outbox counts, last error."""
        targets = {}
        for name, w in self.targets.items():
            s = self._summary.get(name, {})
            targets[name] = {"format": w.format, "dest": redact_url(w.url), "min_severity": w.min_severity,
                             "pending": s.get("pending", 0), "delivered": s.get("delivered", 0),
                             "given_up": s.get("given_up", 0), "last_delivered_at": s.get("last_delivered_at"),
                             "oldest_pending_created": s.get("oldest_pending_created"),
                             "last_error": self.scrub(s["last_error"]) if s.get("last_error") else None,
                             "last_outcome": self._last_outcome.get(name)}
        statuses = [s.status for s in self.grouper.states.values()]
        return {"ok": self.last_error is None and all(o == "delivered" for o in self._last_outcome.values()),
                "last_error": self.last_error, "enqueued": self.enqueued, "attempts": self.attempts,
                "groups": {"firing": statuses.count("firing"), "settling": statuses.count("settling")},
                "targets": targets}
