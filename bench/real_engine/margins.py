"""Every analysis threshold against the real recordings: the values on both sides of it.

usage: python3 bench/real_engine/margins.py [DIR ...]   (default: every recording in tests/fixtures)

Replays each recording through the analysis (in memory) and keeps, per labelled phase, the
pooled figures of the episode that covers most of it (judge.py's Verdict). Then, per
threshold of AnalysisConfig, prints the nearest phase value below and above it and the
margin of each in percent of the threshold: a threshold must not sit within 15 % of a phase
it separates. For the segmenter's thresholds it prints, per feature, the largest difference
inside a phase (between the means of two stretches of at least ``episode_min_s`` seconds:
what must NOT split) and the differences at phase changes that this feature alone separates.

Recordings are the real vLLM and transformers ones plus the synthetic H100 scenario (our
engine on a real GPU, not a real engine): each row names its recording.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def replay_verdicts(root: Path):
    """(labels, [(phase label, Verdict of the episode covering most of it)], per-second observations)."""
    from infersight.daemon.analysis import episode_state
    from infersight.daemon.analysis.observe import observation
    from infersight.daemon.config.load import Config
    from infersight.daemon.replay.command import run_replay
    from infersight.storage.store import Store

    verdicts, observations = {}, {}
    orig_episode, orig_advance = episode_state.GpuState._episode, episode_state.GpuState.advance

    def episode(self, seconds, explainer, open_):
        events = orig_episode(self, seconds, explainer, open_)
        verdicts[self.last_verdict.start] = self.last_verdict
        return events

    def advance(self, new, splits, explainer):
        for s in new:
            observations[s.t] = observation(s)
        return orig_advance(self, new, splits, explainer)

    episode_state.GpuState._episode, episode_state.GpuState.advance = episode, advance
    try:
        config = Config()
        store = Store.open(":memory:", host=config.host)
        try:
            run_replay(root, store, config)
        finally:
            store.close()
    finally:
        episode_state.GpuState._episode, episode_state.GpuState.advance = orig_episode, orig_advance
    labels = [json.loads(x) for x in (root / "labels.jsonl").read_text().splitlines() if x.strip()]
    out = []
    for lab in labels:
        best = max(verdicts.values(), key=lambda v: min(v.end, lab["t1"]) - max(v.start, lab["t0"]), default=None)
        if best is not None and min(best.end, lab["t1"]) - max(best.start, lab["t0"]) > 0.5 * (lab["t1"] - lab["t0"]):
            out.append((lab, best))
    return labels, out, observations


def busiest(v) -> float | None:
    cpus = [p.own_cpu for p in v.procs if p.own_cpu is not None]
    return max(cpus) if cpus else None


def class_values(name: str, v):
    """The pooled figure a classification threshold is compared with, None where it does not apply."""
    m = v.means
    sm, util, tensor, dram = m.get("sm"), m.get("util"), m.get("tensor"), m.get("dram")
    if name == "busy_sm_pct":
        return sm
    if name in ("cpu_busy_pct", "host_saturated_pct"):
        return busiest(v)
    if name == "host_bound_max_sm_pct":
        return sm if (busiest(v) or 0) >= 90 else None
    if name == "launch_ratio":
        return sm / util if sm is not None and util and util >= 25 else None
    if name == "compute_tensor_pct":
        return tensor if sm and sm >= 40 else None
    if name == "compute_roof_ratio":
        return tensor / sm if sm and sm >= 40 and tensor is not None else None
    if name == "memory_dram_pct":
        return dram if sm and sm >= 40 else None
    if name == "memory_roof_ratio":
        return dram / sm if sm and sm >= 40 and dram is not None else None
    if name == "throttle_front_share":
        from infersight.daemon.analysis.throttle import front_share
        share, _, _ = front_share(v)
        return share if v.klass in ("host_bound", "launch_bound") else None
    return None


CLASS_THRESHOLDS = ("busy_sm_pct", "cpu_busy_pct", "host_saturated_pct", "host_bound_max_sm_pct", "launch_ratio",
                    "compute_tensor_pct", "compute_roof_ratio", "memory_dram_pct", "memory_roof_ratio",
                    "throttle_front_share")


def feature_value(name: str, obs) -> float | None:
    return obs.numeric.get(name)


def within_phase_max(series: list[float], min_len: int) -> float:
    """The largest |mean(left) - mean(right)| over split points with min_len values each side."""
    n = len(series)
    best = 0.0
    for k in range(min_len, n - min_len + 1):
        a, b = series[:k], series[k:]
        best = max(best, abs(sum(a) / len(a) - sum(b) / len(b)))
    return best


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from infersight.daemon.config.load import Config

    cfg = Config().analysis
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="*")
    args = ap.parse_args()
    dirs = [Path(d) for d in args.dirs] or sorted(p.parent for p in (ROOT / "tests" / "fixtures").glob("*/labels.jsonl"))
    rows = []           # (recording, phase, Verdict)
    feats = {"load": cfg.episode_load_log2, "front": cfg.episode_load_log2, "mix": cfg.episode_mix,
             "sm": cfg.episode_gpu_pct, "tensor": cfg.episode_gpu_pct, "dram": cfg.episode_gpu_pct,
             "foreign": cfg.episode_foreign}
    inside: dict[str, list] = {f: [] for f in feats}
    changes: dict[str, list] = {f: [] for f in feats}
    for d in dirs:
        labels, pairs, observations = replay_verdicts(d)
        rows += [(d.name, lab["phase"], v) for lab, v in pairs]
        means = []
        for lab in labels:
            secs = [observations[t] for t in sorted(observations) if lab["t0"] + 1 <= t and t + 1 <= lab["t1"] - 1]
            m = {}
            for f in feats:
                series = [x for x in (feature_value(f, o) for o in secs) if x is not None]
                if len(series) >= 2 * cfg.episode_min_s and not any(o.key != ("serving",) for o in secs):
                    inside[f].append((within_phase_max(series, cfg.episode_min_s), d.name, lab["phase"]))
                if series:
                    m[f] = sum(series) / len(series)
            means.append((lab, m))
        for (la, ma), (lb, mb) in zip(means, means[1:]):
            if "starting" in (la["phase"], lb["phase"]) or "shutdown" in (la["phase"], lb["phase"]):
                continue
            diffs = {f: abs(ma[f] - mb[f]) for f in feats if f in ma and f in mb}
            for f, x in diffs.items():
                changes[f].append((x, d.name, f"{la['phase']}->{lb['phase']}"))
    print("== classification thresholds (pooled figures of the episode covering each phase)")
    for name in CLASS_THRESHOLDS:
        thr = getattr(cfg, name)
        vals = [(class_values(name, v), rec, ph) for rec, ph, v in rows]
        vals = [(x, rec, ph) for x, rec, ph in vals if x is not None and math.isfinite(x)]
        below = max((x for x in vals if x[0] < thr), default=None)
        above = min((x for x in vals if x[0] >= thr), default=None)
        fmt = lambda x: "none" if x is None else f"{x[0]:.3g} ({x[1]} {x[2]}, {abs(x[0] - thr) / thr * 100:.0f}%)"
        print(f"  {name} = {thr:g}: nearest below {fmt(below)}; nearest above {fmt(above)}")
    print("== segmentation thresholds: largest change inside a phase (must stay below) / smallest change it "
          "alone separates at a phase change")
    for f, thr in feats.items():
        worst = max(inside[f], default=None)
        alone = []
        for x, rec, change in changes[f]:
            if x >= thr:
                alone.append((x, rec, change))
        near = min(alone, default=None)
        print(f"  {f} ({thr:g}): inside max {('none' if worst is None else f'{worst[0]:.3g} ({worst[1]} {worst[2]}, {(thr - worst[0]) / thr * 100:.0f}% below)')}; "
              f"smallest change above {('none' if near is None else f'{near[0]:.3g} ({near[1]} {near[2]}, {(near[0] - thr) / thr * 100:.0f}% above)')}")


if __name__ == "__main__":
    main()
