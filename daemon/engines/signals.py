"""Normalized engine signals from successive scrapes of one endpoint.

:class:`EngineNormalizer` is fed ``(t, Exposition)`` for every successful scrape of one
endpoint and returns the :class:`~.model.EngineSample` and :class:`~.model.HistogramDelta`
records of that moment, per engine (recognised from metric names, see engine_specs) and
model (the ``model_name``/``model``/... label; "" when the engine has none):

- gauges as read (``requests_running``/``requests_waiting`` summed over the engine's data-
  parallel series, ``kv_cache_usage`` the fullest one);
- counters as per-second rates over the time since the previous scrape. A counter that went
  down, or whose ``_created`` changed, was reset (engine restart): its current value is taken
  as the increase since the reset, so a rate is never negative and never spikes. A series
  seen for the first time gives no rate (its value holds the whole past);
- histograms as bucket deltas (one HistogramDelta per model and scrape with observations)
  and p50/p95/p99 over the last ``quantile_window_s`` seconds, as ``ttft_seconds_p95`` etc.;
- per-GPU counters (the engines' FLOP and byte estimates) as the mean rate of the engine's
  data-parallel series, each of which is already per GPU;
- ratios of two rates of the same interval (:data:`RATIOS`, the prefix-cache hit ratio),
  only where the denominator moved, clamped to 1; where an engine exports the counters they
  replace its own ratio gauge, which is kept for engines without them.

Series repeated along rank labels (SGLang's ``tp_rank``...) count once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TypeVar

from infersight.daemon.engines import histograms as eh
from infersight.daemon.engines.promtext import Exposition, Sample
from infersight.daemon.engines.specs import (
    BREAKDOWN_LABELS,
    COUNTER,
    GAUGE,
    REPLICA_LABELS,
    EngineSpec,
    Source,
    detect,
    model_of,
)
from infersight.storage.model import EngineSample, HistogramDelta

# histogram signal -> the unit of its quantiles
HISTOGRAM_UNITS = {"ttft_seconds": "seconds", "itl_seconds": "seconds", "e2e_seconds": "seconds",
                   "prefill_time_seconds": "seconds", "decode_time_seconds": "seconds",
                   "iteration_tokens": "tokens"}
HISTOGRAM_SIGNALS = tuple(HISTOGRAM_UNITS)
# the smallest value a histogram's observations can take, where it is not 0 (a step has a token)
HISTOGRAM_LOWEST = {"iteration_tokens": 1.0}
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
RATE_DECIMALS = 3  # decimals a counter's per-second rate is given with
# derived ratio -> (numerator, denominator): rates of one scrape interval, per engine and model
RATIOS = {"prefix_cache_hit_ratio": ("prefix_cache_hits_per_s", "prefix_cache_queries_per_s")}

# Every signal an EngineSample may carry, name -> unit (served by /api/signals).
ENGINE_SIGNALS: dict[str, str] = {
    "requests_running": "requests",
    "requests_waiting": "requests",
    "requests_waiting_capacity": "requests",
    "requests_waiting_deferred": "requests",
    "kv_cache_usage": "ratio",
    "prompt_tokens_per_s": "tokens_per_second",
    "generation_tokens_per_s": "tokens_per_second",
    "preemptions_per_s": "per_second",
    "steps_per_s": "per_second",
    # Little's law over the latency histograms (specs.py): mean requests in each stage
    "http_in_flight": "requests",
    "http_requests_per_s": "per_second",
    "engine_in_flight": "requests",
    "engine_running_lt": "requests",
    "engine_queued": "requests",
    "requests_per_s": "per_second",
    "prefix_cache_queries_per_s": "tokens_per_second",
    "prefix_cache_hits_per_s": "tokens_per_second",
    "prefix_cache_hit_ratio": "ratio",
    "flops_per_gpu_per_s": "flop_per_second",
    "read_bytes_per_gpu_per_s": "bytes_per_second",
    "write_bytes_per_gpu_per_s": "bytes_per_second",
    # time to the first byte of the endpoint's answer (set by the collector, not by a spec)
    "scrape_latency_seconds": "seconds",
    **{f"{h}_{suffix}": unit for h, unit in HISTOGRAM_UNITS.items() for suffix, _ in QUANTILES},
}
# Gauges combined by maximum across series rather than summed.
MAX_GAUGES = frozenset({"kv_cache_usage", "prefix_cache_hit_ratio"})
# Per-GPU counters: the engine's data-parallel series are averaged (the mean GPU), not summed.
# They are also opt-in: vLLM 0.24 always exports them but counts only with --enable-mfu-metrics
# (observability_config.enable_mfu_metrics; SGLang likewise), so while every series of a model
# still reads 0 they say "not counting", not "no work": no rate is given (see Normalized.off).
MEAN_COUNTERS = frozenset({"flops_per_gpu_per_s", "read_bytes_per_gpu_per_s", "write_bytes_per_gpu_per_s"})

Labels = tuple[tuple[str, str], ...]
_V = TypeVar("_V")


@dataclass(slots=True)
class Normalized:
    """What one scrape gave: the records plus who was seen (for the endpoint's status)."""

    engine_samples: list[EngineSample] = field(default_factory=list)
    histogram_deltas: list[HistogramDelta] = field(default_factory=list)
    engines: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    off: list[str] = field(default_factory=list)    # opt-in signals exported but not counting (all 0)


class EngineNormalizer:
    """Stateful normalizer of one endpoint. Not thread-safe: one scrape at a time."""

    def __init__(self, endpoint: str, quantile_window_s: float = 10.0) -> None:
        self.endpoint = endpoint
        self.quantile_window_s = quantile_window_s
        self._t_prev: float | None = None
        self._counters: dict[tuple[str, Labels], tuple[float, float | None]] = {}
        self._hists: dict[tuple[str, Labels], tuple[eh.Buckets, float | None]] = {}
        self._windows: dict[tuple[str, str, str], eh.QuantileWindow] = {}

    def update(self, t: float, exp: Exposition) -> Normalized:
        """Records for the scrape taken at Unix time ``t`` (seconds)."""
        by_name = exp.by_name()
        dt = t - self._t_prev if self._t_prev is not None and t > self._t_prev else None
        scrape = _Scrape(by_name, dt, {}, {})
        out = Normalized()
        models: set[str] = set()
        for spec in detect(by_name):
            out.engines.append(spec.name)
            first = len(out.engine_samples)
            present: set[tuple[str, str]] = set()
            for signal, sources in spec.signals.items():
                if signal in HISTOGRAM_SIGNALS:
                    self._histogram(t, spec, signal, sources, scrape, out, models)
                else:
                    self._scalar(t, spec, signal, sources, scrape, out, models, present)
            self._ratios(t, spec, out, first, present)
        # Only series present now carry state forward: bounded by the scrape's size.
        self._counters, self._hists = scrape.counters, scrape.hists
        # After a clock step backwards one scrape gives no rates, then rates resume.
        self._t_prev = t
        self._prune_windows(t)
        out.models = sorted(models)
        return out

    # -- gauges and counters -------------------------------------------------------------
    def _scalar(self, t: float, spec: EngineSpec, signal: str, sources: tuple[Source, ...],
                scrape: _Scrape, out: Normalized, models: set[str], present: set[tuple[str, str]]) -> None:
        done: set[str] = set()
        for source in sources:
            per_model: dict[str, list[tuple[Labels, float]]] = {}
            seen: set[tuple[str, Labels]] = set()
            samples = _matching(scrape.by_name, source)
            counting = {model_of(x.labels) for x in samples if x.value != 0} if signal in MEAN_COUNTERS else None
            for sample in samples:
                value = self._counter_delta(sample, scrape, seen) if source.kind == COUNTER else sample.value
                model = model_of(sample.labels)
                models.add(model)
                present.add((signal, model))
                if counting is not None and model not in counting:
                    if signal not in out.off:
                        out.off.append(signal)
                    value = None
                if value is None or not math.isfinite(value) or model in done:
                    per_model.setdefault(model, [])  # present: later alternatives do not apply
                    continue
                per_model.setdefault(model, []).append((sample.labels, value * source.scale))
            for model, values in per_model.items():
                if model in done:
                    continue
                done.add(model)
                values = _one_per_replica(_drop_breakdowns(values))
                if not values:
                    continue
                if source.kind == GAUGE:
                    v = max(values) if signal in MAX_GAUGES else sum(values)
                elif scrape.dt is None:
                    continue
                else:
                    v = sum(values) / scrape.dt
                    if signal in MEAN_COUNTERS:
                        v /= len(values)
                    # a thousandth per second is far below what a counter's increase over one
                    # scrape can tell, and short decimals compress (DuckDB's ALP) to about 60 %
                    v = round(v, RATE_DECIMALS)
                if not math.isfinite(v):
                    continue
                out.engine_samples.append(EngineSample(t, self.endpoint, spec.name, model, signal, v))

    def _counter_delta(self, sample: Sample, scrape: _Scrape, seen: set[tuple[str, Labels]]) -> float | None:
        """The increase of a counter series since the previous scrape (None: no rate now).

        ``seen`` holds the series one signal has read in this scrape: the same series twice
        in one scrape counts once (the first). A series read by two signals (SGLang's prefill
        cache tokens are both hits and part of the queries) gives both the same increase.
        """
        key = (sample.name, sample.labels)
        if key in seen:
            return None
        seen.add(key)
        if key in scrape.deltas:
            return scrape.deltas[key]
        created = scrape.created(sample.name, sample.labels)
        if not math.isfinite(sample.value) or sample.value < 0:
            scrape.deltas[key] = None
            return None  # not a counter value: the series is ignored, not stored
        scrape.counters[key] = (sample.value, created)
        prev = self._counters.get(key)
        delta = None
        if prev is not None and scrape.dt is not None:
            prev_value, prev_created = prev
            reset = sample.value < prev_value or (created is not None and prev_created is not None
                                                 and created != prev_created)
            delta = sample.value if reset else sample.value - prev_value
        scrape.deltas[key] = delta
        return delta

    def _ratios(self, t: float, spec: EngineSpec, out: Normalized, first: int,
                present: set[tuple[str, str]]) -> None:
        """Derived ratios (:data:`RATIOS`) of the engine whose samples start at ``first``."""
        mine = out.engine_samples[first:]
        rates = {(s.model, s.signal): s.value for s in mine}
        for ratio, (num, den) in RATIOS.items():
            counted = {model for signal, model in present if signal == den}
            if not counted:
                continue  # no counters: the engine's own ratio gauge, if any, stands
            mine = [s for s in mine if not (s.signal == ratio and s.model in counted)]
            for model in sorted(counted):
                q, h = rates.get((model, den)), rates.get((model, num))
                if q is not None and h is not None and q > 0:
                    mine.append(EngineSample(t, self.endpoint, spec.name, model, ratio, min(max(h / q, 0.0), 1.0)))
        out.engine_samples[first:] = mine

    # -- histograms ----------------------------------------------------------------------
    def _histogram(self, t: float, spec: EngineSpec, signal: str, sources: tuple[Source, ...],
                   scrape: _Scrape, out: Normalized, models: set[str]) -> None:
        done: set[str] = set()
        for source in sources:
            per_model: dict[str, list[tuple[Labels, eh.Buckets]]] = {}
            buckets = eh.assemble(_matching(scrape.by_name, source), source.scale)
            for labels, cur in buckets.items():
                model = model_of(labels)
                models.add(model)
                key = (source.name, labels)
                created = scrape.created(source.name + "_bucket", labels)
                scrape.hists[key] = (cur, created)
                per_model.setdefault(model, [])
                prev = self._hists.get(key)
                if prev is None or scrape.dt is None or model in done:
                    continue
                reset = created is not None and prev[1] is not None and created != prev[1]
                counts = eh.delta(prev[0], cur, reset)
                if counts is not None:
                    per_model[model].append((labels, (cur[0], counts)))
            for model, deltas in per_model.items():
                if model in done:
                    continue
                done.add(model)
                self._emit_histogram(t, spec.name, model, signal, deltas, scrape.dt, out)
        for model in done:
            self._emit_quantiles(t, spec.name, model, signal, out)

    def _emit_histogram(self, t: float, engine: str, model: str, signal: str,
                        deltas: list[tuple[Labels, eh.Buckets]], dt: float | None, out: Normalized) -> None:
        summed: dict[tuple[float, ...], list[float]] = {}
        for _, (bounds, counts) in _one_per_replica_hist(_drop_breakdowns(deltas)):
            acc = summed.setdefault(bounds, [0.0] * len(bounds))
            for i, c in enumerate(counts):
                acc[i] += c
        for bounds, counts in summed.items():
            if not counts[-1] > 0 or dt is None:
                continue
            total = tuple(counts)
            out.histogram_deltas.append(HistogramDelta(t, self.endpoint, engine, model, signal, bounds, total, dt))
            key = (engine, model, signal)
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = eh.QuantileWindow(self.quantile_window_s)
            window.add(t, bounds, total)

    def _emit_quantiles(self, t: float, engine: str, model: str, signal: str, out: Normalized) -> None:
        window = self._windows.get((engine, model, signal))
        totals = window.totals(t) if window is not None else None
        if totals is None:
            return
        for suffix, q in QUANTILES:
            value = eh.quantile(q, *totals, lowest=HISTOGRAM_LOWEST.get(signal, 0.0))
            if value is not None:
                out.engine_samples.append(EngineSample(t, self.endpoint, engine, model, f"{signal}_{suffix}", value))

    def _prune_windows(self, t: float) -> None:
        for key in [k for k, w in self._windows.items() if w.totals(t) is None]:
            del self._windows[key]


@dataclass(slots=True)
class _Scrape:
    by_name: dict[str, list[Sample]]
    dt: float | None
    counters: dict[tuple[str, Labels], tuple[float, float | None]]
    hists: dict[tuple[str, Labels], tuple[eh.Buckets, float | None]]
    deltas: dict[tuple[str, Labels], float | None] = field(default_factory=dict)
    _created: dict[str, dict[Labels, float]] = field(default_factory=dict)

    def created(self, sample_name: str, labels: Labels) -> float | None:
        """The ``_created`` timestamp of a counter or histogram series, when exposed."""
        for suffix in ("_total", "_sum", "_count", "_bucket"):
            if sample_name.endswith(suffix):
                base = sample_name[: -len(suffix)]
                break
        else:
            base = sample_name
        name = base + "_created"
        index = self._created.get(name)
        if index is None:
            index = self._created[name] = {s.labels: s.value for s in self.by_name.get(name, ())}
        return index.get(labels)


def _matching(by_name: dict[str, list[Sample]], source: Source) -> list[Sample]:
    """Samples of the first of the source's sample names present, carrying its match labels."""
    for name in source.sample_names():
        samples = by_name.get(name)
        if samples:
            if not source.match:
                return samples
            return [s for s in samples if source.accepts(s.labels)]
    return []


def _drop_breakdowns(values: list[tuple[Labels, _V]]) -> list[tuple[Labels, _V]]:
    """Without the parts of a total (``priority="high"``) when the total itself is present."""
    for label in BREAKDOWN_LABELS:
        has_total = any(not dict(labels).get(label) for labels, _ in values)
        if has_total:
            values = [(labels, v) for labels, v in values if not dict(labels).get(label)]
    return values


def _replica_key(labels: Labels) -> Labels:
    return tuple((k, v) for k, v in labels if k not in REPLICA_LABELS)


def _one_per_replica(values: list[tuple[Labels, float]]) -> list[float]:
    """One value per series once rank labels are ignored: the largest of the copies."""
    best: dict[Labels, float] = {}
    for labels, v in values:
        key = _replica_key(labels)
        if key not in best or v > best[key]:
            best[key] = v
    return list(best.values())


def _one_per_replica_hist(deltas: list[tuple[Labels, eh.Buckets]]) -> list[tuple[Labels, eh.Buckets]]:
    best: dict[Labels, tuple[Labels, eh.Buckets]] = {}
    for labels, buckets in deltas:
        key = _replica_key(labels)
        if key not in best or buckets[1][-1] > best[key][1][1][-1]:
            best[key] = (labels, buckets)
    return list(best.values())
