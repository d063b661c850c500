"""The episode criteria of a replayed recording, phase by phase (issue 25's "Done when").

Pure functions over a replay's windows and events and the recording's labels:

- ``class_changes``: how often the class changes between adjacent inner seconds of a phase
  (its first and last second dropped: the seconds of a transition);
- ``gaps_in``: the cpu_gpu_gap findings that overlap a phase by half of the shorter;
- ``edges_ok``: whether a finding starts and ends within ``tolerance`` seconds of its phase;
- ``names_pid``: whether a finding names a process (summary or evidence).

bench/real_engine/score.py prints them per recording; tests/test_episodes_real.py asserts them.
"""
from __future__ import annotations

import json
from pathlib import Path

LONG_PHASE_S = 10.0


def inner_classes(windows: list[dict], t0: float, t1: float) -> list[str]:
    return [w["class"] for w in sorted(windows, key=lambda w: w["start"]) if t0 + 1 <= w["start"] and w["end"] <= t1 - 1]


def class_changes(windows: list[dict], t0: float, t1: float) -> int:
    seq = inner_classes(windows, t0, t1)
    return sum(1 for a, b in zip(seq, seq[1:]) if a != b)


def overlap(e: dict, t0: float, t1: float) -> float:
    return min(e["end"], t1) - max(e["start"], t0)


def findings_in(events: list[dict], kind: str, t0: float, t1: float) -> list[dict]:
    return [e for e in events if e["kind"] == kind and overlap(e, t0, t1) >= 0.5 * min(e["end"] - e["start"], t1 - t0)]


def gaps_in(events: list[dict], t0: float, t1: float) -> list[dict]:
    return findings_in(events, "cpu_gpu_gap", t0, t1)


def edges_ok(e: dict, t0: float, t1: float, tolerance: float = 2.0) -> bool:
    return abs(e["start"] - t0) <= tolerance and abs(e["end"] - t1) <= tolerance


def names_pid(e: dict, pid: int) -> bool:
    text = e.get("summary", "") + json.dumps(e.get("evidence") or {})
    return f"pid {pid}" in text or f'"pid": {pid}' in text


def neighbour_pids(root: Path) -> list[int]:
    procs = json.loads((root / "processes.json").read_text())["processes"]
    return [int(p["pid"]) for p in procs if p.get("role") == "other_gpu_process"]


def is_neighbour_phase(name: str) -> bool:
    return "neighbor" in name


def phase_report(root: Path, labels: list[dict], windows: list[dict], events: list[dict]) -> list[dict]:
    """One row per labelled phase: duration, inner class counts, class changes, gap findings
    (with their edge offsets), and for neighbour phases whether an event names the neighbour."""
    neighbours = neighbour_pids(root)
    rows = []
    for lab in labels:
        t0, t1 = lab["t0"], lab["t1"]
        seq = inner_classes(windows, t0, t1)
        gaps = gaps_in(events, t0, t1)
        row = {"phase": lab["phase"], "t0": t0, "t1": t1, "seconds": round(t1 - t0, 1),
               "classes": {k: seq.count(k) for k in dict.fromkeys(seq)}, "changes": class_changes(windows, t0, t1),
               "gaps": [(round(e["start"] - t0, 1), round(e["end"] - t1, 1), e["class"],
                         ((e.get("evidence") or {}).get("culprit") or {}).get("role")) for e in gaps],
               "edges_ok": all(edges_ok(e, t0, t1) for e in gaps)}
        if is_neighbour_phase(lab["phase"]):
            near = [e for e in events if overlap(e, t0, t1) > 0]
            row["neighbour_named"] = any(names_pid(e, pid) for e in near for pid in neighbours)
        rows.append(row)
    return rows


def violations(rows: list[dict]) -> list[str]:
    """What breaks the criteria: a long phase that changes class more than once, more than one
    gap finding in a phase, a gap finding off its phase's edges, a neighbour not named."""
    out = []
    for r in rows:
        long = r["seconds"] >= LONG_PHASE_S
        if long and r["changes"] > 1:
            out.append(f"{r['phase']}@{r['t0']:.0f}: {r['changes']} class changes {r['classes']}")
        if len(r["gaps"]) > 1:
            out.append(f"{r['phase']}@{r['t0']:.0f}: {len(r['gaps'])} gap findings {r['gaps']}")
        elif r["gaps"] and not r["edges_ok"] and long:
            out.append(f"{r['phase']}@{r['t0']:.0f}: gap off the edges {r['gaps']}")
        if r.get("neighbour_named") is False:
            out.append(f"{r['phase']}@{r['t0']:.0f}: neighbour not named")
    return out


# The classes each labelled phase may get, from the recordings' READMEs. The synthetic H100
# scenario labels its phases by class; the real recordings label workloads, whose class the
# READMEs' counters settle only as far as this: a starved phase is host- or launch-bound (the
# counters do not separate the two), a GPU shared with a neighbour is busy with any roof.
BUSY_CLASSES = ("compute_bound", "memory_bound", "latency_bound")
STARVED_CLASSES = ("host_bound", "launch_bound")
SCENARIO_CLASSES = {"healthy": ("memory_bound",), "host_bound": ("host_bound",), "core_bound": ("host_bound",),
                    "memory_bound": ("memory_bound",), "idle": ("idle",), "launch_bound": ("launch_bound",),
                    "compute_bound": ("compute_bound",), "stall": ("stall",), "noisy_neighbor": BUSY_CLASSES}
REAL_CLASSES = {"idle": ("idle",), "starting": ("starting",), "prefill": ("compute_bound",)}
REAL_OVERRIDES = {("vllm-large", "single_stream"): ("memory_bound",),
                  ("vllm-large", "heavy_decode"): ("latency_bound", "memory_bound"),
                  ("vllm-large", "structured"): ("memory_bound", "latency_bound")}


def acceptable_classes(recording: str, phase: str) -> tuple[str, ...] | None:
    """The classes a phase may get (None: no class is settled for it, e.g. a shutdown)."""
    if recording.startswith("h100-"):
        return SCENARIO_CLASSES.get(phase)
    if (recording, phase) in REAL_OVERRIDES:
        return REAL_OVERRIDES[(recording, phase)]
    if phase in REAL_CLASSES:
        return REAL_CLASSES[phase]
    if "neighbor" in phase:
        return BUSY_CLASSES
    if phase == "shutdown":
        return None
    return STARVED_CLASSES
