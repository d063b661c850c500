"""One line per log event, key=value, to stderr (journald keeps it as is).

Messages are written as ``event=name key=value ...``; this formatter adds time, level and
logger in the same style and escapes newlines so one event stays one line.
"""
from __future__ import annotations

import logging
import sys
import time


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        text = record.getMessage().replace("\n", "\\n")
        line = f"ts={ts} level={record.levelname.lower()} logger={record.name} {text}"
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


def kv(value: object) -> str:
    """A value quoted for a key=value line when it holds spaces, quotes or '='."""
    text = str(value)
    if not text or any(c in text for c in ' "=\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text
