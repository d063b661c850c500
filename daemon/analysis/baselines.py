"""Earlier episodes of a GPU, to compare an episode with the same offered load.

What a person asks of a slow hour is "slower than when the same load came before?": the
comparison is at the same offered load (the requests clients keep in flight), never at the
same throughput, since a neighbour or a slower kernel lowers the throughput itself (a
neighbour that halves it finds no baseline "at the same throughput").

Offered load: the requests at the front end (Little's law on the HTTP latency sum) where the
engine exports it, else the requests running and waiting in the engine. Two episodes have
the same load when these are within ``LOAD_FACTOR`` of each other; where no earlier episode ran
at that load, one at the same token flow is the baseline (an open-loop load keeps its
arrivals while a slower GPU lets requests pile up). The figures compared are the tokens per
second per request in flight (each request's speed) and the GPU's activity.
Only episodes that served without a foreign process active are baselines.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from infersight.daemon.analysis.judge import Verdict
from infersight.daemon.config.load import AnalysisConfig

LOAD_FACTOR = 1.5
MIN_BASELINE_S = 5
MAX_EPISODES = 500


@dataclass(frozen=True)
class Figures:
    start: int
    end: int
    load: float
    tokens_s: float
    per_request: float
    sm: float | None
    tensor: float | None
    dram: float | None
    klass: str = ""


def figures(v: Verdict) -> Figures | None:
    """An episode's comparable figures, None when it served nothing measurable."""
    load = v.means.get("http_in_flight")
    if load is None or load < 1:
        load = v.means.get("in_flight")
    tokens = (v.means.get("gen_tps") or 0.0) + (v.means.get("prompt_tps") or 0.0)
    if load is None or load < 1 or tokens <= 0:
        return None
    return Figures(v.start, v.end, load, tokens, tokens / load, v.means.get("sm"), v.means.get("tensor"),
                   v.means.get("dram"), v.klass)


@dataclass(frozen=True)
class Comparison:
    """An episode against the baseline at the same offered load."""

    now: dict[str, Any]
    base: dict[str, Any]
    base_span: tuple[int, int]
    basis: str = "load"          # what made the baseline comparable: the same load or token flow

    @property
    def per_request_ratio(self) -> float:
        return self.now["per_request"] / self.base["per_request"] if self.base["per_request"] else 1.0

    def text(self) -> str:
        change = (self.per_request_ratio - 1.0) * 100
        same = (f"at the same load ({self.now['load']:.0f} vs {self.base['load']:.0f} requests in flight)"
                if self.basis == "load" else
                f"at the same token flow ({self.now['tokens_s']:.0f} vs {self.base['tokens_s']:.0f} tokens/s; "
                f"{self.now['load']:.0f} vs {self.base['load']:.0f} requests in flight)")
        return (f": tokens/s per request {self.base['per_request']:.1f} -> {self.now['per_request']:.1f} "
                f"({change:+.0f}%) {same}; SM {self.base['sm'] or 0:.0f}% -> {self.now['sm'] or 0:.0f}%, tensor "
                f"{self.base['tensor'] or 0:.0f}% -> {self.now['tensor'] or 0:.0f}%")

    def evidence(self) -> dict[str, Any]:
        return {"now": self.now, "baseline": self.base, "baseline_start": self.base_span[0],
                "baseline_end": self.base_span[1], "per_request_ratio": round(self.per_request_ratio, 3),
                "same": self.basis}

    def rises(self) -> dict[str, dict[str, float]]:
        """GPU activities that rose by ``MIN_RISE_POINTS`` or more: ``sm_util`` -> baseline, now (%)."""
        out = {}
        for k in ("sm", "tensor", "dram"):
            n, b = self.now.get(k), self.base.get(k)
            if n is not None and b is not None and n - b >= MIN_RISE_POINTS:
                out[f"{k}_util"] = {"baseline": b, "now": n}
        return out


class Baselines:
    """The comparable figures of one GPU's closed episodes within ``horizon_s``."""

    def __init__(self, horizon_s: float) -> None:
        self.horizon_s = horizon_s
        self.episodes: deque[Figures] = deque(maxlen=MAX_EPISODES)

    def add(self, v: Verdict) -> None:
        f = figures(v)
        if f is not None and not v.foreign and v.duration >= MIN_BASELINE_S:
            self.episodes.append(f)

    def compare(self, v: Verdict, classes: tuple[str, ...] | None = None) -> Comparison | None:
        """``v`` against the earlier episodes at the same offered load (of one of ``classes``
        where given), pooled: each figure their median, weighted by duration, so no single
        odd episode is the baseline. Where none ran at that load, the episodes at the same
        token flow (the same work asked of the GPU: a neighbour that slows every request
        raises the requests in flight of an open-loop load, whose arrivals stay). None: neither."""
        now = figures(v)
        if now is None:
            return None
        while self.episodes and self.episodes[0].end < v.start - self.horizon_s:
            self.episodes.popleft()
        earlier = [b for b in self.episodes if b.end <= v.start and (classes is None or b.klass in classes)]
        for basis, key in (("load", "load"), ("tokens", "tokens_s")):
            x = getattr(now, key)
            same = [b for b in earlier if x / LOAD_FACTOR <= getattr(b, key) <= x * LOAD_FACTOR]
            if same:
                return Comparison(_fig(now), _pooled(same), (same[0].start, same[-1].end), basis)
        return None


def _pooled(episodes: list[Figures]) -> dict[str, Any]:
    """The duration-weighted median of each figure over ``episodes``."""
    def median(values: list[tuple[float, int]]) -> float | None:
        vals = sorted((v, w) for v, w in values if v is not None)
        if not vals:
            return None
        half, acc = sum(w for _, w in vals) / 2.0, 0
        for v, w in vals:
            acc += w
            if acc >= half:
                return v
        return vals[-1][0]

    out = {}
    for key in ("load", "tokens_s", "per_request", "sm", "tensor", "dram"):
        m = median([(getattr(e, key), max(1, e.end - e.start)) for e in episodes])
        out[key] = None if m is None else round(m, 2 if key in ("load", "per_request") else 1)
    out["episodes"] = len(episodes)
    return out


def _fig(f: Figures) -> dict[str, Any]:
    return {"load": round(f.load, 2), "tokens_s": round(f.tokens_s, 1), "per_request": round(f.per_request, 2),
            "sm": None if f.sm is None else round(f.sm, 1), "tensor": None if f.tensor is None else round(f.tensor, 1),
            "dram": None if f.dram is None else round(f.dram, 1)}


MIN_RISE_POINTS = 10.0


def is_mismatch(c: Comparison, cfg: AnalysisConfig) -> bool:
    """Busy without more throughput: the GPU at least as busy as at the same offered load
    before (SM within 5 %) and, at the same load, no request faster, while each request got
    slower by ``mismatch_latency_rise``, or the GPU's work per token (SM, tensor or DRAM % per
    token/s) rose by ``mismatch_work_rise`` and ``MIN_RISE_POINTS`` points (the only test at
    the same token flow, where the loads differ and each request's speed says nothing). The baseline is a busy
    episode (Explainer asks for one): against a starved one every busy episode would rise."""
    now, base = c.now, c.base
    if (now["sm"] or 0.0) < 0.95 * (base["sm"] or 0.0):
        return False
    if c.basis == "load":
        # at the same requests in flight each request's speed is comparable
        if c.per_request_ratio >= 1.0:
            return False
        if c.per_request_ratio <= 1.0 / cfg.mismatch_latency_rise:
            return True
    for k in ("sm", "tensor", "dram"):
        n, b = now.get(k), base.get(k)
        if n is None or b is None or not now["tokens_s"] or not base["tokens_s"]:
            continue
        if n / now["tokens_s"] >= cfg.mismatch_work_rise * max(b, 1.0) / base["tokens_s"] and n - b >= MIN_RISE_POINTS:
            return True
    return False
