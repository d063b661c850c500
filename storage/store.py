"""The narrow API everything else uses to reach the DuckDB file.

``Store.open`` applies migrations and starts the writer thread. Writes go through
``submit`` (sample batches, may be dropped under pressure) and ``write`` (commands that
must not be lost). Reads go through ``read``: the query function runs on a reader thread
with its own cursor, so the event loop never blocks. Query and write functions live in the
storage modules (stacks, series, events, ...): nothing outside storage/ writes SQL.
"""
from __future__ import annotations

import asyncio
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

import duckdb

from infersight.storage import schema
from infersight.storage.model import Batch
from infersight.storage.writer import Writer, WriterStats

T = TypeVar("T")


class StoreError(RuntimeError):
    """The database cannot be opened or used; the message says why in plain words."""


class Store:
    """One DuckDB file, one writer thread, a small pool of reader threads."""

    def __init__(self, path: str, con, writer: Writer | None, read_only: bool) -> None:
        self.path = path
        self._con = con
        self._writer = writer
        self.read_only = read_only
        self._cursors: list = []
        self._cursors_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="infersight-read")
        self._closed = False

    @classmethod
    def open(cls, path: str, *, host: str = "", queue_max_batches: int = 2048, flush_interval_s: float = 1.0,
             read_only: bool = False, threads: int | None = None, memory_limit_mb: float | None = None) -> "Store":
        """Open (creating folder and file) and migrate; ``read_only`` never writes or migrates.

        ``threads`` caps DuckDB's worker threads (by default it starts one per core, and an
        agent's 24 h query should not take every core of an inference host); ``memory_limit_mb``
        caps its buffer pool (MiB; large sorts and aggregations then spill to ``<path>.tmp``).
        None leaves DuckDB's own default.
        """
        if path != ":memory:" and not read_only:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder of {path}: {exc.strerror}") from None
        try:
            con = duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            raise StoreError(f"cannot open {path}: {_first_line(exc)}") from None
        except duckdb.Error as exc:
            raise StoreError(f"cannot open {path}: {_first_line(exc)}") from None
        try:
            _limit_resources(con, threads, memory_limit_mb)
        except duckdb.Error as exc:
            con.close()
            raise StoreError(f"cannot apply DuckDB limits to {path}: {_first_line(exc)}") from None
        if read_only:
            version = schema.applied_version(con)
            if version > schema.CURRENT_VERSION:
                con.close()
                raise StoreError(f"{path} was written by a newer infersight (schema {version})")
            return cls(path, con, None, True)
        try:
            schema.migrate(con)
        except (duckdb.Error, RuntimeError) as exc:
            con.close()
            raise StoreError(f"cannot migrate {path}: {_first_line(exc)}") from None
        store = cls(path, con, None, False)
        store._writer = Writer(con, host=host, queue_max_batches=queue_max_batches, flush_interval_s=flush_interval_s,
                               reopen=functools.partial(store._reopen, threads, memory_limit_mb))
        return store

    def _reopen(self, threads: int | None, memory_limit_mb: float | None):
        """Close the connection DuckDB invalidated and open the file again (on the writer's
        thread). Reads in flight on the old one fail; later reads use the new one."""
        old = self._con
        try:
            old.close()
        except duckdb.Error:
            pass
        con = duckdb.connect(self.path)
        try:
            _limit_resources(con, threads, memory_limit_mb)
        except duckdb.Error:
            con.close()
            raise
        self._con = con
        return con

    # -- writes ----------------------------------------------------------------------------
    def submit(self, batch: Batch) -> bool:
        """Queue a batch for writing; False when it was dropped (queue full or read-only)."""
        if self._writer is None or self._closed:
            return False
        return self._writer.submit(batch)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(con, *args)`` on the writer thread and return its result."""
        return await asyncio.wrap_future(self._command(fn, *args))

    def write_sync(self, fn: Callable[..., T], *args: Any, timeout: float = 30.0) -> T:
        """``write`` for code outside the event loop (CLI, tests, replay)."""
        return self._command(fn, *args).result(timeout)

    def _command(self, fn, *args):
        if self._writer is None:
            raise StoreError(f"{self.path} is open read-only")
        if self._closed:
            raise StoreError("the store is closed")
        return self._writer.call(fn, *args)

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every batch submitted so far is written."""
        if self._writer is not None:
            self._writer.flush(timeout)

    # -- reads -----------------------------------------------------------------------------
    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(cursor, *args, **kwargs)`` on a reader thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(self.read_sync, fn, *args, **kwargs))

    async def compute(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` (no cursor) on a reader thread and return its result:
        CPU-heavy work on what a read returned (building and encoding a flame graph) that
        must not hold the event loop."""
        if self._closed:
            raise StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def read_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``read`` on the calling thread, on a cursor of its own closed once ``fn`` returns.

        A cursor kept between reads keeps its last result, and with it a transaction whose
        snapshot pins every block later checkpoints free: under deletes and rollups while the
        UI polls, the file (and the memory caching it) then grows without bound. A cursor
        costs some 50 µs to open.
        """
        if self._closed:
            raise StoreError("the store is closed")
        cur = self._con.cursor()
        with self._cursors_lock:
            self._cursors.append(cur)
        try:
            return fn(cur, *args, **kwargs)
        finally:
            with self._cursors_lock:
                self._cursors.remove(cur)
            cur.close()

    # -- state -----------------------------------------------------------------------------
    def stats(self) -> WriterStats:
        return self._writer.snapshot() if self._writer else WriterStats()

    def size_bytes(self) -> int:
        """Bytes on disk of the file and its WAL (0 for an in-memory store)."""
        total = 0
        for suffix in ("", ".wal"):
            try:
                total += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return total

    @property
    def writer_alive(self) -> bool:
        return self._writer is not None and self._writer.alive

    def close(self) -> None:
        """Flush, stop the writer, checkpoint and close. Idempotent."""
        if self._closed:
            return
        if self._writer is not None:
            self._writer.close()
        self._closed = True
        self._pool.shutdown(wait=True)
        with self._cursors_lock:
            for cur in self._cursors:
                try:
                    cur.close()
                except duckdb.Error:
                    pass
        try:
            if not self.read_only:
                self._con.execute("CHECKPOINT")
        except duckdb.Error:
            pass  # a full disk must not turn shutdown into a crash; the WAL replays at next open
        self._con.close()


def _limit_resources(con, threads: int | None, memory_limit_mb: float | None) -> None:
    # SET takes no bind parameters; the values are formatted from validated numbers only
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit_mb is not None:
        con.execute(f"SET memory_limit = '{int(memory_limit_mb)}MiB'")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
