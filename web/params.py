"""Query-parameter parsing for the JSON API: every bad value becomes a clear 400.

Times are Unix seconds. A missing ``to`` means now; a missing ``from`` means ``to`` minus a
default span. Ranges must be ordered and at most MAX_RANGE_S long.
"""
from __future__ import annotations

import math
import time

from aiohttp import web

MAX_RANGE_S = 400 * 86400.0


class BadParam(web.HTTPBadRequest):
    """400 with a JSON body naming the parameter."""

    def __init__(self, name: str, message: str) -> None:
        import orjson

        super().__init__(text=orjson.dumps({"error": f"{name}: {message}", "param": name}).decode(),
                         content_type="application/json")


def number(request: web.Request, name: str, default: float | None = None, *, lo: float | None = None,
           hi: float | None = None) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadParam(name, f"expected a number, got {raw[:40]!r}") from None
    if not math.isfinite(value):
        raise BadParam(name, f"expected a finite number, got {raw[:40]!r}")
    if lo is not None and value < lo:
        raise BadParam(name, f"must be >= {lo:g}")
    if hi is not None and value > hi:
        raise BadParam(name, f"must be <= {hi:g}")
    return value


def integer(request: web.Request, name: str, default: int | None = None, *, lo: int | None = None,
            hi: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParam(name, f"expected an integer, got {raw[:40]!r}") from None
    if lo is not None and value < lo:
        raise BadParam(name, f"must be >= {lo}")
    if hi is not None and value > hi:
        raise BadParam(name, f"must be <= {hi}")
    return value


def integers(request: web.Request, name: str) -> tuple[int, ...] | None:
    """Repeated or comma-separated integers (``pid=1&pid=2`` or ``pid=1,2``)."""
    values = [v for raw in request.query.getall(name, []) for v in raw.split(",") if v != ""]
    if not values:
        return None
    out = []
    for v in values:
        try:
            out.append(int(v))
        except ValueError:
            raise BadParam(name, f"expected integers, got {v[:40]!r}") from None
        if not -2**62 < out[-1] < 2**62:
            raise BadParam(name, "out of range")
    return tuple(out)


def strings(request: web.Request, name: str, max_len: int = 200) -> tuple[str, ...] | None:
    values = [v for raw in request.query.getall(name, []) for v in raw.split(",") if v != ""]
    if not values:
        return None
    for v in values:
        if len(v) > max_len:
            raise BadParam(name, f"longer than {max_len} characters")
    return tuple(values)


def choice(request: web.Request, name: str, options: tuple[str, ...], default: str) -> str:
    raw = request.query.get(name, default) or default
    if raw not in options:
        raise BadParam(name, f"expected one of {', '.join(options)}, got {raw[:40]!r}")
    return raw


def boolean(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None or raw == "" or raw == "all":
        return None
    if raw.lower() in ("1", "true", "yes", "active"):
        return True
    if raw.lower() in ("0", "false", "no", "idle"):
        return False
    raise BadParam(name, f"expected true, false or all, got {raw[:40]!r}")


def time_range(request: web.Request, default_span_s: float = 3600.0, prefix: str = "",
               max_span_s: float | None = MAX_RANGE_S) -> tuple[float, float]:
    """(from, to) from ``{prefix}from`` and ``{prefix}to``; ordered, finite, at most
    ``max_span_s`` long (None: any length, for routes whose answers a ``limit`` bounds, so
    ``from=0`` means "since the beginning")."""
    f_name, t_name = f"{prefix}from", f"{prefix}to"
    t_to = number(request, t_name, None, lo=0, hi=1e11)
    t_to = time.time() if t_to is None else t_to
    t_from = number(request, f_name, None, lo=0, hi=1e11)
    t_from = t_to - default_span_s if t_from is None else t_from
    if t_from >= t_to:
        raise BadParam(f_name, f"must be before {t_name} ({t_from:g} >= {t_to:g})")
    if max_span_s is not None and t_to - t_from > max_span_s:
        raise BadParam(f_name, f"range longer than {max_span_s / 86400:g} days")
    return t_from, t_to
