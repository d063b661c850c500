"""Pushes the profiled processes' stacks to a Grafana Pyroscope server (``POST /ingest``).

Every ``interval_s`` the stacks of the last whole interval ending ``lag_s`` ago (py-spy
writes a recording only when it ends) become one push per target group (role and GPUs,
storage/pyroscope_queries.py), as Pyroscope's HTTP ingest API documents it:

    POST {url}/ingest?name={service}.cpu{host=H,role=R,gpu=G,service=S}&from=F&until=U
         &format=folded&sampleRate=HZ&spyName=pyspy&units=samples&aggregationType=sum
    body: "frame;frame;frame count" lines, root first (storage.render.folded)

``from``/``until`` are whole Unix seconds, ``until`` exclusive; only active samples are sent
(py-spy's own Pyroscope integration sends no idle threads either). ``gpu`` is the GPU
indices joined by ``-`` (``none`` without a GPU): Pyroscope reads ``,`` and ``}`` inside
``name`` as separators, so label values keep to letters, digits and ``_.:-``.

Pushes wait in a bounded buffer (``max_buffered``; the oldest is dropped and counted when
full) and leave in order. A connection error, timeout, 408, 429 or 5xx stops sending and
backs off: the next attempt waits ``interval_s`` doubled per consecutive failure, at most
``max_backoff_s`` (or the server's Retry-After when longer, within the same bound); the
failed push is retried first. Any other 4xx means the push itself is wrong: it is dropped,
counted and logged once, never retried.
"""
from __future__ import annotations

import logging
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import aiohttp

from infersight.daemon.config.load import Config
from infersight.daemon.logfmt import kv
from infersight.storage import pyroscope_queries as q
from infersight.storage import render
from infersight.storage.store import Store

log = logging.getLogger("infersight.pyroscope")

SPY_NAME = "pyspy"
MAX_WINDOWS_PER_TICK = 20   # a late tick catches up this many intervals; older ones are skipped
_RETRY_STATUSES = {408, 429}


@dataclass(frozen=True)
class Push:
    """One request: the application name with labels, the time range and the folded body."""

    name: str
    labels: dict[str, str]
    t_from: int
    t_until: int
    body: str


def label_value(text: str) -> str:
    """A value Pyroscope's ``name`` parser keeps intact (no ``,``, ``}``, ``=`` or spaces)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.:-]", "_", text.strip())
    return cleaned or "none"


def app_name(service: str, labels: dict[str, str]) -> str:
    """``{service}.cpu{k=v,...}`` with keys sorted."""
    inner = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return f"{service}.cpu{{{inner}}}"


class PyroscopePusher:
    """The daemon component (``name``, ``interval_s``, ``tick``, ``start``, ``close``, ``health``)."""

    name = "pyroscope"

    def __init__(self, config: Config, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.cfg = config.pyroscope
        self.host = config.host
        self.rate_hz = config.collectors.stacks.rate_hz
        self.store = store
        self.clock = clock
        self.interval_s = self.cfg.interval_s
        self.ingest_url = self.cfg.url.rstrip("/") + "/ingest"
        self.buffer: deque[Push] = deque()
        self.next_from: int | None = None
        self.next_attempt = 0.0
        self.failures_in_row = 0
        self.pushed = self.failed = self.dropped = self.rejected = 0
        self.last_error: str | None = None
        self.last_rejection: str | None = None   # kept after later pushes succeed (health shows it)
        self.last_success: float | None = None
        self._session: aiohttp.ClientSession | None = None
        self._logged: str | None = None

    async def start(self) -> None:
        headers = {"User-Agent": "infersight"}
        if self.cfg.auth_token:
            headers["Authorization"] = f"Bearer {self.cfg.auth_token}"
        if self.cfg.tenant_id:
            headers["X-Scope-OrgID"] = self.cfg.tenant_id
        self._session = aiohttp.ClientSession(headers=headers,
                                              timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def tick(self) -> None:
        """Queue the intervals that became complete, then send what the backoff allows."""
        now = self.clock()
        try:
            await self.collect(now)
        except Exception as exc:
            self._problem(f"reading stacks failed: {type(exc).__name__}: {exc}")
        await self.send(now)

    # -- building pushes ----------------------------------------------------------------------
    async def collect(self, now: float) -> int:
        """Queue one push per target group for every whole interval ending by ``now - lag_s``."""
        step = max(1, int(round(self.interval_s)))
        until = int(now - self.cfg.lag_s)
        if self.next_from is None or until - self.next_from > MAX_WINDOWS_PER_TICK * step:
            self.next_from = until - step   # start (or restart after a long stall) with the latest interval
        queued = 0
        while self.next_from + step <= until:
            t_from, t_to = self.next_from, self.next_from + step
            groups = await self.store.read(q.group_profiles, float(t_from), float(t_to))
            for g in groups:
                body = render.folded(g.profile)
                if body:
                    self._enqueue(self._push(g, t_from, t_to, body))
                    queued += 1
            self.next_from = t_to
        return queued

    def _push(self, g: q.GroupProfile, t_from: int, t_to: int, body: str) -> Push:
        labels = {"host": label_value(self.host), "role": label_value(g.role),
                  "gpu": "-".join(str(i) for i in g.gpus) or "none", "service": label_value(self.cfg.service)}
        return Push(app_name(self.cfg.service, labels), labels, t_from, t_to, body)

    def _enqueue(self, push: Push) -> None:
        while len(self.buffer) >= self.cfg.max_buffered:
            self.buffer.popleft()
            self.dropped += 1
        self.buffer.append(push)

    # -- sending -------------------------------------------------------------------------------
    def params(self, push: Push) -> dict[str, str]:
        return {"name": push.name, "from": str(push.t_from), "until": str(push.t_until), "format": "folded",
                "sampleRate": str(self.rate_hz), "spyName": SPY_NAME, "units": "samples",
                "aggregationType": "sum"}

    async def send(self, now: float) -> int:
        """Send buffered pushes in order until one fails; returns how many were accepted."""
        if now < self.next_attempt or self._session is None:
            return 0
        sent = 0
        while self.buffer:
            push = self.buffer[0]
            try:
                async with self._session.post(self.ingest_url, params=self.params(push), data=push.body.encode(),
                                              headers={"Content-Type": "text/plain; charset=utf-8"}) as resp:
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
                    detail = (await resp.text())[:200] if status >= 300 else ""
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._fail(now, f"{type(exc).__name__}: {exc}", None)
                return sent
            if 200 <= status < 300:
                self.buffer.popleft()
                self.pushed += 1
                sent += 1
                self.failures_in_row = 0
                self.last_success = now
                if self.last_error is not None:
                    log.info("event=pyroscope_recovered url=%s", kv(self.ingest_url))
                self.last_error = self._logged = None
                continue
            if status >= 500 or status in _RETRY_STATUSES:
                self._fail(now, f"HTTP {status}: {detail}", retry_after)
                return sent
            self.buffer.popleft()
            self.rejected += 1
            self.last_rejection = f"HTTP {status}: {detail}"
            self._problem(f"push rejected with {self.last_rejection}")
        return sent

    def _fail(self, now: float, error: str, retry_after: str | None) -> None:
        self.failed += 1
        self.failures_in_row += 1
        wait = min(self.cfg.max_backoff_s, self.interval_s * 2 ** (self.failures_in_row - 1))
        if retry_after is not None and retry_after.strip().isdigit():
            wait = min(self.cfg.max_backoff_s, max(wait, float(retry_after)))
        self.next_attempt = now + wait
        self._problem(f"{error} (retry in {wait:.0f} s, {len(self.buffer)} pushes buffered)", key=error)

    def _problem(self, message: str, key: str | None = None) -> None:
        self.last_error = message
        if self._logged != (key or message):
            self._logged = key or message
            log.error("event=pyroscope_push_failed url=%s error=%s", kv(self.ingest_url), kv(message))

    # -- health -------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return {"ok": self.last_error is None, "last_error": self.last_error, "url": self.ingest_url,
                "buffered": len(self.buffer), "pushed": self.pushed, "failed": self.failed,
                "dropped": self.dropped, "rejected": self.rejected, "last_rejection": self.last_rejection,
                "last_success": self.last_success,
                "next_attempt": self.next_attempt if self.failures_in_row else None}

    def metrics(self) -> list[tuple[str, str, str, dict[str, str], float]]:
        doc = "Pyroscope pushes by outcome: sent (accepted), failed (attempt to retry), dropped (buffer full), " \
              "rejected (4xx, not retried)"
        out = [("infersight_pyroscope_pushes_total", "counter", doc, {"outcome": outcome}, value)
               for outcome, value in (("sent", self.pushed), ("failed", self.failed), ("dropped", self.dropped),
                                      ("rejected", self.rejected))]
        out.append(("infersight_pyroscope_buffered_pushes", "gauge", "Pushes waiting to be sent", {},
                    len(self.buffer)))
        return out
