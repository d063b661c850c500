"""Parquet export for fleet-wide queries: closed hours of every table, hive-partitioned.

Layout under the export directory (times in UTC)::

    table=gpu_samples/host=node-7/date=2024-05-01/hour=13/data.parquet

One file per (table, host, hour). A file appears only complete: it is written under a
hidden temporary name in the same folder (``.data.parquet.PID.RANDOM.tmp``), flushed to
disk, then renamed over ``data.parquet``; a crash leaves at most a hidden temporary, which
readers globbing ``*.parquet`` never see (and which Spark and Trino skip as hidden) and the
next export of that partition removes. Re-running an export rewrites the same file names
with the same rows, so it never duplicates. What each table's files hold is
storage/export.py's contract.

Two entry points: :class:`Exporter`, the daemon component (``[export] enabled``), which
writes each hour once it is closed (ended ``settle_s`` ago) and remembers how far it got in
``_infersight/export-state-HOST.json``; and :func:`main`, ``infersight export --from --to
--out DIR``, a one-off over a stored database.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from infersight.daemon.config.load import Config, load_config
from infersight.daemon.logfmt import kv
from infersight.storage import export as q
from infersight.storage.store import Store, StoreError

log = logging.getLogger("infersight.export")

DATA_FILE = "data.parquet"
STATE_DIR = "_infersight"
_TMP = re.compile(r"^\.data\.parquet\.(\d+)\.[0-9a-f]+\.tmp$")


@dataclass(frozen=True)
class PartitionResult:
    table: str
    hour: int
    path: str
    rows: int


def export_directory(config: Config) -> Path:
    """``export.directory``, or a folder ``export`` next to the database file."""
    if config.export.directory:
        return Path(config.export.directory)
    db = config.storage.path
    return (Path(db).parent if db != ":memory:" else Path(".")) / "export"


def partition_value(text: str) -> str:
    """A value safe as one path component of a hive partition (``/``, ``=``, spaces replaced)."""
    cleaned = re.sub(r"[^A-Za-z0-9._:-]", "_", text).strip(".")
    return cleaned or "_"


def partition_dir(root: Path, table: str, host: str, hour: int) -> Path:
    day = datetime.fromtimestamp(hour, tz=timezone.utc)
    return root / f"table={table}" / f"host={partition_value(host)}" / f"date={day:%Y-%m-%d}" / f"hour={day:%H}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporaries of exporters that died mid-write (never those of a live one)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        m = _TMP.match(name)
        if m and (int(m.group(1)) == os.getpid() or not _pid_alive(int(m.group(1)))):
            try:
                (folder / name).unlink()
            except FileNotFoundError:
                pass


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, (os.O_RDONLY | os.O_DIRECTORY) if directory else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, final: Path) -> None:
    """Make a finished temporary visible under its final name, atomically and durably."""
    _fsync_path(tmp)
    os.replace(tmp, final)
    _fsync_path(final.parent, directory=True)


def write_partition(cur, root: Path, table: str, host: str, hour: int) -> PartitionResult | None:
    """Write one partition (runs on a store reader thread); None when the hour has no rows."""
    folder = partition_dir(root, table, host, hour)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(folder)
    tmp = folder / f".{DATA_FILE}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        rows = q.copy_hour(cur, table, hour, str(tmp))
        if rows == 0:
            tmp.unlink()
            return None
        _publish(tmp, folder / DATA_FILE)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    return PartitionResult(table, hour, str(folder / DATA_FILE), rows)


def export_range(cur, root: Path, host: str, t_from: float, t_to: float) -> list[PartitionResult]:
    """Every partition of every table for the whole hours overlapping [t_from, t_to)."""
    start = math.floor(t_from / q.HOUR_S) * q.HOUR_S
    end = math.ceil(t_to / q.HOUR_S) * q.HOUR_S
    out = []
    for table in q.TABLES:
        for hour in q.hours_with_rows(cur, table, start, end):
            result = write_partition(cur, root, table, host, hour)
            if result is not None:
                out.append(result)
    return out


class Exporter:
    """The daemon component: each tick writes the closed hours not written yet (at most
    ``max_hours_per_run``), oldest first, and records progress after each hour."""

    name = "export"

    def __init__(self, config: Config, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.cfg = config.export
        self.host = config.host
        self.store = store
        self.clock = clock
        self.root = export_directory(config)
        self.interval_s = self.cfg.interval_s
        self.state_path = self.root / STATE_DIR / f"export-state-{partition_value(self.host)}.json"
        self.done_until: int | None = None
        self.partitions_written = 0
        self.rows_written = 0
        self.last_error: str | None = None
        self.last_run: float | None = None

    async def tick(self) -> None:
        try:
            results = await self.store.read(self.run, self.clock())
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if error != self.last_error:
                log.error("event=export_failed directory=%s error=%s", kv(self.root), kv(error))
            self.last_error = error
            return
        if self.last_error is not None:
            log.info("event=export_recovered directory=%s", kv(self.root))
        self.last_error = None
        if results:
            log.info("event=exported partitions=%d rows=%d until=%s", len(results), sum(r.rows for r in results),
                     self.done_until)

    def run(self, cur, now: float) -> list[PartitionResult]:
        """Write closed hours up to ``now - settle_s`` (on a reader thread); returns what was written."""
        self.last_run = now
        closed = int(math.floor((now - self.cfg.settle_s) / q.HOUR_S) * q.HOUR_S)
        if self.done_until is None:
            self.done_until = self._load_state()
        if self.done_until is None:
            first = q.first_time(cur)
            self.done_until = closed if first is None else int(math.floor(first / q.HOUR_S) * q.HOUR_S)
        end = min(closed, self.done_until + self.cfg.max_hours_per_run * q.HOUR_S)
        if end <= self.done_until:
            return []
        by_hour: dict[int, list[str]] = {}
        for table in q.TABLES:
            for hour in q.hours_with_rows(cur, table, self.done_until, end):
                by_hour.setdefault(hour, []).append(table)
        results = []
        for hour in range(self.done_until, end, q.HOUR_S):
            for table in by_hour.get(hour, ()):
                result = write_partition(cur, self.root, table, self.host, hour)
                if result is not None:
                    results.append(result)
                    self.partitions_written += 1
                    self.rows_written += result.rows
            self.done_until = hour + q.HOUR_S
            self._save_state()
        return results

    def _load_state(self) -> int | None:
        try:
            value = json.loads(self.state_path.read_text())["done_until"]
            return int(value)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("event=export_state_unreadable path=%s error=%s", kv(self.state_path), kv(exc))
            return None

    def _save_state(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"done_until": self.done_until, "host": self.host}))
        os.replace(tmp, self.state_path)

    def health(self) -> dict[str, Any]:
        return {"ok": self.last_error is None, "last_error": self.last_error, "directory": str(self.root),
                "exported_until": self.done_until, "partitions_written": self.partitions_written,
                "rows_written": self.rows_written}

    def metrics(self) -> list[tuple[str, str, str, dict[str, str], float]]:
        out = [("infersight_export_partitions_written_total", "counter", "Parquet partitions the export wrote", {},
                self.partitions_written),
               ("infersight_export_rows_written_total", "counter", "Rows the export wrote to Parquet", {},
                self.rows_written)]
        if self.done_until is not None:
            out.append(("infersight_export_exported_until_timestamp_seconds", "gauge",
                        "Every hour before this is exported (Unix seconds)", {}, self.done_until))
        return out


def parse_time(text: str) -> float:
    """Unix seconds, or ISO 8601 (a time without zone is UTC); ValueError with the reason."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither Unix seconds nor an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def main(args: argparse.Namespace) -> int:
    """``infersight export``: exit 0 when written, 1 when the database cannot be read, 2 on bad usage."""
    config = load_config(args.config)
    try:
        t_from, t_to = parse_time(args.t_from), parse_time(args.t_to)
    except ValueError as exc:
        print(f"infersight export: {exc}", file=sys.stderr)
        return 2
    if t_to <= t_from:
        print("infersight export: --to must be after --from", file=sys.stderr)
        return 2
    db = args.db or config.storage.path
    host = args.host or config.host
    try:
        store = Store.open(db, read_only=True)
    except StoreError as exc:
        hint = (" (a running agent holds the file: enable [export] in its config, or stop it first)"
                if "lock" in str(exc).lower() else "")
        print(f"infersight export: {exc}{hint}", file=sys.stderr)
        return 1
    try:
        results = store.read_sync(export_range, Path(args.out), host, t_from, t_to)
    except OSError as exc:
        print(f"infersight export: cannot write under {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    for r in results:
        print(f"{r.path}\t{r.rows}")
    print(f"infersight export: {len(results)} partitions, {sum(r.rows for r in results)} rows under {args.out}",
          file=sys.stderr)
    return 0

