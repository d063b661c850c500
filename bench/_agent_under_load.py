"""The real daemon on an existing store, fed the simulated default load in real time.

usage: python bench/_agent_under_load.py DB [--listen 127.0.0.1:0] [--analysis-warm-hours H | --no-analysis]
                                          [--duckdb-memory-limit 128MB]

Runs ``daemon.runtime.Daemon`` with the default config except: the store at DB, the web
server on ``--listen``, and the hardware collectors (py-spy stacks, NVML, engine scraping)
replaced by collectors that return the workload's batches for the current time at the same
intervals (bench/_workload.py). The host collector, analysis, maintenance (rollups,
retention) and the web server are the real ones. Logs go to stderr as the agent's do
(``event=started listen=URL`` once ready); SIGTERM stops it.

The analysis keeps the per-second features of the last hours in memory (for the evidence of
open findings), and a daemon catches up at most one hour at start, so a run of a few minutes
holds less than one running for hours. ``--analysis-warm-hours H`` has the analysis step
over the store's last H hours before the daemon starts (as it would have while running), so
the memory measured is that of an agent that has been up for H hours.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time

from _workload import Workload

from infersight.daemon.analysis.analyzer import Analyzer
from infersight.daemon.config.load import Config, with_overrides
from infersight.daemon.logfmt import setup_logging
from infersight.daemon.runtime import Daemon
from infersight.storage.model import Batch


class SimStacks:
    """What the stacks collector submits each second: the last complete second of every thread."""

    name = "sim_stacks"

    def __init__(self, workload: Workload) -> None:
        self.w = workload
        self.interval_s = 1.0
        self.first = True

    async def collect(self, now: float) -> Batch:
        batch = await asyncio.to_thread(self.w.stack_batch, int(now) - 1)
        if self.first:
            batch.targets = self.w.targets(now)
            self.first = False
        return batch


class SimGpu:
    name = "sim_gpu"

    def __init__(self, workload: Workload) -> None:
        self.w = workload
        self.interval_s = workload.gpu_fast_s
        self.ticks = 0

    async def collect(self, now: float) -> Batch:
        every = max(1, round(self.w.gpu_slow_s / self.w.gpu_fast_s))
        batch = self.w.gpu_batch(now, self.ticks % every == 0)
        if self.ticks == 0:
            batch.gpu_info = self.w.gpu_info()
        self.ticks += 1
        return batch


class SimEngines:
    name = "sim_engines"

    def __init__(self, workload: Workload) -> None:
        self.w = workload
        self.interval_s = workload.engine_s
        self.scrapes = 0

    async def collect(self, now: float) -> Batch:
        self.scrapes += 1
        batches = [self.w.engine_batch(now, self.scrapes, e) for e in range(self.w.endpoints)]
        merged = batches[0]
        for b in batches[1:]:
            merged.engine_samples += b.engine_samples
            merged.histogram_deltas += b.histogram_deltas
            merged.raw_series += b.raw_series
        return merged


def warm_analysis(hours: float):
    """A daemon component factory: the analysis, already stepped over the last ``hours``."""

    def factory(daemon: Daemon) -> Analyzer:
        analyzer = Analyzer(daemon.config, daemon.agent.store)
        now = time.time()
        t = now - hours * 3600
        while t < now:
            t = min(now, t + 600)
            analyzer.step(t)
        return analyzer

    return factory


def memory_limit(limit: str):
    """A component factory that caps DuckDB's buffer pool (a what-if: the agent sets no limit)."""

    def factory(daemon: Daemon) -> None:
        daemon.agent.store.write_sync(lambda con: con.execute(f"SET memory_limit = '{limit}'"))

    return factory


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db")
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--analysis-warm-hours", type=float, default=0.0)
    ap.add_argument("--no-analysis", action="store_true")
    ap.add_argument("--duckdb-memory-limit", help="what-if: SET memory_limit on the store once open (e.g. 128MB)")
    args = ap.parse_args()
    overrides = {"storage.path": args.db, "web.listen": args.listen, "agent.host": "bench-host",
                 "collectors.stacks.enabled": False, "collectors.gpu.enabled": False,
                 "collectors.engines.enabled": False}
    components = []
    if args.no_analysis or args.analysis_warm_hours:
        overrides["analysis.enabled"] = False
    if args.analysis_warm_hours and not args.no_analysis:
        components.append(warm_analysis(args.analysis_warm_hours))
    config = with_overrides(Config(), **overrides)
    setup_logging("info")
    workload = Workload(config)
    if args.duckdb_memory_limit:
        components.insert(0, memory_limit(args.duckdb_memory_limit))
    daemon = Daemon(config, extra_collectors=[SimStacks(workload), SimGpu(workload), SimEngines(workload)],
                    components=components)
    return asyncio.run(daemon.run())


if __name__ == "__main__":
    sys.exit(main())
