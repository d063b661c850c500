"""The single writer thread: the only place that writes to the DuckDB file.

Two inputs, drained in order of arrival:
- sample batches through a bounded queue (``submit``): when it is full the batch is
  dropped and counted, never blocking a collector;
- write commands (``call``): functions run on the writer's connection whose result the
  caller awaits. Commands are never dropped; they carry events and the alert outbox, which
  must not be lost.

Batches are appended in one transaction per flush, at most ``flush_interval_s`` after
they arrive. A failed flush (disk full, I/O error) is counted, its batches are kept and
retried on the next flush up to a bound, then dropped and counted, so the agent degrades
instead of crashing. A batch the schema refuses (bad data) is found by writing the batches
of a failed flush one by one, and dropped alone.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from infersight.storage.append import append_batches
from infersight.storage.intern import Interner
from infersight.storage.model import Batch

log = logging.getLogger("infersight.storage")

_STOP = object()
_MAX_RETAINED_BATCHES = 4096  # batches kept across failed flushes before dropping


@dataclass
class WriterStats:
    """Counters the health endpoint and /metrics show. Rows are collector records."""

    batches_written: int = 0
    rows_written: int = 0
    batches_dropped: int = 0
    rows_dropped: int = 0
    flushes: int = 0
    flush_failures: int = 0
    last_flush_s: float = 0.0
    last_flush_at: float | None = None
    last_error: str | None = None
    queue_depth: int = 0
    batches_rejected: int = 0       # dropped because the schema refused their data (also in batches_dropped)
    by_collector: dict[str, int] = field(default_factory=dict)


class Writer:
    """Owns the read-write connection; see the module docstring for the contract."""

    def __init__(self, con, *, host: str, queue_max_batches: int, flush_interval_s: float) -> None:
        self._con = con
        self._host = host
        self._interner = Interner(con)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_max_batches)
        self._flush_interval = flush_interval_s
        self._retained: deque[Batch] = deque()
        self._rejected_logged: set[str] = set()
        self.stats = WriterStats()
        self._stats_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="infersight-writer", daemon=True)
        self._thread.start()

    # -- producers (any thread) --------------------------------------------------------
    def submit(self, batch: Batch) -> bool:
        """Queue a batch without blocking; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(batch)
            return True
        except queue.Full:
            with self._stats_lock:
                self.stats.batches_dropped += 1
                self.stats.rows_dropped += batch.row_count()
            return False

    def call(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(con, *args)`` on the writer thread after the batches queued before it.

        Blocks only if the queue is full (commands are never dropped).
        """
        fut: Future = Future()
        self._queue.put((fn, args, fut))
        return fut

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued before this call is written."""
        self.call(lambda con: None).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread. Idempotent."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        pending: list[Batch] = []
        deadline: float | None = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is None:
                self._flush(pending)
                pending, deadline = [], None
                continue
            if item is _STOP:
                self._flush(pending)
                return
            if isinstance(item, Batch):
                pending.append(item)
                if deadline is None:
                    deadline = time.monotonic() + self._flush_interval
                continue
            # a command: write what came before it first, so it sees a consistent store
            self._flush(pending)
            pending, deadline = [], None
            fn, args, fut = item
            if fut.set_running_or_notify_cancel():
                # a command marked with intern.wants_interner (retention) keeps the interner in
                # step with the rows it deletes
                kwargs = {"interner": self._interner} if getattr(fn, "wants_interner", False) else {}
                try:
                    fut.set_result(fn(self._con, *args, **kwargs))
                except BaseException as exc:  # handed to the awaiting caller
                    self._rollback_if_open()
                    fut.set_exception(exc)

    def _flush(self, batches: list[Batch]) -> None:
        batches = list(self._retained) + batches
        self._retained.clear()
        with self._stats_lock:
            self.stats.queue_depth = self._queue.qsize()
        if not batches:
            return
        started = time.perf_counter()
        try:
            rows = self._append(batches)
        except Exception as exc:
            if len(batches) == 1:
                self._keep_for_retry(batches, exc)
            else:
                self._flush_singly(batches, exc, started)
            return
        self._count_written(batches, rows, started)

    def _append(self, batches: list[Batch]) -> int:
        """One transaction for ``batches``; rolled back (and re-raised) when it fails."""
        try:
            self._con.execute("BEGIN TRANSACTION")
            rows = append_batches(self._con, self._interner, batches, self._host)
            self._con.execute("COMMIT")
        except Exception:
            self._rollback_if_open()
            raise
        return rows

    def _flush_singly(self, batches: list[Batch], first_exc: Exception, started: float) -> None:
        """After a failed flush, write each batch alone so one bad batch cannot block the rest.

        A batch that fails alone while others succeed carries data the schema rejects (an
        out-of-range value): retrying cannot help, so it is dropped, counted and logged once
        per collector. When every batch fails, the store itself is failing (disk full): all
        are kept for the next flush.
        """
        failed: list[tuple[Batch, Exception]] = []
        for batch in batches:
            try:
                rows = self._append([batch])
            except Exception as exc:
                failed.append((batch, exc))
                continue
            self._count_written([batch], rows, started)
        if len(failed) == len(batches):
            self._keep_for_retry(batches, first_exc)
            return
        with self._stats_lock:
            self.stats.flush_failures += 1
            self.stats.batches_dropped += len(failed)
            self.stats.rows_dropped += sum(b.row_count() for b, _ in failed)
            self.stats.batches_rejected += len(failed)
        for batch, exc in failed:
            if batch.collector not in self._rejected_logged:
                self._rejected_logged.add(batch.collector)
                log.error("event=batch_rejected collector=%s error=%r", batch.collector, str(exc).splitlines()[0])

    def _count_written(self, batches: list[Batch], rows: int, started: float) -> None:
        with self._stats_lock:
            s = self.stats
            s.flushes += 1
            s.batches_written += len(batches)
            s.rows_written += rows
            s.last_flush_s = time.perf_counter() - started
            s.last_flush_at = time.time()
            s.last_error = None
            for b in batches:
                s.by_collector[b.collector] = s.by_collector.get(b.collector, 0) + b.row_count()

    def _keep_for_retry(self, batches: list[Batch], exc: Exception) -> None:
        keep = batches[-_MAX_RETAINED_BATCHES:]
        lost = batches[: len(batches) - len(keep)]
        self._retained.extend(keep)
        with self._stats_lock:
            first = self.stats.last_error is None
            self.stats.flush_failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            self.stats.batches_dropped += len(lost)
            self.stats.rows_dropped += sum(b.row_count() for b in lost)
        if first:
            log.error("event=flush_failed error=%r retained_batches=%d", str(exc), len(keep))

    def _rollback_if_open(self) -> None:
        try:
            self._con.execute("ROLLBACK")
        except Exception:  # no transaction was open
            pass

    def snapshot(self) -> WriterStats:
        """A copy of the counters (thread-safe)."""
        with self._stats_lock:
            s = self.stats
            s.queue_depth = self._queue.qsize() + len(self._retained)
            return WriterStats(**{**s.__dict__, "by_collector": dict(s.by_collector)})
