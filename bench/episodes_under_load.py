"""The analysis with every core loaded, beside an idle run: the same findings, no skipped step.

usage: python bench/episodes_under_load.py [--recordings NAME,...] [--agent-seconds 90]

Inference hosts are CPU-busy, so the agent must give the same answers on a loaded machine.

1. **Replay**: real recordings of tests/fixtures through ``infersight replay --json``, once on an
   idle host and once with one busy-looping process per core beside it. The findings (kind,
   GPU, class, span, culprit process and thread, first frame) must be identical; the table
   prints both runs' findings and wall times side by side.
2. **Live daemon**: the real agent (bench/_agent_under_load.py: simulated collectors at their
   real intervals, the real analysis, storage and web server) for ``--agent-seconds`` with
   every core loaded, then the same idle. Printed: the analysis' steps, late steps (a step
   that began more than two intervals after the last), seconds behind at the end, the
   scheduler's "skipped: maximum number of running instances" warnings, and the collectors'
   overruns (a run still going at its next slot: counted, not started twice).

Replay runs on the recording's own clock, so its answers cannot depend on the host's pace
unless data is lost on the way (a queue that drops, a read that times out): this is what the
first half checks. The second half measures the pace itself.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURES = ROOT / "tests" / "fixtures"
DEFAULT = ("vllm-qwen-graphs", "vllm-llama-live", "vllm-qwen-eager")


def burn(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


class Load:
    """One busy-looping process per core while the ``with`` block runs."""

    def __enter__(self):
        self.stop = multiprocessing.Event()
        self.procs = [multiprocessing.Process(target=burn, args=(self.stop,), daemon=True)
                      for _ in range(os.cpu_count() or 1)]
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()


def findings(name: str) -> tuple[list[tuple], float]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "infersight.daemon.cli", "replay", str(FIXTURES / name), "--json"],
                         capture_output=True, text=True, check=True).stdout
    seconds = time.perf_counter() - started
    rows = []
    for line in out.splitlines():
        d = json.loads(line)
        if d["type"] != "event":
            continue
        who = (d.get("evidence") or {}).get("culprit") or {}
        top = (d.get("top_frames") or [{}])[0].get("frame")
        rows.append((d["kind"], d["gpu"], d["class"], d["start"], d["end"], who.get("pid"), who.get("thread"), top))
    return sorted(rows), seconds


def agent_run(seconds: float) -> dict:
    """Run the agent on a fresh store for ``seconds``; its analysis health and skipped jobs."""
    with tempfile.TemporaryDirectory(prefix="infersight-load-") as folder:
        proc = subprocess.Popen([sys.executable, str(HERE / "_agent_under_load.py"), str(Path(folder) / "a.duckdb")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        url: list[str] = []
        ready = threading.Event()

        def read() -> None:
            for line in proc.stderr:
                lines.append(line)
                m = re.search(r"event=started listen=(\S+)", line)
                if m and not ready.is_set():
                    url.append(m.group(1))
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        try:
            if not ready.wait(300):
                raise RuntimeError("agent did not start:\n" + "".join(lines[-20:]))
            time.sleep(seconds)
            with urllib.request.urlopen(f"{url[0]}/api/health", timeout=60) as resp:
                health = json.loads(resp.read())
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        analysis = health.get("analysis") or {}
        return {"steps": analysis.get("ticks"), "late_steps": analysis.get("late_ticks"),
                "behind_s": analysis.get("behind_s"), "last_step_s": analysis.get("last_tick_s"),
                "skipped_jobs": sum(1 for line in lines if "maximum number of running instances" in line),
                "overruns": sum(int(c.get("overruns") or 0) for c in (health.get("collectors") or {}).values())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recordings", default=",".join(DEFAULT))
    ap.add_argument("--agent-seconds", type=float, default=90.0)
    args = ap.parse_args()
    names = [n for n in args.recordings.split(",") if n]
    print(f"cores: {os.cpu_count()}; loaded = one busy-looping process per core")
    same = True
    print(f"{'recording':20s} {'findings idle':>14s} {'findings loaded':>16s} {'same':>5s} "
          f"{'replay idle s':>14s} {'replay loaded s':>16s} {'ratio':>6s}")
    for name in names:
        idle, t_idle = findings(name)
        with Load():
            loaded, t_loaded = findings(name)
        ok = idle == loaded
        same &= ok
        print(f"{name:20s} {len(idle):14d} {len(loaded):16d} {'yes' if ok else 'NO':>5s} {t_idle:14.1f} "
              f"{t_loaded:16.1f} {t_loaded / t_idle:6.2f}")
        for row in idle:
            print(f"    {row[0]:24s} gpu{row[1]} {row[2] or '':13s} {row[3]:.0f}-{row[4]:.0f} pid {row[5]} "
                  f"{row[6] or ''} {row[7] or ''}")
        if not ok:
            for row in sorted(set(loaded) - set(idle)):
                print(f"    LOADED ONLY {row}")
    with Load():
        loaded = agent_run(args.agent_seconds)
    idle = agent_run(args.agent_seconds)
    print(f"live agent, {args.agent_seconds:.0f} s each:   {'idle':>10s} {'loaded':>10s}")
    for key in ("steps", "late_steps", "behind_s", "last_step_s", "skipped_jobs", "overruns"):
        print(f"  {key:28s} {idle[key]!s:>10} {loaded[key]!s:>10}")
    print(f"findings identical under load: {'yes' if same else 'NO'}; analysis steps late under load: "
          f"{loaded['late_steps']}; scheduler warnings under load: {loaded['skipped_jobs']}; collector "
          f"overruns under load: {loaded['overruns']}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
