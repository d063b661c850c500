"""The single writer thread: the only place that writes to the DuckDB file.

Two inputs, drained in order of arrival:
- sample batches through a bounded queue (``submit``): when it is full the batch is
  dropped and counted, never blocking a collector;
- write commands (``call``): functions run on the writer's connection whose result the
  caller awaits. Commands are never dropped; they carry events and the alert outbox, which
  must not be lost.

Batches are appended in one transaction per flush, at most ``flush_interval_s`` after
they arrive, in transactions of at most ``_CHUNK_ROWS`` rows. A failed flush is classified
(:func:`failure_kind`):

- ``data``: the schema refuses a batch (an out-of-range value). The batches of the failed
  transaction are written one by one, and the one refused alone is dropped and counted.
- ``disk`` (full, I/O error), ``memory`` or ``other``: the store itself is failing. The
  batches are kept, within ``_MAX_RETAINED_ROWS`` rows (the oldest are dropped beyond it,
  so memory stays bounded however long the episode), and the queue keeps being drained
  into that buffer; one write is tried again after 1 s, then at most every
  ``_RETRY_MAX_S``. Once a write succeeds the buffer is written in chunks and flushes are
  as fast as before.

When DuckDB invalidates the database after a fatal error (a checkpoint the full disk
refused), the writer reopens the file (``reopen``, from the store) before its next write.

One log line per failure kind per episode (``event=flush_failed kind=...``), one when it
ends (``event=flush_recovered`` with its length, failed attempts and rows dropped); a
refused batch is logged once per collector and error. The counters stay in ``stats``.
"""
from __future__ import annotations

import ctypes
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import duckdb

from infersight.storage.append import append_batches
from infersight.storage.intern import Interner
from infersight.storage.model import Batch

log = logging.getLogger("infersight.storage")

_STOP = object()
# Rows kept across failed flushes; beyond it the oldest batches are dropped. About 25 MB of
# Python objects for stack rows (200,000 rows took the agent from 120 to 230 MB on the
# fault test's load), and a minute or more of a large host's samples.
_MAX_RETAINED_ROWS = 50_000
_CHUNK_ROWS = 50_000          # rows per transaction: bounds the columns built for one append
_RETRY_INITIAL_S = 1.0        # first retry after a failed flush of a failing store...
_RETRY_MAX_S = 5.0            # ...doubling up to this, so recovery is seen within seconds
_MAX_LOGGED_REJECTIONS = 100  # distinct (collector, error) pairs logged


def failure_kind(exc: BaseException) -> str:
    """``data`` (the batch is refused: retrying cannot help), ``disk``, ``memory`` or ``other``."""
    text = str(exc)
    if isinstance(exc, (duckdb.IOException, OSError)) or any(
            s in text for s in ("No space left", "Could not write", "Disk quota", "Read-only file system",
                                "database has been invalidated")):
        return "disk"
    if isinstance(exc, (duckdb.OutOfMemoryException, MemoryError)) or "Out of Memory" in text:
        return "memory"
    if isinstance(exc, (duckdb.DataError, duckdb.IntegrityError, duckdb.InvalidInputException,
                        duckdb.BinderException, TypeError, ValueError, OverflowError)):
        return "data"
    return "other"


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
    retained_rows: int = 0          # rows waiting for a failing store to write again
    failing_since: float | None = None   # Unix s when the current failure episode began
    by_collector: dict[str, int] = field(default_factory=dict)


class Writer:
    """Owns the read-write connection; see the module docstring for the contract."""

    def __init__(self, con, *, host: str, queue_max_batches: int, flush_interval_s: float,
                 reopen: Callable[[], Any] | None = None) -> None:
        self._con = con
        self._reopen = reopen
        self._invalidated = False       # DuckDB refuses every statement until the file is reopened
        self._host = host
        self._interner = Interner(con)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_max_batches)
        self._flush_interval = flush_interval_s
        self._retained: deque[Batch] = deque()
        self._retained_rows = 0
        self._rejected_logged: set[tuple[str, str]] = set()
        self._episode: dict[str, Any] | None = None     # the failure episode in progress
        self._retry_at = 0.0                            # monotonic time of the next write attempt
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
            if self._episode is not None and self._retained:    # a failing store: wake to retry
                deadline = self._retry_at if deadline is None else min(deadline, self._retry_at)
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
            if self._invalidated and not self._try_reopen():
                if fut.set_running_or_notify_cancel():
                    fut.set_exception(RuntimeError("the database is being reopened after a fatal error; "
                                                   f"see the agent's log ({self.stats.last_error})"))
                continue
            if fut.set_running_or_notify_cancel():
                # a command marked with intern.wants_interner (retention) keeps the interner in
                # step with the rows it deletes
                kwargs = {"interner": self._interner} if getattr(fn, "wants_interner", False) else {}
                try:
                    fut.set_result(fn(self._con, *args, **kwargs))
                except BaseException as exc:  # handed to the awaiting caller
                    self._rollback_if_open()
                    self._note_invalidated(exc)
                    fut.set_exception(exc)

    def _flush(self, batches: list[Batch]) -> None:
        """Write the retained batches and ``batches``; while the store is failing, only keep
        them (bounded) until the next retry is due."""
        self._retain(batches)
        with self._stats_lock:
            self.stats.queue_depth = self._queue.qsize()
        if not self._retained or (self._episode is not None and time.monotonic() < self._retry_at):
            return
        if self._invalidated and not self._try_reopen():
            return
        started = time.perf_counter()
        while self._retained:
            chunk = self._take_chunk()
            try:
                rows = self._append(chunk)
            except Exception as exc:
                kind = failure_kind(exc)
                if kind == "data":
                    rest = self._write_singly(chunk, started)
                    if not rest:
                        continue
                    chunk, exc = rest[0][0], rest[0][1]
                    kind = failure_kind(exc)
                self._retained.extendleft(reversed(chunk))
                self._retained_rows += sum(b.row_count() for b in chunk)
                self._note_invalidated(exc)
                self._failed(kind, exc)
                return
            self._count_written(chunk, rows, started)
        if self._episode is not None:
            self._recovered()

    def _retain(self, batches: list[Batch]) -> None:
        """Add ``batches`` to the buffer; while the store is failing, beyond _MAX_RETAINED_ROWS
        the oldest are dropped (a healthy store writes whatever a flush holds)."""
        for b in batches:
            self._retained.append(b)
            self._retained_rows += b.row_count()
        lost = []
        while self._episode is not None and self._retained_rows > _MAX_RETAINED_ROWS and len(self._retained) > 1:
            old = self._retained.popleft()
            self._retained_rows -= old.row_count()
            lost.append(old)
        if lost:
            rows = sum(b.row_count() for b in lost)
            with self._stats_lock:
                self.stats.batches_dropped += len(lost)
                self.stats.rows_dropped += rows
            if self._episode is not None:
                self._episode["rows_dropped"] += rows

    def _take_chunk(self) -> list[Batch]:
        """The oldest retained batches, up to _CHUNK_ROWS rows (at least one batch)."""
        chunk, rows = [], 0
        while self._retained and (not chunk or rows + self._retained[0].row_count() <= _CHUNK_ROWS):
            b = self._retained.popleft()
            rows += b.row_count()
            chunk.append(b)
        self._retained_rows -= rows
        return chunk

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

    def _write_singly(self, batches: list[Batch], started: float) -> list[tuple[list[Batch], Exception]]:
        """After a ``data`` failure, write each batch alone so one bad batch cannot block the
        rest: a batch refused alone for its data is dropped, counted and logged once per
        collector and error. At the first failure of another kind (the store is failing) it
        stops; returns [(the batches not written, that error)], or [] when all were handled."""
        for i, batch in enumerate(batches):
            try:
                rows = self._append([batch])
            except Exception as exc:
                if failure_kind(exc) != "data":
                    return [(batches[i:], exc)]
                self._reject(batch, exc)
                continue
            self._count_written([batch], rows, started)
        return []

    def _reject(self, batch: Batch, exc: Exception) -> None:
        with self._stats_lock:
            self.stats.batches_dropped += 1
            self.stats.rows_dropped += batch.row_count()
            self.stats.batches_rejected += 1
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        key = (batch.collector, first_line[:200])
        if key not in self._rejected_logged and len(self._rejected_logged) < _MAX_LOGGED_REJECTIONS:
            self._rejected_logged.add(key)
            log.error("event=batch_rejected collector=%s rows=%d error=%r", batch.collector, batch.row_count(),
                      first_line)

    def _count_written(self, batches: list[Batch], rows: int, started: float) -> None:
        with self._stats_lock:
            s = self.stats
            s.flushes += 1
            s.batches_written += len(batches)
            s.rows_written += rows
            s.last_flush_s = time.perf_counter() - started
            s.last_flush_at = time.time()
            for b in batches:
                s.by_collector[b.collector] = s.by_collector.get(b.collector, 0) + b.row_count()

    def _failed(self, kind: str, exc: Exception) -> None:
        """A flush failed with the store failing: count it, schedule the retry, and log the
        first failure of each kind in this episode."""
        now = time.monotonic()
        if self._episode is None:
            self._episode = {"since": now, "since_wall": time.time(), "kinds": set(), "failures": 0,
                             "rows_dropped": 0, "retry_s": _RETRY_INITIAL_S}
        ep = self._episode
        ep["failures"] += 1
        self._retry_at = now + ep["retry_s"]
        ep["retry_s"] = min(_RETRY_MAX_S, ep["retry_s"] * 2)
        with self._stats_lock:
            self.stats.flush_failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            self.stats.failing_since = ep["since_wall"]
        if kind not in ep["kinds"]:
            ep["kinds"].add(kind)
            log.error("event=flush_failed kind=%s error=%r retained_rows=%d note=\"retrying every %g s at most; "
                      "further failures of this kind are counted, not logged\"", kind, str(exc).splitlines()[0],
                      self._retained_rows, _RETRY_MAX_S)

    def _note_invalidated(self, exc: BaseException) -> None:
        """After a fatal error (a checkpoint that could not be written) DuckDB invalidates the
        database: only reopening the file brings it back (its WAL replays what was committed)."""
        if self._reopen is not None and (isinstance(exc, duckdb.FatalException)
                                         or "database has been invalidated" in str(exc)):
            if not self._invalidated:
                log.error("event=storage_invalidated error=%r note=\"the database file is reopened once the "
                          "disk lets it\"", str(exc).splitlines()[0])
            self._invalidated = True

    def _try_reopen(self) -> bool:
        """Reopen the file; False (counted as a failure, retried later) while that fails."""
        assert self._reopen is not None
        try:
            con = self._reopen()
        except Exception as exc:
            self._failed("disk", exc)
            return False
        self._con = con
        self._interner = Interner(con)      # ids as the reopened file has them
        self._invalidated = False
        log.warning("event=storage_reopened")
        return True

    def _recovered(self) -> None:
        ep, self._episode = self._episode, None
        assert ep is not None
        with self._stats_lock:
            self.stats.last_error = None
            self.stats.failing_since = None
        log.warning("event=flush_recovered failing_s=%.1f failed_attempts=%d rows_dropped=%d kinds=%s",
                    time.monotonic() - ep["since"], ep["failures"], ep["rows_dropped"], ",".join(sorted(ep["kinds"])))
        _trim_heap()

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
            s.retained_rows = self._retained_rows
            return WriterStats(**{**s.__dict__, "by_collector": dict(s.by_collector)})


def _trim_heap() -> None:
    """Give the heap the episode's buffer grew back to the kernel (glibc's malloc_trim; a no-op
    elsewhere): without it the agent stays tens of MB larger after every disk-full episode."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
