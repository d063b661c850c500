"""Per-thread CPU time of profiled processes, read from /proc once a second.

This is what tells active samples from idle ones (see :mod:`.buckets`): the kernel's
CPU time of a thread over a second is the share of that second it ran. It also says when a
thread went away, which py-spy's chrometrace does not.

Thread ids are reported in the target's own PID namespace (the id Python's
``threading.get_native_id()`` returns and py-spy prints), so a target inside a container
matches its py-spy labels even when the agent runs on the host.

:func:`read_thread_cpu` blocks (procfs reads): call it through ``asyncio.to_thread``.
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _ns_tid(status_text: str) -> int | None:
    for line in status_text.splitlines():
        if line.startswith("NSpid:"):
            parts = line.split()[1:]
            return int(parts[-1]) if parts else None
    return None


def _cpu_seconds(stat_text: str) -> float:
    # Fields after the command name (which may hold spaces and parentheses): state is the
    # first, utime and stime the 12th and 13th.
    rest = stat_text[stat_text.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / _CLK_TCK


def _read(path: str) -> str:
    with open(path, "rb") as fh:
        return fh.read().decode("utf-8", "replace")


def read_thread_cpu(pid: int, proc: str = "/proc") -> dict[int, float] | None:
    """``{tid: cpu seconds}`` for every thread of ``pid``; None when the process is gone.

    A thread that ends while being read is left out.
    """
    base = f"{proc}/{pid}"
    try:
        nested = len(_read(f"{base}/status").split("NSpid:", 1)[1].splitlines()[0].split()) > 1
        tids = os.listdir(f"{base}/task")
    except (OSError, IndexError):
        return None
    out: dict[int, float] = {}
    for name in tids:
        try:
            cpu = _cpu_seconds(_read(f"{base}/task/{name}/stat"))
            tid = _ns_tid(_read(f"{base}/task/{name}/status")) if nested else int(name)
        except (OSError, ValueError, IndexError):
            continue
        if tid is not None:
            out[tid] = cpu
    return out


@dataclass(slots=True)
class ThreadCpuHistory:
    """Readings of one process over the last ``keep_s`` seconds, oldest first."""

    keep_s: float = 180.0
    times: list[float] = field(default_factory=list)
    readings: list[dict[int, float]] = field(default_factory=list)

    def add(self, t: float, cpu: dict[int, float]) -> None:
        if self.times and t <= self.times[-1]:
            return
        self.times.append(t)
        self.readings.append(cpu)
        cut = bisect.bisect_left(self.times, t - self.keep_s)
        if cut:
            del self.times[:cut]
            del self.readings[:cut]

    def share(self, tid: int, bucket: int) -> float | None:
        """Running share (0..1) of ``tid`` around second ``bucket``; None without two readings.

        Uses the readings just before and just after the middle of the bucket (they are taken
        a few ms after each whole second, so normally the bucket itself).
        """
        mid = bucket + 0.5
        i = bisect.bisect_right(self.times, mid) - 1
        j = i + 1
        if i < 0 or j >= len(self.times):
            return None
        a, b = self.readings[i].get(tid), self.readings[j].get(tid)
        if a is None or b is None:
            return None
        span = self.times[j] - self.times[i]
        if span <= 0:
            return None
        return max(0.0, min(1.0, (b - a) / span))

    def gone_at(self, tid: int, after: float) -> float | None:
        """Time of the first reading after ``after`` that no longer lists ``tid``, if any."""
        start = bisect.bisect_right(self.times, after)
        for k in range(start, len(self.times)):
            if tid not in self.readings[k]:
                return self.times[k]
        return None
