"""After a disk-full episode the agent is itself again within a minute (issue 30, item 6).

The real daemon (tests/fault_agent.py: 2,500 stack rows a second) writes to a 64 MiB tmpfs;
after a baseline the file system is filled, kept full for 30 s, and freed. Within a minute of
the space coming back: health is ``ok``, flushes take what they took before (median within
3x of the baseline's, plus 0.1 s), resident memory is within 40 MB of the baseline's highest,
and the log holds one ``flush_failed`` line per failure kind and one ``flush_recovered``.
Before this, flushes took 10-60 s after the episode and memory reached 590-790 MB.
"""
from __future__ import annotations

import re
import statistics
import subprocess
import time

import psutil
import pytest
from test_faults import Agent, _fill, _mount_tmpfs


def _sample(agent: Agent, proc: psutil.Process) -> tuple[float, float, dict]:
    health = agent.get("/api/health")
    return proc.memory_info().rss / 2**20, health["storage"]["last_flush_s"], health


@pytest.mark.slow
def test_memory_and_flush_times_return_to_normal_after_a_full_disk(tmp_path, require_in_ci):
    small = tmp_path / "small"
    mounted = _mount_tmpfs(small, "64m")
    require_in_ci(mounted, "mounting a tmpfs needs root")
    agent = Agent(["--db", str(small / "agent.duckdb"), "--rows", "500", "--interval", "0.2",
                   "--set", "storage.maintenance_interval_s=2", "--set", "storage.max_size_mb=16"])
    try:
        agent.wait_started()
        proc = psutil.Process(agent.proc.pid)
        agent.wait_for("rows written", lambda h: h["storage"]["rows_written"] > 0)
        baseline = []
        for _ in range(40):                       # 20 s of normal operation, after a 5 s warm-up
            baseline.append(_sample(agent, proc))
            time.sleep(0.5)
        baseline = baseline[10:]
        base_rss = max(r for r, _, _ in baseline)
        base_flush = statistics.median(f for _, f, _ in baseline)

        filler = _fill(small)
        failing = agent.wait_for("storage failing", lambda h: h["storage"]["last_error"] is not None)
        assert failing["status"] == "degraded" and any(p.startswith("storage: writes failing")
                                                       for p in failing["problems"])
        full_until = time.monotonic() + 30
        peak = 0.0
        while time.monotonic() < full_until:
            peak = max(peak, _sample(agent, proc)[0])
            time.sleep(1)
        filler.unlink()
        freed = time.monotonic()
        agent.wait_for("recovery", lambda h: h["status"] == "ok", timeout=60)
        time.sleep(max(0.0, freed + 40 - time.monotonic()))
        after = []
        for _ in range(20):                       # the last 20 s of the minute after the space came back
            after.append(_sample(agent, proc))
            time.sleep(1)
        assert time.monotonic() - freed < 75
        rss = max(r for r, _, _ in after)
        flush = statistics.median(f for _, f, _ in after)
        report = (f"baseline rss {base_rss:.0f} MB flush {base_flush:.3f} s; full: peak rss {peak:.0f} MB; "
                  f"after: rss {rss:.0f} MB flush {flush:.3f} s")
        print(report)
        assert all(h["status"] == "ok" for _, _, h in after), report
        assert flush <= 3 * base_flush + 0.1, report
        assert rss <= base_rss + 40, report
        assert peak <= base_rss + 150, report
        assert agent.stop() == 0
    finally:
        agent.close()
        subprocess.run(["umount", "-l", str(small)], capture_output=True, timeout=30)
    log = "\n".join(agent.lines)
    kinds = re.findall(r"event=flush_failed kind=(\w+)", log)
    assert kinds and len(kinds) == len(set(kinds)), kinds
    assert len(re.findall(r"event=flush_recovered", log)) == 1
    for event in ("maintenance_failed", "analysis_failed"):
        lines = [line for line in agent.lines if f"event={event}" in line]
        types = [re.search(r'error="?([^:"\s]+)', line).group(1) for line in lines]
        assert len(types) == len(set(types)), (event, types)
