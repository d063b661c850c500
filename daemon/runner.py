"""Runs collectors: times each run, records its outcome, isolates failures, hands off batches.

The runner (not the collector) owns the bookkeeping node_exporter-style: per collector the
last success, duration, last error, runs, failures, and whether the last run had no data.
An exception in one collector is logged once per distinct message, counted and shown in
health; it never reaches the scheduler or the other collectors.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from infersight.daemon.collectors.base import Collector
from infersight.daemon.logfmt import kv
from infersight.storage.model import Batch

log = logging.getLogger("infersight.runner")


@dataclass
class CollectorStatus:
    """What health shows for one collector. Times are Unix seconds, durations seconds."""

    name: str
    interval_s: float
    runs: int = 0
    failures: int = 0
    ok: bool | None = None           # None until the first run finished
    no_data: str | None = None       # why the last successful run had nothing (not a failure)
    last_run: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    duration_s: float | None = None
    errors_reported: int = 0         # per-item errors inside successful runs
    last_item_errors: list[str] = field(default_factory=list)
    batches_dropped: int = 0
    # runs not started because the last was still running at the next slot (a slow run on a
    # busy host): counted here instead of the scheduler's warning line every time
    overruns: int = 0

    def as_dict(self) -> dict:
        return {
            "ok": self.ok, "no_data": self.no_data, "last_success": self.last_success,
            "last_error": self.last_error, "last_error_at": self.last_error_at,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 6),
            "runs": self.runs, "failures": self.failures, "interval_s": self.interval_s,
            "item_errors": self.errors_reported, "recent_item_errors": self.last_item_errors[-5:],
            "batches_dropped": self.batches_dropped, "overruns": self.overruns,
        }


class Runner:
    """Wraps collectors for the scheduler. ``sink(batch) -> bool`` stores a batch (False: dropped)."""

    def __init__(self, collectors: list[Collector], sink: Callable[[Batch], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.collectors = {c.name: c for c in collectors}
        self.status = {c.name: CollectorStatus(c.name, c.interval_s) for c in collectors}
        self._sink = sink
        self._clock = clock
        self._logged: dict[str, str] = {}
        self._running: set[str] = set()

    async def run_once(self, name: str) -> Batch | None:
        """One run of collector ``name``; returns its batch, or None when it failed or was busy."""
        if name in self._running:  # never two runs of one collector at once
            return None
        collector, st = self.collectors[name], self.status[name]
        self._running.add(name)
        now = self._clock()
        started = time.perf_counter()
        try:
            batch = await collector.collect(now)
            if not isinstance(batch, Batch):
                raise TypeError(f"collect() returned {type(batch).__name__}, not Batch")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            st.duration_s = time.perf_counter() - started
            st.runs += 1
            st.failures += 1
            st.ok = False
            st.last_run = now
            st.last_error = f"{type(exc).__name__}: {exc}"
            st.last_error_at = now
            if self._logged.get(name) != st.last_error:
                self._logged[name] = st.last_error
                log.error("event=collector_failed collector=%s error=%s", name, kv(st.last_error), exc_info=exc)
            return None
        finally:
            self._running.discard(name)
        st.duration_s = time.perf_counter() - started
        st.runs += 1
        st.ok = True
        st.last_run = now
        st.last_success = now
        st.no_data = batch.no_data
        if name in self._logged:
            log.info("event=collector_recovered collector=%s", name)
            del self._logged[name]
        if batch.errors:
            st.errors_reported += len(batch.errors)
            st.last_item_errors = (st.last_item_errors + batch.errors)[-20:]
        if batch.row_count() and not self._sink(batch):
            st.batches_dropped += 1
        return batch

    def healthy(self) -> bool:
        """True when no collector's last run failed."""
        return all(s.ok is not False for s in self.status.values())
