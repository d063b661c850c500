"""Runs every benchmark in bench/ and prints a summary of figures against their targets.

usage: python bench/run_all.py [--quick] [--only NAME ...]   (``make bench`` runs it)

Each script runs as its own subprocess (so one's memory, threads or pinning cannot affect
the next) with its output printed as it comes. Scripts are every ``bench/*.py`` except this
one and the helpers whose names start with ``_``; ingest.py and store_24h.py (twice: at
``rate_hz`` and at the rate the stacks CPU budget gives 20-thread targets) run first and write
their figures to JSON, which the closing summary collects. ``--quick`` shortens those (2
simulated hours instead of 24, fewer runs): a smoke run, not figures to record.
A script that fails is reported and the others still run; the exit status is 1 when any
failed. Exit status 2 is a script saying it cannot run on this machine (no GPU, no torch):
reported as not run, not as a failure. Missed targets are figures, not failures.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _baseline import label as before_label
from _baseline import note as before_note
from _report import Figure, machine, print_table

HERE = Path(__file__).resolve().parent
# Run first, in this order, with these arguments; their figures go in the closing summary. The
# second store_24h run models the stacks collector's CPU budget, which samples targets of 20
# threads at 1 Hz instead of rate_hz (bench/overhead.py measures it).
FIRST: list[tuple[str, list[str]]] = [
    ("ingest.py", []),
    ("store_24h.py", []),
    ("store_24h.py", ["--rate-hz", "1", "--rss-seconds", "0", "--repeats", "10"]),
]
QUICK_ARGS = {"ingest.py": ["--seconds", "120", "--runs", "1"],
              "store_24h.py": ["--hours", "2", "--repeats", "5", "--rss-seconds", "30"]}
TIMEOUT_S = 3 * 3600
NOT_HERE = 2          # a script's "cannot run on this machine" (missing GPU, torch, ...)


def plan() -> list[tuple[Path, list[str]]]:
    """(script, arguments) in running order: FIRST, then every other script with none."""
    first = {name for name, _ in FIRST}
    others = sorted(p for p in HERE.glob("*.py")
                    if not p.name.startswith("_") and p.name != Path(__file__).name and p.name not in first)
    return [(HERE / name, args) for name, args in FIRST if (HERE / name).exists()] + [(p, []) for p in others]


def run(script: Path, args: list[str]) -> tuple[int, float]:
    """Run one script, streaming its output; (exit status, seconds)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-u", str(script), *args], cwd=HERE.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            print(f"  {line.rstrip()}", flush=True)
        status = proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        status = proc.wait()
    return status, time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs of ingest and store_24h (smoke test)")
    ap.add_argument("--only", nargs="*", help="run only these scripts (file names)")
    args = ap.parse_args()
    print(f"infersight benchmarks on {machine()}", flush=True)
    results: list[tuple[str, int, float]] = []
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="infersight-bench-json-") as folder:
        for i, (script, args_for) in enumerate(plan()):
            if args.only and script.name not in args.only:
                continue
            extra_args = list(args_for)
            if args.quick:   # the short runs, keeping which rate a run is about
                j = args_for.index("--rate-hz") if "--rate-hz" in args_for else len(args_for)
                extra_args = list(QUICK_ARGS.get(script.name, [])) + args_for[j:j + 2]
            out = Path(folder) / f"{i}-{script.stem}.json"
            if script.name in {name for name, _ in FIRST}:
                extra_args += ["--json", str(out)]
            print(f"\n=== {script.name} {' '.join(extra_args)}", flush=True)
            status, seconds = run(script, extra_args)
            results.append((f"{script.name} {' '.join(args_for)}".strip(), status, seconds))
            if out.exists():
                data = json.loads(out.read_text())
                figures += [Figure(**f) for f in data["figures"]]
    print("\n=== summary")
    for name, status, seconds in results:
        verdict = {0: "ok", NOT_HERE: "not run here (exit 2: see its output)"}.get(status, f"FAILED (exit {status})")
        print(f"  {name:60s} {verdict:40s} {seconds:8.1f} s")
    if figures:
        print()
        print_table(figures, "figures against the issue's targets" + (" (QUICK RUN: not figures to record)"
                                                                      if args.quick else ""), before_label(), before_note())
    return 0 if all(status in (0, NOT_HERE) for _, status, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
