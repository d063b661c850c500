"""What the analysis says about a recording, phase by phase, next to its labels.

usage: python3 bench/real_engine/score.py DIR [DIR...]     (runs `infersight replay DIR --json`)
       python3 bench/real_engine/score.py --replay-json FILE DIR

Per labelled phase: the share of each class over the phase's inner seconds (its first and
last second dropped), then every finding with its kind, class, span, culprit process and
first frames. Reading aid for people; the assertions live in tests/test_vllm_replay.py.
"""
from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
from pathlib import Path


def replay(root: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "replay", str(root), "--json"],
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def report(root: Path, lines: list[dict]) -> None:
    labels = [json.loads(x) for x in open(root / "labels.jsonl")]
    windows = [x for x in lines if x["type"] == "window"]
    events = [x for x in lines if x["type"] == "event"]
    print(f"== {root.name}")
    for lab in labels:
        a, b = lab["t0"] + 1, lab["t1"] - 1
        share = collections.Counter()
        for w in windows:
            overlap = min(b, w["end"]) - max(a, w["start"])
            if overlap > 0:
                share[w["class"]] += overlap
        total = sum(share.values()) or 1
        cls = ", ".join(f"{k} {v / total:.0%}" for k, v in share.most_common(3))
        print(f"  {lab['phase']:<14} {lab['t1'] - lab['t0']:5.0f}s  {cls}")
    t_first = labels[0]["t0"]
    for e in events:
        frames = "; ".join(f"{f.get('frame', '')[:60]} {f.get('share', 0):.0%}" for f in (e.get("top_frames") or [])[:3])
        who = (e.get("evidence") or {}).get("culprit") or {}
        print(f"  EVENT {e['kind']:<24} {e['start'] - t_first:6.1f}..{e['end'] - t_first:6.1f}s "
              f"class={e.get('class')} culprit={who.get('role', '')}/{who.get('thread', '')} | {frames}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--replay-json", default="")
    args = ap.parse_args()
    for d in args.dirs:
        root = Path(d)
        lines = ([json.loads(x) for x in open(args.replay_json)] if args.replay_json else replay(root))
        report(root, lines)


if __name__ == "__main__":
    main()
