"""Per-second detectors fed by the analyzer: utilization-versus-throughput mismatch,
saturation, and bandwidth-efficiency features.

Mismatch: the GPU is at least as busy as in comparable seconds of its recent past (same
engine token flow within a factor 1.5) while either the GPU work behind each token rose
(some activity -- SM, tensor or DRAM -- per token at least ``mismatch_work_rise`` times its
baseline and 10 points above it) or each request got slower (running / generated tokens/s,
Little's law for time per output token, at least ``mismatch_latency_rise`` times). That is
a noisy neighbour, a throttled GPU or a slower kernel: the GPU is busy but not for us.

Saturation: the GPU is busy with useful work (compute- or memory-bound) while the queue
keeps growing: more capacity or another batch policy is needed, not a code fix.
"""
from __future__ import annotations

import statistics
from collections import deque
from dataclasses import replace

from infersight.daemon.analysis.classify import BUSY_CLASSES, Second
from infersight.daemon.analysis.runs import RunTracker, Segment
from infersight.daemon.config.load import AnalysisConfig
from infersight.storage.model import Event

COMPONENTS = ("sm_util", "tensor_util", "dram_bw_util")
MIN_BASELINE_SECONDS = 5
MIN_RISE_POINTS = 10.0


def _tokens(s: Second) -> float:
    return (s.gen_tokens_s or 0.0) + (s.prompt_tokens_s or 0.0)


def _latency(s: Second) -> float | None:
    if s.running and s.gen_tokens_s and s.running >= 1 and s.gen_tokens_s > 0:
        return s.running / s.gen_tokens_s
    return None


class MismatchDetector:
    def __init__(self, cfg: AnalysisConfig) -> None:
        self.cfg = cfg
        self.history: deque[Second] = deque()
        self.tracker = RunTracker(("mismatch",), merge_s=2, min_s=cfg.mismatch_min_s)
        self.finished: list[Segment] = []
        self.details: dict[int, dict] = {}

    def feed(self, s: Second, klass: str) -> None:
        detail = self._judge(s, klass)
        flagged = detail is not None
        if flagged:
            self.details[s.t] = detail
        self.finished += self.tracker.feed(s.t, "mismatch" if flagged else "ok")
        if not flagged and klass in BUSY_CLASSES and _tokens(s) > 0:
            self.history.append(replace(s, processes=[]))   # the baseline reads GPU and engine figures only
        while self.history and self.history[0].t < s.t - self.cfg.baseline_s:
            self.history.popleft()
        for t in [t for t in self.details if t < s.t - 3 * 3600]:
            del self.details[t]

    def _judge(self, s: Second, klass: str) -> dict | None:
        if klass not in BUSY_CLASSES or s.sm_util is None:
            return None
        tokens = _tokens(s)
        if tokens <= 0:
            return None
        similar = [h for h in self.history if tokens / 1.5 <= _tokens(h) <= tokens * 1.5]
        if len(similar) < MIN_BASELINE_SECONDS:
            return None
        base_sm = statistics.median(h.sm_util or 0.0 for h in similar)
        if s.sm_util < 0.95 * base_sm:
            return None
        base_tokens = statistics.median(_tokens(h) for h in similar)
        rises = {}
        for c in COMPONENTS:
            now_v = getattr(s, c)
            base_v = statistics.median(getattr(h, c) or 0.0 for h in similar)
            if now_v is None:
                continue
            per_token_now, per_token_base = now_v / tokens, max(base_v, 1.0) / base_tokens
            if per_token_now >= self.cfg.mismatch_work_rise * per_token_base and now_v - base_v >= MIN_RISE_POINTS:
                rises[c] = (round(base_v, 1), round(now_v, 1))
        lat_now = _latency(s)
        lats = [x for x in (_latency(h) for h in similar) if x is not None]
        lat_base = statistics.median(lats) if lats else None
        slower = lat_now is not None and lat_base and lat_now >= self.cfg.mismatch_latency_rise * lat_base
        if not rises and not slower:
            return None
        return {"tokens_per_s": tokens, "baseline_tokens_per_s": base_tokens, "rises": rises,
                "latency_s_per_token": lat_now, "baseline_latency_s_per_token": lat_base,
                "sm_util": s.sm_util, "baseline_sm_util": base_sm, "baseline_seconds": len(similar)}

    def events(self, host: str, gpu: int, foreign: list[dict]) -> list[Event]:
        out = [self._event(host, gpu, seg, foreign, False) for seg in self.finished]
        self.finished = []
        out += [self._event(host, gpu, seg, foreign, True) for seg in self.tracker.open_segments()]
        # a finished run's event is final: only the run in progress needs its seconds' details
        # again (they were 10-15 MB of an agent's memory when kept for 3 h)
        first = self.tracker.open_since()
        for t in [t for t in self.details if first is None or t < first]:
            del self.details[t]
        return out

    def _event(self, host: str, gpu: int, seg: Segment, foreign: list[dict], open_: bool) -> Event:
        ds = [self.details[t] for t in seg.seconds if t in self.details]

        def med(key: str) -> float | None:
            vals = [d[key] for d in ds if d.get(key) is not None]
            return round(statistics.median(vals), 6) if vals else None

        rises: dict[str, list] = {}
        for d in ds:
            for c, (b, n) in d["rises"].items():
                rises.setdefault(c, []).append((b, n))
        rise_summary = {c: {"baseline": round(statistics.median(b for b, _ in v), 1),
                            "now": round(statistics.median(n for _, n in v), 1)} for c, v in rises.items()}
        lat_now, lat_base = med("latency_s_per_token"), med("baseline_latency_s_per_token")
        parts = [f"{c.replace('_util', '')} {r['baseline']:.0f}%->{r['now']:.0f}%" for c, r in rise_summary.items()]
        if lat_now and lat_base:
            parts.append(f"time per token per request {lat_base * 1000:.1f}->{lat_now * 1000:.1f} ms")
        tokens, base_tokens = med("tokens_per_s"), med("baseline_tokens_per_s")
        summary = (f"GPU {gpu} busy without more throughput for {seg.duration}s: {tokens or 0:.0f} tokens/s vs "
                   f"{base_tokens or 0:.0f} baseline; " + ", ".join(parts) + name_foreign(foreign))
        evidence = {"duration_s": seg.duration, "tokens_per_s": tokens, "baseline_tokens_per_s": base_tokens,
                    "sm_util": med("sm_util"), "baseline_sm_util": med("baseline_sm_util"),
                    "activity_rises": rise_summary, "latency_s_per_token": lat_now,
                    "baseline_latency_s_per_token": lat_base, "foreign_processes": foreign}
        return Event(id=f"util_throughput_mismatch:{host}:{gpu}:{seg.start}", kind="util_throughput_mismatch",
                     start=float(seg.start), end=float(seg.end), host=host, gpu=gpu, severity="warning",
                     klass=None, summary=summary, evidence=evidence, open=open_)


class SaturationDetector:
    """Busy GPU and a growing queue (waiting requests or TTFT p95) for ``saturation_min_s``."""

    def __init__(self, cfg: AnalysisConfig) -> None:
        self.cfg = cfg
        self.recent: deque[tuple[int, bool, float | None, float | None]] = deque()
        self.tracker = RunTracker(("saturated",), merge_s=2, min_s=cfg.saturation_min_s)
        self.finished: list[Segment] = []
        self.trend: dict[int, tuple[float, float]] = {}

    def feed(self, s: Second, klass: str) -> None:
        self.recent.append((s.t, klass in BUSY_CLASSES, s.waiting, None))
        while self.recent and self.recent[0][0] <= s.t - self.cfg.saturation_min_s:
            self.recent.popleft()
        saturated = False
        window = list(self.recent)
        if len(window) >= max(3, int(self.cfg.saturation_min_s * 0.8)) and all(b for _, b, _, _ in window):
            pts = [(t, w) for t, _, w, _ in window if w is not None]
            if len(pts) >= 3 and pts[-1][1] >= 1:
                slope = _slope(pts)
                if slope > 0.05:
                    saturated = True
                    self.trend[s.t] = (pts[-1][1], slope)
        self.finished += self.tracker.feed(s.t, "saturated" if saturated else "ok")
        for t in [t for t in self.trend if t < s.t - 3 * 3600]:
            del self.trend[t]

    def events(self, host: str, gpu: int, foreign: list[dict] | None = None) -> list[Event]:
        foreign = foreign or []
        out = [self._event(host, gpu, seg, foreign, False) for seg in self.finished]
        self.finished = []
        out += [self._event(host, gpu, seg, foreign, True) for seg in self.tracker.open_segments()]
        return out

    def _event(self, host: str, gpu: int, seg: Segment, foreign: list[dict], open_: bool) -> Event:
        trend = [self.trend[t] for t in seg.seconds if t in self.trend]
        last_waiting = trend[-1][0] if trend else None
        slope = statistics.median(s for _, s in trend) if trend else None
        summary = (f"GPU {gpu} saturated for {seg.duration}s: busy with useful work while the queue grows "
                   f"({last_waiting or 0:.0f} waiting, +{(slope or 0) * 60:.0f}/min); add capacity or change the "
                   "batch policy" + name_foreign(foreign))
        return Event(id=f"saturation:{host}:{gpu}:{seg.start}", kind="saturation", start=float(seg.start),
                     end=float(seg.end), host=host, gpu=gpu, severity="warning", klass=None, summary=summary,
                     evidence={"duration_s": seg.duration, "requests_waiting_last": last_waiting,
                               "waiting_growth_per_s": None if slope is None else round(slope, 3),
                               "foreign_processes": foreign},
                     open=open_)


def name_foreign(foreign: list[dict]) -> str:
    """``; other processes on the GPU: pid 647 neighbor.py (12.0 GiB, 45% SM)`` for the first
    three, or "" when there are none. GPU memory in GiB; the SM share only where NVML gave one."""
    if not foreign:
        return ""
    names = []
    for f in foreign[:3]:
        facts = []
        if f.get("used_memory_bytes"):
            facts.append(f"{f['used_memory_bytes'] / 2**30:.1f} GiB")
        if f.get("sm_util") is not None:
            facts.append(f"{f['sm_util']:.0f}% SM")
        program = _program(f.get("cmdline"))
        names.append(f"pid {f['pid']}" + (f" {program}" if program else "") + (f" ({', '.join(facts)})" if facts else ""))
    more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
    return "; other processes on the GPU: " + ", ".join(names) + more


def _program(cmdline: str | None) -> str:
    """The program a command line runs, short: ``python3 train.py --x`` -> ``train.py``."""
    words = (cmdline or "").split()
    for w in words:
        base = w.rsplit("/", 1)[-1]
        if not base.startswith("-") and not base.startswith("python"):
            return base[:40]
    return words[0].rsplit("/", 1)[-1][:40] if words else ""


def _slope(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / den if den else 0.0


def mbu_features(s: Second, peak_bw_bytes_s: float | None, weight_bytes: float) -> dict[str, float | None]:
    """Achieved DRAM bandwidth and, with known weights, model bandwidth utilization (0-1).

    MBU = weight bytes read per decode step x decode steps per second / peak bandwidth, with
    steps per second = generated tokens/s / running requests (one step serves the batch).
    """
    out: dict[str, float | None] = {}
    if peak_bw_bytes_s and s.dram_bw_util is not None:
        # whole MB/s: the utilization behind it has 2 decimals of a percent of TB/s
        out["dram_bw_bytes_s"] = round(s.dram_bw_util / 100.0 * peak_bw_bytes_s, -6)
        out["dram_bw_of_peak"] = round(s.dram_bw_util / 100.0, 4)
    if peak_bw_bytes_s and weight_bytes and s.gen_tokens_s and s.running and s.running >= 1:
        steps = s.gen_tokens_s / s.running
        out["mbu"] = round(weight_bytes * steps / peak_bw_bytes_s, 4)
    return out
