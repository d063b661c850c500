"""Runs every benchmark in bench/ and prints a summary of figures against their targets.

usage: python bench/run_all.py [--quick] [--only NAME ...]   (``make bench`` runs it)

Each script runs as its own subprocess (so one's memory, threads or pinning cannot affect
the next) with its output printed as it comes. Scripts are every ``bench/*.py`` except this
one and the helpers whose names start with ``_``; ingest.py and store_24h.py run first and
write their figures to JSON, which the closing summary collects. ``--quick`` shortens those
two (2 simulated hours instead of 24, fewer runs): a smoke run, not figures to record.
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

from _report import Figure, machine, print_table

HERE = Path(__file__).resolve().parent
FIRST = ("ingest.py", "store_24h.py")
QUICK_ARGS = {"ingest.py": ["--seconds", "120", "--runs", "1"],
              "store_24h.py": ["--hours", "2", "--repeats", "5", "--rss-seconds", "30"]}
TIMEOUT_S = 3 * 3600
NOT_HERE = 2          # a script's "cannot run on this machine" (missing GPU, torch, ...)


def scripts() -> list[Path]:
    found = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name != Path(__file__).name)
    return sorted(found, key=lambda p: (p.name not in FIRST, FIRST.index(p.name) if p.name in FIRST else 0, p.name))


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
        for script in scripts():
            if args.only and script.name not in args.only:
                continue
            extra_args = list(QUICK_ARGS.get(script.name, [])) if args.quick else []
            out = Path(folder) / f"{script.stem}.json"
            if script.name in FIRST:
                extra_args += ["--json", str(out)]
            print(f"\n=== {script.name} {' '.join(extra_args)}", flush=True)
            status, seconds = run(script, extra_args)
            results.append((script.name, status, seconds))
            if out.exists():
                data = json.loads(out.read_text())
                figures += [Figure(**f) for f in data["figures"]]
    print("\n=== summary")
    for name, status, seconds in results:
        verdict = {0: "ok", NOT_HERE: "not run here (exit 2: see its output)"}.get(status, f"FAILED (exit {status})")
        print(f"  {name:24s} {verdict:40s} {seconds:8.1f} s")
    if figures:
        print()
        print_table(figures, "figures against the issue's targets" + (" (QUICK RUN: not figures to record)"
                                                                      if args.quick else ""))
    return 0 if all(status in (0, NOT_HERE) for _, status, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
