"""The simulated GPU of the demo engine's CPU mode: a one-stream device timeline.

Without a GPU the demo engine still "launches kernels": each launch names a
:class:`KernelKind` (how long the kernel would keep the device busy and what share of the
SMs, tensor pipes and DRAM bandwidth it would use while running) and the timeline places
it on one in-order stream, as CUDA does: a kernel starts when it is launched or when the
previous kernel ends, whichever is later. ``synchronize`` is the time the host must wait
for the stream to drain.

Busy time is binned into ticks of ``tick_s`` (100 ms, like the recorder's NVML sampler),
and :meth:`SimTimeline.ticks` reports, per finished tick, the busy fraction (NVML's
"a kernel ran" utilization) and SM, tensor and DRAM activity in percent (GPM-like: the
time-weighted share each running kernel keeps busy). The per-kind figures come from the
H100 measurements in DESIGN.md (GEMM: SM 97 / tensor 94 / DRAM 26; GEMV: 82 / 2 / 90;
a tiny kernel fills next to no SMs), so the analysis sees the same shapes it sees on a
real GPU. The numbers are a simulation and every consumer labels them so.

Thread-safe: the engine loop launches while the HTTP thread reads ticks.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class KernelKind:
    """What one simulated kernel does while it runs (fractions 0-1 of the device)."""

    name: str
    sm: float
    tensor: float
    dram: float


GEMM = KernelKind("gemm", sm=0.97, tensor=0.94, dram=0.26)       # prefill: compute-bound
GEMV = KernelKind("gemv", sm=0.82, tensor=0.024, dram=0.90)      # decode: weight reads
TINY = KernelKind("tiny", sm=0.02, tensor=0.0, dram=0.01)        # an unfused elementwise op

RETAIN_S = 120.0   # ticks older than this are forgotten (seconds)
MAX_TICKS = 600    # most ticks one read returns (60 s at 100 ms)


class SimTimeline:
    """One in-order stream of simulated kernels, binned into ``tick_s`` ticks of ``clock`` time."""

    def __init__(self, tick_s: float = 0.1, clock: Callable[[], float] = time.time) -> None:
        self.tick_s = tick_s
        self.clock = clock
        self.started = clock()
        self._first_tick = int(math.floor(self.started / tick_s))
        self._free_at = self.started            # when the stream has run everything launched so far
        self._bins: dict[int, list[float]] = {}  # tick index -> [busy_s, sm_s, tensor_s, dram_s]
        self._lock = threading.Lock()
        self.launches = 0

    def launch(self, kind: KernelKind, duration_s: float) -> float:
        """Queue one kernel of ``duration_s`` seconds; returns when it will finish (clock time)."""
        now = self.clock()
        with self._lock:
            start = max(now, self._free_at)
            end = start + max(0.0, duration_s)
            self._free_at = end
            self._add(start, end, kind)
            self.launches += 1
            if self.launches % 4096 == 0:
                self._prune(now)
        return end

    def pending_s(self) -> float:
        """Seconds of queued work the stream still has to run (0 when drained)."""
        with self._lock:
            return max(0.0, self._free_at - self.clock())

    def _add(self, start: float, end: float, kind: KernelKind) -> None:
        k = int(math.floor(start / self.tick_s))
        while True:
            lo, hi = k * self.tick_s, (k + 1) * self.tick_s
            overlap = min(end, hi) - max(start, lo)
            if overlap > 0:
                b = self._bins.setdefault(k, [0.0, 0.0, 0.0, 0.0])
                b[0] += overlap
                b[1] += overlap * kind.sm
                b[2] += overlap * kind.tensor
                b[3] += overlap * kind.dram
            if end <= hi:
                return
            k += 1

    def _prune(self, now: float) -> None:
        oldest = int(math.floor((now - RETAIN_S) / self.tick_s))
        for k in [k for k in self._bins if k < oldest]:
            del self._bins[k]

    def ticks(self, since: float | None = None) -> list[dict[str, float]]:
        """Finished ticks starting at or after ``since`` (all retained ones when None), oldest
        first, at most MAX_TICKS (the newest ones). Each is ``{"t": tick start, "busy": 0-1,
        "sm", "tensor", "dram": percent}``; a tick with no kernel reads all zeros."""
        now = self.clock()
        last = int(math.floor(now / self.tick_s)) - 1   # the newest tick that has ended
        first = max(self._first_tick, int(math.floor((now - RETAIN_S) / self.tick_s)) + 1)
        if since is not None:
            first = max(first, int(math.ceil(since / self.tick_s - 1e-6)))
        first = max(first, last - MAX_TICKS + 1)
        out = []
        with self._lock:
            for k in range(first, last + 1):
                b = self._bins.get(k)
                busy, sm, tensor, dram = (x / self.tick_s for x in b) if b else (0.0, 0.0, 0.0, 0.0)
                out.append({"t": round(k * self.tick_s, 3), "busy": round(min(1.0, busy), 4),
                            "sm": round(min(100.0, 100 * sm), 2), "tensor": round(min(100.0, 100 * tensor), 2),
                            "dram": round(min(100.0, 100 * dram), 2)})
        return out
