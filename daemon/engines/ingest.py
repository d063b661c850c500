"""One endpoint's scrape text -> engine records, raw series and counts (live and replay alike).

:class:`EndpointIngest` parses (promtext), normalizes (engine_signals) and keeps raw series
under a cardinality guard. Pure CPU work with per-endpoint state: the live collector runs it
in a worker thread, replay runs it inline; either way one scrape at a time per endpoint.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from infersight.daemon.engines.promtext import Sample, parse
from infersight.daemon.engines.signals import EngineNormalizer
from infersight.storage.model import EngineSample, HistogramDelta, RawSeriesSample

log = logging.getLogger("infersight.engines")


@dataclass(slots=True)
class Ingested:
    """What one scrape gave. ``readable`` is False when not a single line parsed as a sample
    although there was text (an HTML page, JSON, ...); nothing else is then filled in."""

    engine_samples: list[EngineSample] = field(default_factory=list)
    histogram_deltas: list[HistogramDelta] = field(default_factory=list)
    raw_series: list[RawSeriesSample] = field(default_factory=list)
    engines: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    samples: int = 0
    bad_lines: int = 0
    bad_line_examples: list[str] = field(default_factory=list)
    series_dropped: int = 0
    readable: bool = True
    off: list[str] = field(default_factory=list)    # opt-in signals exported but not counting


class SeriesGuard:
    """At most ``max_series`` raw series per endpoint, chosen stably.

    Series kept at the previous scrape keep their place; new ones fill free places in the
    order they appear; the rest are dropped and counted (``dropped_last``, ``dropped_total``)
    and the first drop is logged once. Memory stays bounded by ``max_series`` keys whatever
    the endpoint does (label churn frees the places of series that stopped appearing).
    ``_created`` samples (series start timestamps) are not kept as raw series.
    """

    def __init__(self, endpoint: str, max_series: int) -> None:
        self.endpoint = endpoint
        self.max_series = max_series
        self.dropped_last = 0
        self.dropped_total = 0
        self._kept: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        self._warned = False

    def admit(self, samples: list[Sample]) -> list[Sample]:
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        fresh: list[Sample] = []
        kept: list[Sample] = []
        for s in samples:
            if s.name.endswith("_created"):
                continue
            key = (s.name, s.labels)
            if key in seen:
                continue  # a duplicate line in one scrape: the first one counts
            seen.add(key)
            if key in self._kept:
                kept.append(s)
            else:
                fresh.append(s)
        room = self.max_series - len(kept)
        admitted = fresh[:max(room, 0)]
        dropped = len(fresh) - len(admitted)
        kept.extend(admitted)
        self._kept = {(s.name, s.labels) for s in kept}
        self.dropped_last = dropped
        self.dropped_total += dropped
        if dropped and not self._warned:
            self._warned = True
            log.warning("event=engine_series_capped endpoint=%s max_series=%d dropped=%d "
                        "(further drops are counted in the endpoint status, not logged)",
                        self.endpoint, self.max_series, dropped)
        return kept


class EndpointIngest:
    """Parser, normalizer and series guard of one endpoint."""

    def __init__(self, endpoint: str, quantile_window_s: float, max_series: int) -> None:
        self.endpoint = endpoint
        self.normalizer = EngineNormalizer(endpoint, quantile_window_s)
        self.guard = SeriesGuard(endpoint, max_series)

    def ingest(self, t: float, text: str) -> Ingested:
        """Records of the scrape taken at Unix time ``t`` whose body is ``text``."""
        exp = parse(text)
        out = Ingested(samples=len(exp.samples), bad_lines=exp.bad_lines, bad_line_examples=exp.errors)
        if not exp.samples and exp.bad_lines:
            out.readable = False
            return out
        normalized = self.normalizer.update(t, exp)
        out.engine_samples = normalized.engine_samples
        out.histogram_deltas = normalized.histogram_deltas
        out.engines = normalized.engines
        out.models = normalized.models
        out.off = normalized.off
        ep = self.endpoint
        out.raw_series = [RawSeriesSample(t, ep, s.name, s.labels, s.value) for s in self.guard.admit(exp.samples)]
        out.series_dropped = self.guard.dropped_last
        return out
