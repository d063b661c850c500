"""Regressions: a period against its baseline (the period before, or the same time yesterday).

At every boundary of ``regression_window_s`` (aligned to the clock), the period that just
ended is compared with its baseline on TTFT p95, ITL p50, generated tokens/s and the share
of GPU time in starved classes. A change of at least ``regression_ratio`` (latency up,
throughput down while demand did not fall, or +20 points of starved time) is an event
carrying both periods' numbers and the functions whose share of the profile changed most.
"""
from __future__ import annotations

from infersight.daemon.analysis import attribution
from infersight.daemon.config.load import AnalysisConfig
from infersight.storage import analysis as q
from infersight.storage import events as q_events
from infersight.storage.model import GAP_CLASSES, Event
from infersight.storage.store import Store

STARVED_RISE = 0.20   # share of GPU seconds in starved classes, absolute rise


class RegressionDetector:
    def __init__(self, cfg: AnalysisConfig) -> None:
        self.cfg = cfg
        self.last_checked: int | None = None

    def check(self, store: Store, host: str, t_to: int) -> list[Event]:
        w = int(self.cfg.regression_window_s)
        boundary = (t_to // w) * w
        if self.last_checked is None:
            self.last_checked = boundary
            first = store.read_sync(q.first_gpu_second)
            if first is None or boundary - w < first:
                return []
        elif boundary <= self.last_checked:
            return []
        self.last_checked = boundary
        cur = (float(boundary - w), float(boundary))
        offset = w if self.cfg.regression_baseline == "previous" else 86400
        base = (cur[0] - offset, cur[1] - offset)
        return self.compare(store, host, base, cur)

    def compare(self, store: Store, host: str, base: tuple[float, float], cur: tuple[float, float]) -> list[Event]:
        """Regression events of period ``cur`` against ``base`` (empty when nothing regressed)."""
        b = store.read_sync(q.engine_means, *base)
        c = store.read_sync(q.engine_means, *cur)
        cls_b = store.read_sync(q_events.class_seconds, *base)
        cls_c = store.read_sync(q_events.class_seconds, *cur)
        if not cls_b or not cls_c:
            return []
        findings = {}
        ratio = self.cfg.regression_ratio
        for signal in ("ttft_seconds_p95", "itl_seconds_p50", "e2e_seconds_p95"):
            if (b.get(signal) and c.get(signal) and c[signal] >= ratio * b[signal]
                    and c[signal] >= self.cfg.regression_min_latency_s):
                findings[signal] = {"before": round(b[signal], 6), "after": round(c[signal], 6),
                                    "ratio": round(c[signal] / b[signal], 3)}
        gen_b, gen_c = b.get("generation_tokens_per_s"), c.get("generation_tokens_per_s")
        demand_b = (b.get("requests_running") or 0) + (b.get("requests_waiting") or 0)
        demand_c = (c.get("requests_running") or 0) + (c.get("requests_waiting") or 0)
        if gen_b and gen_c is not None and gen_c * ratio <= gen_b and demand_c >= 0.9 * demand_b:
            findings["generation_tokens_per_s"] = {"before": round(gen_b, 2), "after": round(gen_c, 2),
                                                   "ratio": round(gen_c / gen_b, 3)}
        mix_b, mix_c = _starved_share(cls_b), _starved_share(cls_c)
        if mix_c - mix_b >= STARVED_RISE:
            findings["starved_share"] = {"before": round(mix_b, 3), "after": round(mix_c, 3)}
        if not findings:
            return []
        changes = attribution.diff_summary(store, base, cur, limit=10)
        what = ", ".join(f"{k} {v['before']:g} -> {v['after']:g}" for k, v in findings.items())
        top = changes[0] if changes else None
        summary = (f"regression vs {'the previous period' if self.cfg.regression_baseline == 'previous' else 'yesterday'}"
                   f": {what}" + (f"; biggest profile change {top['name']} "
                                  f"{top['a_share'] * 100:.0f}% -> {top['b_share'] * 100:.0f}%" if top else ""))
        evidence = {"baseline": {"from": base[0], "to": base[1]}, "period": {"from": cur[0], "to": cur[1]},
                    "changes": findings, "class_seconds_before": _by_class(cls_b),
                    "class_seconds_after": _by_class(cls_c), "profile_changes": changes}
        return [Event(id=f"regression:{host}:{int(cur[0])}", kind="regression", start=cur[0], end=cur[1], host=host,
                      gpu=None, severity="warning", summary=summary, evidence=evidence,
                      top_frames=[{"frame": ch["name"], "file": ch["file"], "share": ch["b_share"],
                                   "delta_share": ch["delta_share"]} for ch in changes[:5]])]


def _starved_share(cls: dict[tuple[int, str], float]) -> float:
    total = sum(cls.values())
    return sum(v for (_, k), v in cls.items() if k in GAP_CLASSES) / total if total else 0.0


def _by_class(cls: dict[tuple[int, str], float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for (_, k), v in cls.items():
        out[k] = out.get(k, 0.0) + v
    return out
