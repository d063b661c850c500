"""Histogram arithmetic for engine latency metrics: cumulative buckets, deltas, quantiles.

A histogram here is ``(bounds, counts)``: ascending upper bounds whose last is ``+inf``, and
the cumulative count at each bound (Prometheus ``_bucket{le=...}`` semantics). Bounds are in
the signal's unit (seconds) after scaling.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Iterable

from infersight.daemon.engines.promtext import Sample

Buckets = tuple[tuple[float, ...], tuple[float, ...]]


def assemble(bucket_samples: Iterable[Sample], scale: float = 1.0) -> dict[tuple[tuple[str, str], ...], Buckets]:
    """Group ``*_bucket`` samples into histograms keyed by their labels without ``le``.

    Samples with an unreadable or duplicate ``le`` are skipped; a histogram with a NaN or
    infinite count is dropped; one without a ``+Inf`` bucket gets one equal to its largest count (the
    exposition is then incomplete, and this is the least wrong reading). Counts that go down
    with ``le`` (torn scrapes) are raised to the running maximum, as Prometheus does.
    """
    grouped: dict[tuple[tuple[str, str], ...], dict[float, float]] = {}
    for s in bucket_samples:
        le = None
        rest = []
        for k, v in s.labels:
            if k == "le":
                le = v
            else:
                rest.append((k, v))
        if le is None:
            continue
        try:
            bound = float(le)
        except ValueError:
            continue
        if math.isnan(bound):
            continue
        series = grouped.setdefault(tuple(rest), {})
        if bound in series:
            continue
        series[bound] = s.value
    out: dict[tuple[tuple[str, str], ...], Buckets] = {}
    for key, series in grouped.items():
        if not all(math.isfinite(c) for c in series.values()):
            continue
        bounds = sorted(series)
        counts = []
        running = 0.0
        for b in bounds:
            running = max(running, series[b])
            counts.append(running)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
            counts.append(counts[-1] if counts else 0.0)
        out[key] = (tuple(b * scale if b != math.inf else b for b in bounds), tuple(counts))
    return out


def delta(prev: Buckets | None, cur: Buckets, reset: bool = False) -> tuple[float, ...] | None:
    """Counts observed between two readings of one histogram; None without a previous one.

    A reset (engine restart: any count went down, the bounds changed, or ``reset`` from a
    changed ``_created``) counts the current reading as everything seen since the reset, so
    the result is never negative.
    """
    if prev is None:
        return None
    pb, pc = prev
    cb, cc = cur
    if reset or pb != cb or any(c < p for c, p in zip(cc, pc)):
        return cc
    return tuple(c - p for c, p in zip(cc, pc))


def quantile(q: float, bounds: tuple[float, ...], counts: tuple[float, ...], lowest: float = 0.0) -> float | None:
    """The q-quantile (0..1) of cumulative ``counts``, None when there are no observations.

    Linear interpolation inside the bucket where the rank falls, the first bucket starting at
    ``lowest`` (0: latencies are not negative; 1 for tokens per engine step, so a bucket
    ``le=1`` of one-token steps reads 1, not 0.5); a rank in the ``+Inf`` bucket gives the
    largest finite bound, as Prometheus's ``histogram_quantile`` does.
    """
    total = counts[-1] if counts else 0.0
    if not total > 0:
        return None
    rank = q * total
    lower_bound, lower_count = lowest, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank and count > lower_count:
            if bound == math.inf:
                finite = [b for b in bounds if b != math.inf]
                return finite[-1] if finite else None
            if bound <= lower_bound:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound if lower_bound != math.inf else None


class QuantileWindow:
    """Bucket deltas of one signal over the last ``window_s`` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._items: deque[tuple[float, tuple[float, ...], tuple[float, ...]]] = deque()

    def add(self, t: float, bounds: tuple[float, ...], counts: tuple[float, ...]) -> None:
        # Buckets changed (engine restarted with other bounds): older deltas cannot be summed
        # with the new ones, so they leave the window.
        if self._items and self._items[-1][1] != bounds:
            self._items.clear()
        self._items.append((t, bounds, counts))

    def totals(self, now: float) -> Buckets | None:
        """Summed counts of the deltas with ``t > now - window_s``; None when empty."""
        horizon = now - self.window_s
        while self._items and self._items[0][0] <= horizon:
            self._items.popleft()
        if not self._items:
            return None
        bounds = self._items[-1][1]
        summed = [0.0] * len(bounds)
        for _, _, counts in self._items:
            for i, c in enumerate(counts):
                summed[i] += c
        return bounds, tuple(summed)

    def empty(self) -> bool:
        return not self._items
