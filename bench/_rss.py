"""Resident memory of the real agent holding a store under the default load.

Starts ``bench/_agent_under_load.py DB`` as a subprocess, waits for its ``event=started``
line, then reads its RSS (and open file descriptors) once a second for ``seconds`` while a
client asks what a person with the UI open would: the flame graph and timeline of the whole
day once, then those of the last hour every 10 s (the UI's live view). Steady state is the
last half of the run (warm-up: the first half).
"""
from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import psutil

HELPER = Path(__file__).resolve().parent / "_agent_under_load.py"
# the agent copies the store and may warm its analysis for hours of simulated load before it
# says it started; two such runs side by side on a 2-core machine took over 5 minutes
START_TIMEOUT_S = 900.0


@dataclass
class RssReport:
    seconds: float
    start_mb: float
    steady_median_mb: float
    steady_max_mb: float
    max_mb: float
    fds_first: int
    fds_last: int
    rows_written: int
    batches_dropped: int
    samples_mb: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    probe_lines: list[str] = field(default_factory=list)   # the agent's --memory-probe log lines


def _get(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def measure(db: str, seconds: float, helper_args: tuple[str, ...] = ()) -> RssReport:
    """Run the agent on ``db`` for ``seconds`` (``helper_args`` go to _agent_under_load.py)."""
    proc = subprocess.Popen([sys.executable, str(HELPER), db, *helper_args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    started = threading.Event()
    url: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip())
            m = re.search(r"event=started listen=(\S+)", line)
            if m and not started.is_set():
                url.append(m.group(1))
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not started.wait(1.0):
            if proc.poll() is not None or time.monotonic() > deadline:
                reader.join(5)
                why = f"exited with status {proc.returncode}" if proc.poll() is not None else "did not start in time"
                raise RuntimeError(f"agent {why}:\n" + "\n".join(lines[-20:]))
        base = url[0]
        p = psutil.Process(proc.pid)
        rss: list[float] = []
        fds: list[int] = []
        t0 = time.monotonic()
        now = time.time()
        for path in ("/api/flamegraph", "/api/ui/timeline"):   # the day, looked at once
            _get(f"{base}{path}?{urlencode({'from': now - 86400, 'to': now})}")
        next_query = t0
        while time.monotonic() - t0 < seconds:
            if time.monotonic() >= next_query:             # the last hour, refreshed every 10 s
                now = time.time()
                for path in ("/api/flamegraph", "/api/ui/timeline"):
                    _get(f"{base}{path}?{urlencode({'from': now - 3600, 'to': now})}")
                next_query += 10
            rss.append(p.memory_info().rss / 1e6)
            fds.append(p.num_fds())
            time.sleep(1.0)
        health = json.loads(_get(f"{base}/api/health"))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(10)
    steady = rss[len(rss) // 2:]
    storage = health.get("storage", {})
    probes = [line for line in lines if re.search(r"event=(memory|malloc_trim|tracemalloc)", line)]
    return RssReport(seconds, rss[0], statistics.median(steady), max(steady), max(rss), fds[0], fds[-1],
                     int(storage.get("rows_written", 0)), int(storage.get("batches_dropped", 0)), rss,
                     list(health.get("problems", [])), probes)
