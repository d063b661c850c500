"""One line per log event, key=value, to stderr (journald keeps it as is).

Messages are written as ``event=name key=value ...``; this formatter adds time, level and
logger in the same style and escapes newlines so one event stays one line.

Errors are logged once per kind (:class:`RepeatedFailures`): a failing disk fails every
flush, analysis tick and maintenance run, and a log of the same line every second hides
what else happened. The first ``event=NAME ... error=TYPE`` of a logger is written; the same
(logger, event, error type) again within ``WINDOW_S`` is counted, not written, and the next
one after the window says ``repeated=N``.
"""
from __future__ import annotations

import logging
import re
import sys
import time

_EVENT_ERROR = re.compile(r'event=(\S+)(?:.*?\berror="?([^:"\s]{1,80}))?')
# the fields that tell one failing thing from another (two collectors failing alike are two kinds)
_IDENTITY = re.compile(r'\b(collector|component|kind|target|endpoint|path|url|pid|table)=("[^"]*"|\S+)')


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        text = record.getMessage().replace("\n", "\\n")
        line = f"ts={ts} level={record.levelname.lower()} logger={record.name} {text}"
        if getattr(record, "repeated", 0):
            line += f" repeated={record.repeated}"
        if record.exc_info:
            exc = self.formatException(record.exc_info).replace("\n", "\\n")
            line += f" traceback={exc!r}"
        return line


def setup_logging(level: str = "info") -> None:
    """Route the ``infersight`` and ``apscheduler`` loggers to stderr as key=value lines (idempotent)."""
    root = logging.getLogger("infersight")
    root.setLevel(level.upper())
    for h in list(root.handlers):
        if getattr(h, "_infersight", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    handler.addFilter(RepeatedFailures())
    handler._infersight = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.propagate = False
    # APScheduler logs a failed job with a traceback; keep it one line in the same format
    sched = logging.getLogger("apscheduler")
    for h in list(sched.handlers):
        if getattr(h, "_infersight", False):
            sched.removeHandler(h)
    sched.addHandler(handler)
    sched.setLevel(logging.WARNING)
    sched.propagate = False
    for f in list(sched.filters):
        if isinstance(f, _SkippedRuns):
            sched.removeFilter(f)
    sched.addFilter(_SkippedRuns())


class RepeatedFailures(logging.Filter):
    """Lets one ERROR line per (logger, event, error type) through per WINDOW_S (module docstring)."""

    WINDOW_S = 600.0
    MAX_KINDS = 1000

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[tuple, list] = {}   # kind -> [time let through, dropped since]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        m = _EVENT_ERROR.match(message)
        if m is None:
            return True
        key = (record.name, m.group(1), m.group(2) or "", tuple(_IDENTITY.findall(message)))
        entry = self.seen.get(key)
        if entry is not None and record.created - entry[0] < self.WINDOW_S:
            entry[1] += 1
            return False
        if entry is not None and entry[1]:
            record.repeated = entry[1]
        if len(self.seen) >= self.MAX_KINDS:
            self.seen.clear()
        self.seen[key] = [record.created, 0]
        return True


class _SkippedRuns(logging.Filter):
    """Drops APScheduler's "skipped: maximum number of running instances reached", one line
    per tick while a job outlasts its interval (a slow disk made one every 2 s): a collector
    that stops finishing shows in /api/health as stale instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances" not in record.getMessage()


def kv(value: object) -> str:
    """A value quoted for a key=value line when it holds spaces, quotes or '='."""
    text = str(value)
    if not text or any(c in text for c in ' "=\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text
