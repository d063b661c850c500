"""Ground truth of a recording, computed from its raw files alone (never from infersight's analysis).

usage: python3 bench/real_engine/summarize.py DIR [--markdown]

Per labelled phase (its first and last second dropped as transitions): the GPU's NVML and
GPM means (util, SM, occupancy, tensor, DRAM bandwidth, %), the CPU of each role in % of a
core, generated tokens/s and running requests from the engine's own counters, the slowest
/metrics answer, and per serving process its busiest threads and top frames by active py-spy
samples: self (the leaf function) and inclusive (any frame of the stack, leaving out the
trunk shared by more than 90% of the samples, so the answer names what differs).
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import statistics
from pathlib import Path

LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
THREAD = re.compile(r"^thread \((?P<tid>\w+)\)(?:: (?P<name>[^;]*))?$")
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
COUNTER = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{[^}]*\})?\s+(?P<value>\S+)", re.M)


def _lines(path: Path) -> list[str]:
    with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as fh:
        return fh.read().splitlines()


def load(root: Path) -> dict:
    labels = [json.loads(x) for x in _lines(root / "labels.jsonl")]
    gpu_path = root / "gpu.jsonl" if (root / "gpu.jsonl").exists() else root / "gpu.jsonl.gz"
    gpu = [json.loads(x) for x in _lines(gpu_path)]
    procs = json.loads((root / "processes.json").read_text())["processes"]
    metrics = root / "engine_metrics.jsonl.gz"     # absent for a workload without a server
    scrapes = [json.loads(x) for x in _lines(metrics)] if metrics.exists() else []
    windows = {}
    for p in procs:
        if p.get("stacks_windows"):
            windows[p["pid"]] = [json.loads(x) for x in _lines(root / p["stacks_windows"])]
    return {"labels": labels, "gpu": [g for g in gpu if "t" in g], "procs": procs, "scrapes": scrapes,
            "windows": windows}


def parse_raw(raw: str) -> list[tuple[str, str, list[str], int]]:
    """(thread id, thread name, frames root->leaf as 'func (file)', count) per raw line."""
    out = []
    for line in (raw or "").splitlines():
        m = LINE.match(line.strip())
        if not m:
            continue
        parts = m.group("stack").split(";")
        tid, name = "?", ""
        t = THREAD.match(parts[0])
        if t:
            tid, name, parts = t.group("tid"), t.group("name") or "", parts[1:]
        frames = []
        for f in parts:
            fm = FRAME.match(f)
            frames.append(f"{fm.group('func')} ({fm.group('file')})" if fm else f)
        out.append((tid, name, frames, int(m.group("count"))))
    return out


def counter_sum(text: str, name: str) -> float | None:
    vals = [float(m.group("value")) for m in COUNTER.finditer(text) if m.group("name") == name]
    return sum(vals) if vals else None


def phase_summary(rec: dict, t0: float, t1: float) -> dict:
    a, b = t0 + 1.0, t1 - 1.0
    rows = [g for g in rec["gpu"] if a <= g["t"] <= b]
    mean = lambda k: round(statistics.mean(r[k] for r in rows if r.get(k) is not None), 1) if rows else None
    role_of = {str(p["pid"]): p["role"] for p in rec["procs"]}
    cpu = collections.defaultdict(list)
    for r in rows:
        per_role = collections.Counter()
        for pid, v in (r.get("proc_cpu_pct") or {}).items():
            if v is not None:
                per_role[role_of.get(pid, "?")] += v
        for role, v in per_role.items():
            cpu[role].append(v)
    scr = [s for s in rec["scrapes"] if a <= s["t"] <= b]
    good = [s for s in scr if "text" in s]
    toks = running = None
    if len(good) >= 2:
        g0 = counter_sum(good[0]["text"], "vllm:generation_tokens_total")
        g1 = counter_sum(good[-1]["text"], "vllm:generation_tokens_total")
        if g0 is not None and g1 is not None:
            toks = round((g1 - g0) / (good[-1]["t"] - good[0]["t"]), 1)
        rr = [counter_sum(s["text"], "vllm:num_requests_running") for s in good]
        rr = [x for x in rr if x is not None]
        running = round(statistics.mean(rr), 1) if rr else None
    out = {"gpu": {k: mean(k) for k in ("util_gpu", "sm_util", "sm_occupancy", "tensor_util", "dram_bw_util")},
           "cpu_pct": {r: round(statistics.mean(v)) for r, v in sorted(cpu.items())},
           "tokens_per_s": toks, "requests_running": running,
           "scrapes": len(scr), "scrape_errors": len(scr) - len(good),
           "slowest_scrape_s": round(max((s.get("latency_s") or 0) for s in scr), 2) if scr else None,
           "processes": {}}
    for pid, wins in rec["windows"].items():
        role = role_of[str(pid)]
        self_c, incl_c, thr = collections.Counter(), collections.Counter(), collections.Counter()
        total = 0
        for w in wins:
            if not (a <= w["launch_wall"] + 0.5 <= b):
                continue
            for tid, name, frames, n in parse_raw(w.get("raw")):
                total += n
                thr[f"{name or 'thread'} ({tid})"] += n
                if frames:
                    self_c[frames[-1]] += n
                for f in set(frames):
                    incl_c[f] += n
        if not total:
            continue
        share = lambda c: [(f, round(v / total, 3)) for f, v in c]
        out["processes"][f"{role} {pid}"] = {
            "samples": total,
            "threads": share(thr.most_common(3)),
            "self": share(self_c.most_common(5)),
            "inclusive": share([(f, v) for f, v in incl_c.most_common() if v / total <= 0.9][:6]),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    rec = load(Path(args.dir))
    phases = [(lab["phase"], lab["t0"], lab["t1"], phase_summary(rec, lab["t0"], lab["t1"])) for lab in rec["labels"]]
    if not args.markdown:
        for name, t0, t1, s in phases:
            print(json.dumps({"phase": name, "t0": t0, "t1": t1, **s}))
        return
    print("| phase | s | util / SM / occ / tensor / DRAM % | CPU % of a core | tokens/s, running | slowest /metrics |")
    print("|---|---|---|---|---|---|")
    for name, t0, t1, s in phases:
        g = s["gpu"]
        print(f"| {name} | {t1 - t0:.0f} | {g['util_gpu']} / {g['sm_util']} / {g['sm_occupancy']} / {g['tensor_util']} / "
              f"{g['dram_bw_util']} | {', '.join(f'{r} {v}' for r, v in s['cpu_pct'].items())} | "
              f"{s['tokens_per_s']}, {s['requests_running']} | {s['slowest_scrape_s']} s |")
    print()
    for name, t0, t1, s in phases:
        print(f"**{name}** ({t0:.1f}–{t1:.1f})")
        print()
        for proc, d in s["processes"].items():
            fmt = lambda xs: "; ".join(f"`{f}` {v:.0%}" for f, v in xs[:3])
            print(f"- {proc} ({d['samples']} active samples): threads {fmt(d['threads'])}; "
                  f"self {fmt(d['self'])}; inclusive {fmt(d['inclusive'])}")
        print()


if __name__ == "__main__":
    main()
