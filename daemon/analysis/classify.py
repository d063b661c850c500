"""Classifies one second of one GPU into a bottleneck class, from behaviour only.

Inputs are the second's features (see :class:`Second`): GPU counters, the engine's request
counts and token flow, and per serving process its CPU use and how much of its on-CPU
time was spent waiting for the GPU (a thread spinning in ``torch.cuda.synchronize`` is
the CPU waiting on the GPU, not starving it). Decision, with thresholds from
AnalysisConfig (their docs quote the measurements):

0. A serving process starting up or shutting down (lifecycle.py): starting / stopping.
1. GPU busy (SM >= busy_sm_pct): compute_bound near the tensor roof, memory_bound near the
   bandwidth roof, latency_bound near neither (see _busy_class).
2. GPU under-used and a serving process busy on its own work (CPU not spent waiting on the
   GPU): launch_bound when kernels run but fill few SMs (SM / NVML util low), else
   host_bound. The busy process may hold no GPU context (an API server).
3. GPU under-used, nobody busy, work in flight (requests running or waiting, tokens
   flowing): stall. Nothing in flight: idle (or unknown when the GPU still shows activity).

Without GPM/DCGM counters (NVML only) a busy GPU cannot be told compute- from memory-bound
nor launch-bound from host-bound by counters: busy seconds are ``unknown`` and the window
says ``mode: nvml_only``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infersight.daemon.analysis.numbers import round_reported
from infersight.daemon.config.load import AnalysisConfig


@dataclass
class ProcessSecond:
    """One serving process during one second."""

    pid: int
    role: str
    cpu_pct: float | None = None     # psutil, % of one core
    active: int = 0                  # py-spy active samples
    gpu_wait: int = 0                # of which the leaf frame is a GPU wait
    idle: int = 0
    top_leaf: str | None = None      # function with the most active samples this second
    # the second's samples by thread (analysis/threads.py): own work, waits, GPU waits
    work: Any = None
    startup_share: float = 0.0       # share of active samples running start-up code

    @property
    def wait_share(self) -> float:
        return self.gpu_wait / self.active if self.active else 0.0

    def own_cpu_pct(self, rate_hz: float) -> float | None:
        """CPU % spent on the process's own work (not spinning on the GPU)."""
        cpu = self.cpu_pct
        if cpu is None and self.active and rate_hz:
            cpu = 100.0 * min(1.0, self.active / rate_hz)
        if cpu is None:
            return None
        return cpu * (1.0 - self.wait_share)


@dataclass
class Second:
    t: int
    gpu: int
    util_gpu: float | None = None
    sm_util: float | None = None
    sm_occupancy: float | None = None
    tensor_util: float | None = None
    dram_bw_util: float | None = None
    running: float | None = None
    waiting: float | None = None
    gen_tokens_s: float | None = None
    prompt_tokens_s: float | None = None
    # the engine's own estimates of the work of this second, per GPU (vLLM >= 0.24, SGLang)
    flops_per_gpu_s: float | None = None        # FLOP/s
    dram_bytes_per_gpu_s: float | None = None   # bytes read + written per second
    # the pipeline (engines/specs.py: Little's law on the latency sums): requests at the front
    # end, requests inside the engine by its own clocks, requests completed per second
    http_in_flight: float | None = None
    engine_held: float | None = None
    requests_s: float | None = None
    serving: bool | None = None     # set for an episode's aggregate: most of its seconds had work
    processes: list[ProcessSecond] = field(default_factory=list)

    @property
    def has_gpm(self) -> bool:
        return self.sm_util is not None

    @property
    def in_flight(self) -> bool | None:
        """Work is in the engine: requests running/waiting or tokens flowing (None: no engine
        data). ``serving``, where set (an episode's aggregate), decides instead."""
        if self.serving is not None:
            return self.serving
        values = [v for v in (self.running, self.waiting, self.gen_tokens_s, self.prompt_tokens_s) if v is not None]
        if not values:
            return None
        return any(v > 0.5 for v in values[:2]) or any(v > 0 for v in values[2:])


# Decimals a window reports its means with: hundredths of a percent (GPM gives thousandths,
# NVML whole percents) and of a request or token per second are far below the counters'
# noise from one second to the next, and short decimals compress (DuckDB's ALP) to about
# half of what full doubles take in the windows table. The class is decided on the
# unrounded values.
REPORTED_DECIMALS = {"util_gpu": 2, "sm_util": 2, "tensor_util": 2, "dram_bw_util": 2,
                     "running": 2, "waiting": 2, "gen_tokens_s": 2}


def _reported(value: float | None, name: str) -> float | None:
    return round_reported(value, REPORTED_DECIMALS[name])


def busiest_process(second: Second, rate_hz: float) -> ProcessSecond | None:
    best, best_cpu = None, -1.0
    for p in second.processes:
        cpu = p.own_cpu_pct(rate_hz)
        if cpu is not None and cpu > best_cpu:
            best, best_cpu = p, cpu
    return best


def classify(second: Second, cfg: AnalysisConfig, rate_hz: float,
             lifecycle: str | None = None) -> tuple[str, dict[str, float | str | None]]:
    """The class of one second and the features that decided it; ``lifecycle`` (starting,
    stopping or None, from lifecycle.Lifecycle) wins over the counters."""
    busy_proc = busiest_process(second, rate_hz)
    own_cpu = busy_proc.own_cpu_pct(rate_hz) if busy_proc else None
    host_busy = own_cpu is not None and own_cpu >= cfg.cpu_busy_pct
    in_flight = second.in_flight
    features: dict[str, float | str | None] = {
        **{name: _reported(getattr(second, name), name) for name in REPORTED_DECIMALS},
        "busiest_pid": busy_proc.pid if busy_proc else None,
        "busiest_role": busy_proc.role if busy_proc else None,
        "busiest_own_cpu_pct": None if own_cpu is None else round(own_cpu, 1),
        "mode": "gpm" if second.has_gpm else "nvml_only",
    }
    if lifecycle is not None:
        return lifecycle, features
    if second.util_gpu is None and second.sm_util is None:
        return "unknown", features
    if second.has_gpm:
        sm = second.sm_util or 0.0
        saturated = own_cpu is not None and own_cpu >= cfg.host_saturated_pct
        if sm >= cfg.busy_sm_pct and not (saturated and sm < cfg.host_bound_max_sm_pct):
            return _busy_class(second, cfg), features
        if host_busy:
            util = second.util_gpu or 0.0
            if util >= cfg.launch_min_util_pct and sm / util < cfg.launch_ratio:
                return "launch_bound", features
            return "host_bound", features
        if in_flight:
            return "stall", features
        return ("idle" if sm < cfg.idle_sm_pct else "unknown"), features
    # NVML only: utilization.gpu says a kernel ran, not how much of the GPU it used
    util = second.util_gpu or 0.0
    if util >= cfg.busy_sm_pct:
        return "unknown", features
    if host_busy:
        return "host_bound", features
    if in_flight:
        return "stall", features
    return ("idle" if util < cfg.idle_sm_pct else "unknown"), features


def _busy_class(second: Second, cfg: AnalysisConfig) -> str:
    """Which roof a busy GPU is near: tensor throughput (compute) or DRAM bandwidth (memory),
    each measured while the SMs work (utilization over SM activity: GPM's figures are
    fractions of the GPU's own peaks); near neither, the GPU is busy with work too small,
    too serial or too sync-heavy to use it: latency_bound."""
    sm = max(second.sm_util or 0.0, 1e-9)
    tensor = second.tensor_util or 0.0
    dram = second.dram_bw_util or 0.0
    if tensor >= cfg.compute_tensor_pct and tensor / sm >= cfg.compute_roof_ratio:
        return "compute_bound"
    if dram >= cfg.memory_dram_pct and dram / sm >= cfg.memory_roof_ratio:
        return "memory_bound"
    return "latency_bound"


BUSY_CLASSES = ("compute_bound", "memory_bound", "latency_bound")
LIFECYCLE_CLASSES = ("starting", "stopping")
