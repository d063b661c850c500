"""Host and per-target process counters from psutil.

Host: CPU %, memory, load. Per target process: CPU % of one core (from the CPU-time delta
since the previous run, so it can exceed 100 for multi-threaded processes), RSS, threads
and cumulative context switches. A process that vanished is reported once in
``Batch.errors`` and dropped; it is not a failure of the collector.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Callable, Iterable

import psutil

from infersight.daemon.config.load import HostCollectorConfig
from infersight.storage.model import Batch, HostSample, ProcessSample, Target


class HostCollector:
    """``targets()`` returns the processes to sample now (from discovery or --pid)."""

    name = "host"

    def __init__(self, config: HostCollectorConfig, host: str, targets: Callable[[], Iterable[Target]]) -> None:
        self.interval_s = config.interval_s
        self._host = host
        self._targets = targets
        self._procs: dict[tuple[int, float], tuple[psutil.Process, float, float]] = {}
        psutil.cpu_percent(None)  # primes the host CPU delta

    async def collect(self, now: float) -> Batch:
        targets = list(self._targets())
        return await asyncio.to_thread(self._collect, now, targets)

    def _collect(self, now: float, targets: list[Target]) -> Batch:
        batch = Batch(self.name, now)
        vm = psutil.virtual_memory()
        load = os.getloadavg()
        batch.host_samples.append(HostSample(
            t=now, cpu_percent=psutil.cpu_percent(None), cpu_count=psutil.cpu_count() or 1,
            mem_used_bytes=vm.total - vm.available, mem_total_bytes=vm.total,
            load1=load[0], load5=load[1], load15=load[2]))
        seen = set()
        for target in targets:
            key = (target.pid, target.start_time)
            seen.add(key)
            try:
                sample = self._sample(key, now)
            except psutil.NoSuchProcess:
                batch.errors.append(f"pid {target.pid}: process exited")
                self._procs.pop(key, None)
                continue
            except psutil.AccessDenied:
                batch.errors.append(f"pid {target.pid}: access denied reading /proc (run as the same user or root)")
                continue
            batch.process_samples.append(sample)
            batch.targets.append(target)
        for key in set(self._procs) - seen:
            del self._procs[key]
        return batch

    def _sample(self, key: tuple[int, float], now: float) -> ProcessSample:
        pid, start_time = key
        entry = self._procs.get(key)
        if entry is None:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - start_time) > 1.0 and start_time:
                raise psutil.NoSuchProcess(pid)  # the pid was reused by another process
        else:
            proc = entry[0]
        with proc.oneshot():
            cpu = proc.cpu_times()
            used = cpu.user + cpu.system
            mem = proc.memory_info()
            threads = proc.num_threads()
            ctx = proc.num_ctx_switches()
        mono = time.monotonic()
        self._procs[key] = (proc, used, mono)
        if entry is None:  # first look: the average since the process started
            percent = 100.0 * used / max(1e-3, time.time() - proc.create_time())
        else:
            percent = 100.0 * (used - entry[1]) / max(1e-3, mono - entry[2])
        return ProcessSample(t=now, pid=pid, start_time=start_time, cpu_percent=round(percent, 2),
                             rss_bytes=mem.rss, threads=threads, ctx_voluntary=ctx.voluntary,
                             ctx_involuntary=ctx.involuntary)
