"""Helpers for analysis tests: ground truth of the recordings and a phase-reordering tool.

``reorder_recording`` cuts a real recording into its labelled phases and writes a new
recording with the phases in another order, re-timed end to end, and with function names
renamed in the stacks: real counters and stacks, but an order and names the analysis has
never seen. Engine counters restart at each cut, which the normalizer treats as resets.
"""
from __future__ import annotations

import collections
import copy
import functools
import gzip
import json
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"

# README ground truth: phase -> expected most frequent class (None: any busy class)
EXPECTED_CLASS = {
    "healthy": "memory_bound", "host_bound": "host_bound", "core_bound": "host_bound",
    "memory_bound": "memory_bound", "idle": "idle", "launch_bound": "launch_bound",
    "compute_bound": "compute_bound", "stall": "stall", "noisy_neighbor": None,
}
BUSY = ("compute_bound", "memory_bound")


def replay(root: Path) -> tuple[list[dict], list[dict], list[str]]:
    """A recording through ``infersight replay``'s pipeline at the default config, in memory:
    (windows, events, errors)."""
    from infersight.daemon.config.load import Config
    from infersight.daemon.replay.command import run_replay
    from infersight.storage.store import Store

    config = Config()
    store = Store.open(":memory:", host=config.host)
    try:
        return run_replay(root, store, config)
    finally:
        store.close()


@functools.lru_cache(maxsize=None)
def _replay_once(root: str) -> tuple[list[dict], list[dict], list[str]]:
    return replay(Path(root))


def replay_shared(root: Path) -> tuple[list[dict], list[dict], list[str]]:
    """``replay(root)``, computed once per test session (a recording's replay takes 10-25 s;
    several test modules read the same ones); each caller gets its own copy."""
    return copy.deepcopy(_replay_once(str(root)))


def labels(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "labels.jsonl").read_text().splitlines() if line.strip()]


def class_counts(windows: list[dict], t0: float, t1: float) -> collections.Counter:
    """Classes of the windows inside [t0 + 1, t1 - 1] (a phase without its transition seconds)."""
    return collections.Counter(w["class"] for w in windows if w["start"] >= t0 + 1 and w["end"] <= t1 - 1)


def overlapping(events: list[dict], kind: str, t0: float, t1: float, klass: str | None = None) -> list[dict]:
    out = []
    for e in events:
        if e["kind"] != kind or (klass and e["class"] != klass):
            continue
        overlap = min(e["end"], t1) - max(e["start"], t0)
        if overlap >= 0.5 * min(e["end"] - e["start"], t1 - t0):
            out.append(e)
    return out


def _read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        return [line for line in fh if line.strip()]


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as fh:
        fh.writelines(line if line.endswith("\n") else line + "\n" for line in lines)


def reorder_recording(src: Path, dst: Path, order: list[str], renames: dict[str, str]) -> None:
    """Write ``dst``: the phases of ``src`` named in ``order`` (first occurrence of each), back to back."""
    phases = {}
    for p in labels(src):
        phases.setdefault(p["phase"], p)
    gpu = _read_lines(src / "gpu.jsonl")
    info, samples = gpu[0], [json.loads(line) for line in gpu[1:]]
    engine = [json.loads(line) for line in _read_lines(src / "engine_metrics.jsonl.gz")]
    procs = json.loads((src / "processes.json").read_text())
    windows = {p["pid"]: [json.loads(line) for line in _read_lines(src / p["stacks_windows"])]
               for p in procs["processes"] if p.get("stacks_windows")}
    start = phases[order[0]]["t0"]
    out_gpu, out_engine, out_labels = [info], [], []
    out_windows: dict[int, list[str]] = {pid: [] for pid in windows}
    cursor = start
    for name in order:
        p = phases[name]
        shift = cursor - p["t0"]
        for s in samples:
            if p["t0"] <= s["t"] < p["t1"]:
                out_gpu.append(json.dumps({**s, "t": s["t"] + shift}))
        for e in engine:
            if p["t0"] <= e["t"] < p["t1"]:
                out_engine.append(json.dumps({**e, "t": e["t"] + shift}))
        for pid, ws in windows.items():
            for w in ws:
                if p["t0"] <= w["launch_wall"] + 0.5 < p["t1"]:
                    raw = w["raw"]
                    for old, new in renames.items():
                        raw = raw.replace(old, new) if raw else raw
                    out_windows[pid].append(json.dumps({**w, "launch_wall": w["launch_wall"] + shift, "raw": raw}))
        out_labels.append(json.dumps({"phase": name, "t0": cursor, "t1": cursor + (p["t1"] - p["t0"])}))
        cursor += p["t1"] - p["t0"]
    dst.mkdir(parents=True, exist_ok=True)
    _write_lines(dst / "gpu.jsonl", out_gpu)
    _write_lines(dst / "engine_metrics.jsonl.gz", out_engine)
    _write_lines(dst / "labels.jsonl", out_labels)
    for p in procs["processes"]:
        if p.get("stacks_windows"):
            _write_lines(dst / p["stacks_windows"], out_windows[p["pid"]])
    (dst / "processes.json").write_text(json.dumps(procs))
