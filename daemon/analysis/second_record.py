"""Builds the episode pipeline's record of one second from the classifier's Second.

Also decides which processes on a GPU are foreign (neither serving it nor the engine's
helpers) and which of them worked in a given second (observe.FOREIGN_SM_PCT / CPU).
"""
from __future__ import annotations

from infersight.daemon.analysis.classify import Second
from infersight.daemon.analysis.observe import (FOREIGN_CPU_PCT, FOREIGN_SM_PCT, EpisodeSecond, ForeignSecond,
                                                ProcSecond, ThreadSecond, modules_of)


def foreign_pids(gpu: int, targets: list[dict], seen: dict[int, dict], serving: dict[int, str]) -> set[int]:
    """Processes on ``gpu`` that are not the engine's: NVML's (``seen``) minus the serving
    processes and the engine's helpers, plus targets discovery found there as
    ``other_gpu_process``."""
    roles = {int(t["pid"]): t["role"] for t in targets}
    out = {pid for pid in seen if pid not in serving and roles.get(pid) != "helper"}
    out |= {int(t["pid"]) for t in targets
            if t["role"] == "other_gpu_process" and gpu in (t["gpus"] or [gpu])}
    return out


def episode_second(s: Second, lifecycle: str | None, foreign: set[int], nvml_sm: dict[int, float | None],
                   cpu: dict[int, float]) -> EpisodeSecond:
    """``s`` (with its processes' thread split attached) as an EpisodeSecond; ``nvml_sm``:
    NVML's SM share per pid in that second; ``cpu``: psutil CPU per pid in that second."""
    procs = []
    for p in s.processes:
        w = p.work
        if w is None:
            procs.append(ProcSecond(p.pid, p.role, p.cpu_pct))
            continue
        stacks: dict = {}
        for t in w.threads:
            for path, n in t.own_stacks.items():
                stacks[path] = stacks.get(path, 0) + n
        procs.append(ProcSecond(
            p.pid, p.role, p.cpu_pct, own=w.own, wait=sum(t.wait for t in w.threads), gpu_wait=w.gpu_wait,
            collective=w.collective, idle=sum(t.idle for t in w.threads),
            threads=tuple(ThreadSecond(t.tid, t.name, t.own, t.gpu_wait) for t in w.threads if t.own or t.gpu_wait),
            modules=modules_of(stacks)))
    active = []
    for pid in sorted(foreign):
        sm = nvml_sm.get(pid)
        c = cpu.get(pid)
        if (sm is not None and sm >= FOREIGN_SM_PCT) or (sm is None and c is not None and c >= FOREIGN_CPU_PCT):
            active.append(ForeignSecond(pid, sm, c))
    return EpisodeSecond(
        t=s.t, lifecycle=lifecycle, sm=s.sm_util, tensor=s.tensor_util, dram=s.dram_bw_util, util=s.util_gpu,
        occupancy=s.sm_occupancy, running=s.running, waiting=s.waiting, gen_tps=s.gen_tokens_s,
        prompt_tps=s.prompt_tokens_s, http_in_flight=s.http_in_flight, engine_held=s.engine_held,
        requests_s=s.requests_s, procs=tuple(procs), foreign=tuple(active))


# NVML's per-process utilization is read every few seconds (collectors.gpu.slow_interval_s,
# 5 s by default): a reading stands for the seconds after it, up to this long
NVML_HOLD_S = 6


def held_readings(readings: dict[int, dict[int, float | None]], seconds: list[int],
                  hold_s: int = NVML_HOLD_S) -> dict[int, dict[int, float | None]]:
    """Per second in ``seconds``, each pid's latest reading at or before it and at most
    ``hold_s`` old (``readings``: second -> pid -> SM share, as storage.analysis.gpu_process_seconds)."""
    out: dict[int, dict[int, float | None]] = {}
    times = sorted(readings)
    last: dict[int, tuple[int, float | None]] = {}
    i = 0
    for t in sorted(seconds):
        while i < len(times) and times[i] <= t:
            for pid, v in readings[times[i]].items():
                last[pid] = (times[i], v)      # None: seen, no utilization sample (it did not run)
            i += 1
        out[t] = {pid: v for pid, (at, v) in last.items() if t - at <= hold_s}
    return out
