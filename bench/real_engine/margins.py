"""Every analysis threshold against the recordings: how far each sits from what it decides.

usage: python3 bench/real_engine/margins.py [--margin 0.15] [DIR ...]   (default: every recording
       in tests/fixtures with labels)

Replays each recording (in memory) and keeps, per labelled phase, the pooled figures of the
episode covering most of it (judge.py's Verdict) and the segmenter's per-second inputs. Then:

- classification and throttle thresholds: each is moved down and up by ``--margin`` (15 %) in
  turn and every phase's episode re-judged from the same pooled figures; a phase whose class
  (or named throttle) changes to one its recording does not allow
  (tests/analysis_criteria.acceptable_classes) sits within the margin of a threshold it must
  be separated by. Printed per threshold: the phases that flip (should be none), how many
  move between classes they may have either way, and the nearest phase value on each side;
- segmentation thresholds: each feature's threshold is lowered by the margin and every
  phase of 10 s or more is searched for a split (should find none), then raised by the margin
  and every change between two such phases is searched (the change must still be found by
  some feature). Printed per feature: the largest score inside a phase (below 1 / (1 +
  margin) holds) and the phase changes that feature alone carries.

The recordings are real vLLM 0.24 and transformers runs plus the synthetic H100 scenario (our
engine on a real GPU, not a real engine); each row names its recording.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LONG_PHASE_S = 10.0
CLASS_THRESHOLDS = ("busy_sm_pct", "idle_sm_pct", "cpu_busy_pct", "host_saturated_pct", "host_bound_max_sm_pct",
                    "launch_ratio", "launch_min_util_pct", "compute_tensor_pct", "compute_roof_ratio",
                    "memory_dram_pct", "memory_roof_ratio", "throttle_front_share")
FEATURE_THRESHOLDS = {"load": "episode_load_log2", "front": "episode_load_log2", "mix": "episode_mix",
                      "sm": "episode_gpu_pct", "tensor": "episode_gpu_pct", "dram": "episode_gpu_pct",
                      "foreign": "episode_foreign", "cpu": "episode_cpu_pct", "prof": "episode_profile_novel"}


def replay_recording(root: Path):
    """(labels, {phase index: Verdict}, {second: Observation})."""
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
    covering = {}
    for i, lab in enumerate(labels):
        def overlap(v):
            return min(v.end, lab["t1"]) - max(v.start, lab["t0"])
        best = max(verdicts.values(), key=overlap, default=None)
        if best is not None and overlap(best) > 0.5 * (lab["t1"] - lab["t0"]):
            covering[i] = best
    return labels, covering, observations


def judged(v, cfg) -> tuple[str, int | None]:
    """(class, pid named first) of a verdict's pooled figures under ``cfg``."""
    from infersight.daemon.analysis.classify import classify
    from infersight.daemon.analysis.throttle import find_throttle

    klass, _ = classify(v.aggregate, cfg, 1.0, None if v.klass not in ("starting", "stopping") else v.klass)
    th = find_throttle(dataclasses.replace(v, klass=klass), cfg) if klass in ("host_bound", "launch_bound") else None
    return klass, th.first.pid if th is not None else None


def phase_value(name: str, v) -> float | None:
    """The pooled figure a threshold reads, for the 'nearest on each side' columns."""
    from infersight.daemon.analysis.throttle import front_share

    m = v.means
    sm, util = m.get("sm"), m.get("util")
    own = [p.own_cpu for p in v.procs if p.own_cpu is not None]
    return {"busy_sm_pct": sm, "idle_sm_pct": sm, "host_bound_max_sm_pct": sm,
            "cpu_busy_pct": max(own, default=None), "host_saturated_pct": max(own, default=None),
            "launch_ratio": sm / util if sm is not None and util else None, "launch_min_util_pct": util,
            "compute_tensor_pct": m.get("tensor"),
            "compute_roof_ratio": m["tensor"] / sm if sm and m.get("tensor") is not None else None,
            "memory_dram_pct": m.get("dram"),
            "memory_roof_ratio": m["dram"] / sm if sm and m.get("dram") is not None else None,
            "throttle_front_share": front_share(v)[0]}.get(name)


def main() -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    global acceptable_classes
    from analysis_criteria import acceptable_classes
    from infersight.daemon.analysis.observe import feature_specs
    from infersight.daemon.analysis.segment import best_split
    from infersight.daemon.config.load import Config

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--margin", type=float, default=0.15)
    ap.add_argument("dirs", nargs="*")
    args = ap.parse_args()
    cfg = Config().analysis
    dirs = [Path(d) for d in args.dirs] or sorted(p.parent for p in (ROOT / "tests" / "fixtures").glob("*/labels.jsonl"))
    phases, inner = [], []       # (recording, phase, Verdict); (recording, phase, [Observation])
    for d in dirs:
        labels, covering, observations = replay_recording(d)
        for i, lab in enumerate(labels):
            if i in covering:
                phases.append((d.name, lab["phase"], covering[i]))
            secs = [observations[t] for t in sorted(observations) if lab["t0"] + 1 <= t and t + 1 <= lab["t1"] - 1]
            inner.append((d.name, lab["phase"], lab["t1"] - lab["t0"], secs))
    print(f"== classification and throttle thresholds, each moved by {args.margin:.0%} "
          f"({len(phases)} phases of {len(dirs)} recordings)")
    for name in CLASS_THRESHOLDS:
        thr = getattr(cfg, name)
        flips, allowed = [], []
        for factor in (1 - args.margin, 1 + args.margin):
            moved = dataclasses.replace(cfg, **{name: thr * factor})
            for rec, ph, v in phases:
                before, after = judged(v, cfg), judged(v, moved)
                if before == after:
                    continue
                ok = acceptable_classes(rec, ph)
                # a class the phase may have either way, and the same process named first
                if ok is not None and before[0] in ok and after[0] in ok and before[1] == after[1]:
                    allowed.append(f"{rec}/{ph}")
                else:
                    flips.append(f"{rec}/{ph} {before[0]}->{after[0]} at x{factor:.2f}")
        vals = [(phase_value(name, v), rec, ph) for rec, ph, v in phases]
        vals = [x for x in vals if x[0] is not None]
        below = max((x for x in vals if x[0] < thr), default=None)
        above = min((x for x in vals if x[0] >= thr), default=None)

        def fmt(x):
            return "none" if x is None else f"{x[0]:.3g} ({x[1]}/{x[2]})"
        print(f"  {name} = {thr:g}: {'HOLDS' if not flips else 'FLIPS ' + ', '.join(flips)}"
              f"{f' (moves {len(allowed)} phases between classes they may have)' if allowed else ''}; "
              f"nearest values below {fmt(below)}, above {fmt(above)}")
    print(f"== segmentation thresholds, each moved by {args.margin:.0%}")
    base = feature_specs(cfg)
    long = [(rec, ph, secs) for rec, ph, dur, secs in inner if dur >= LONG_PHASE_S and len(secs) >= 2 * cfg.episode_min_s
            and all(o.key == ("serving",) for o in secs)]
    pairs = [(a, b) for a, b in zip(inner, inner[1:]) if a[0] == b[0] and a[2] >= LONG_PHASE_S and b[2] >= LONG_PHASE_S
             and all(o.key == ("serving",) for o in a[3] + b[3]) and a[3] and b[3]]
    for feat, key in FEATURE_THRESHOLDS.items():
        lower = dict(base, **{feat: dataclasses.replace(base[feat], threshold=base[feat].threshold * (1 - args.margin))})
        only = {feat: base[feat]}
        raised_only = {feat: dataclasses.replace(base[feat], threshold=base[feat].threshold * (1 + args.margin))}
        false_splits = []
        for rec, ph, secs in long:
            hit = best_split(secs, lower, cfg.episode_min_s, 4.0)
            if hit is not None and hit[1].reason.split(":")[0] == feat:
                false_splits.append(f"{rec}/{ph}")
        carried, lost = [], []
        for a, b in pairs:
            secs = a[3] + b[3]
            others = {k: s for k, s in base.items() if k != feat}
            alone = best_split(secs, others, cfg.episode_min_s, 4.0) is None
            if alone and best_split(secs, only, cfg.episode_min_s, 4.0) is not None:
                carried.append(f"{a[0]}/{a[1]}->{b[1]}")
                if best_split(secs, raised_only, cfg.episode_min_s, 4.0) is None:
                    lost.append(f"{a[0]}/{a[1]}->{b[1]}")
        print(f"  {feat} ({key} = {base[feat].threshold:g}): inside phases "
              f"{'no split' if not false_splits else 'SPLITS ' + ', '.join(false_splits)} at x{1 - args.margin:.2f}"
              f" ({len(long)} phases of 10 s or more); changes it alone carries: {len(carried)}"
              f"{' ' + ', '.join(carried) if carried else ''}"
              f"{'; LOST at x%.2f: ' % (1 + args.margin) + ', '.join(lost) if lost else ''}")


if __name__ == "__main__":
    main()
