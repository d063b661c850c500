"""Per-target sampling rate under a CPU budget: the next recording's rate from the last one's cost.

py-spy's CPU grows with the number of threads, their stack depth and the rate (each frame
of each thread is read from the target at every sample), plus a fixed part per recording
(the attach). A process with 20 threads 25 frames deep costs about ten times what a
single-threaded one does at the same rate, so one fixed rate is either too slow for small
targets or too costly for large ones. :class:`RateGovernor` keeps each target's py-spy at
``budget_percent`` of one core: it measures a recording's CPU (from procfs) and sets the
next recording's rate, between 1 Hz and the configured maximum. Costs are smoothed over
recordings, up-steps at most double the rate, and changes under 15% are ignored, so the
rate does not flutter with measurement noise (CPU time comes in 10 ms ticks). A budget of
0 turns this off (fixed rate).
"""
from __future__ import annotations

import os

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int, proc: str = "/proc") -> float | None:
    """User plus system CPU seconds of all threads of ``pid`` so far (10 ms ticks).

    ``/proc/PID/stat`` sums the whole thread group; ``/proc/PID/schedstat`` would count the
    main thread only, and py-spy samples from another thread.
    """
    try:
        with open(f"{proc}/{pid}/stat", "rb") as fh:
            rest = fh.read().decode("utf-8", "replace")
        fields = rest[rest.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


class RateGovernor:
    """The rate for each next recording of one target; ``cost_percent`` is the last measured cost."""

    def __init__(self, max_rate: int, budget_percent: float, min_rate: int = 1) -> None:
        self.max_rate = max_rate
        self.min_rate = min(min_rate, max_rate)
        self.budget = budget_percent
        self.rate = max_rate
        self.cost_percent: float | None = None
        self._per_hz: float | None = None      # smoothed sampling cost, % of a core per Hz
        self._fixed: float | None = None       # smoothed attach cost, % of a core

    def observe(self, rate: int, sampling_cpu_s: float, sampling_wall_s: float, attach_cpu_s: float,
                recording_s: float, overlap_s: float) -> int:
        """Record one recording's cost and return the rate for the next one.

        ``sampling_cpu_s`` over ``sampling_wall_s`` is py-spy's CPU after it attached;
        ``attach_cpu_s`` what the attach cost (paid once per ``recording_s``); ``overlap_s``
        how long two recordings run at once at each hand-over. Estimates are smoothed over
        recordings (half weight to the newest) so one noisy reading does not swing the rate.
        """
        if sampling_wall_s <= 0 or recording_s <= 0 or rate <= 0:
            return self.rate
        sampling = 100.0 * sampling_cpu_s / sampling_wall_s * (1.0 + overlap_s / recording_s)
        fixed = 100.0 * attach_cpu_s / recording_s
        self.cost_percent = sampling + fixed
        per_hz = sampling / rate
        self._per_hz = per_hz if self._per_hz is None else 0.5 * (self._per_hz + per_hz)
        self._fixed = fixed if self._fixed is None else 0.5 * (self._fixed + fixed)
        if self.budget <= 0:
            return self.rate
        if self._per_hz <= 0:
            wanted = 2.0 * rate
        else:
            wanted = max(0.0, self.budget - self._fixed) / self._per_hz
        new = max(self.min_rate, min(self.max_rate, int(min(wanted, 2.0 * rate))))
        self.rate = new if abs(new - rate) >= max(1.0, 0.15 * rate) else rate
        return self.rate
