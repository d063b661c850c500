"""Engine signals per second for a chosen set of endpoints (the engines serving one GPU).

The same aggregation as ``analysis.engine_seconds`` (sum over endpoints and models, max for
the signals that are not amounts: series.NOT_SUMMED_SQL), restricted to endpoints by URL:
``include`` (None = every endpoint) and ``exclude``.
"""
from __future__ import annotations

from typing import Iterable

from infersight.storage.series import NOT_SUMMED_SQL


def engine_seconds(cur, t_from: float, t_to: float, include: Iterable[str] | None = None,
                   exclude: Iterable[str] = ()) -> dict[int, dict[str, float]]:
    """sec -> signal -> value over the endpoints chosen (see the module docstring)."""
    inc = None if include is None else sorted(set(include))
    exc = sorted(set(exclude))
    rows = cur.execute(f"""
        SELECT sec, signal, CASE WHEN {NOT_SUMMED_SQL} THEN max(v) ELSE sum(v) END
        FROM (SELECT floor(s.t)::BIGINT sec, s.signal, s.endpoint, s.model, avg(s.value) v
              FROM engine_samples s JOIN endpoints e ON e.id = s.endpoint
              WHERE s.t >= ? AND s.t < ? AND NOT isnan(s.value)
                AND (?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], e.url))
                AND NOT list_contains(?::VARCHAR[], e.url)
              GROUP BY 1, 2, 3, 4)
        GROUP BY 1, 2""", [t_from, t_to, inc, inc, exc]).fetchall()
    out: dict[int, dict[str, float]] = {}
    for sec, signal, value in rows:
        out.setdefault(int(sec), {})[signal] = float(value)
    return out
