"""The real daemon on an existing store, fed the simulated default load in real time.

usage: python bench/_agent_under_load.py DB [--listen 127.0.0.1:0] [--analysis-warm-hours H | --no-analysis]
                                          [--duckdb-set NAME=VALUE ...] [--memory-probe S [--tracemalloc N]]

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

``--memory-probe S`` (a profiling aid, not part of the figures) logs every S seconds what the
process holds: RSS, Python's allocated blocks, and, once, RSS before and after glibc's
``malloc_trim`` (memory freed but kept by the allocator); with ``--tracemalloc N`` (traced from
the start, warm-up included) also the N source lines holding the most Python memory.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import logging
import sys
import time
import tracemalloc
from pathlib import Path

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


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def allocators() -> str:
    """Who holds the anonymous memory: glibc malloc (in use, free), Python's object arenas,
    and DuckDB's own jemalloc (allocated, resident), in MB. A profiling aid."""
    import glob
    import os
    import tempfile

    out = []
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        mi = libc.mallinfo2()
        out.append(f"glibc_used_mb={(mi.uordblks + mi.hblkhd) / 1e6:.1f} glibc_free_mb={mi.fordblks / 1e6:.1f}")
    except (OSError, AttributeError):
        pass
    with tempfile.TemporaryFile("w+") as tmp:      # the stats go to the C-level stderr
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read()
    for line in text.splitlines():
        if line.startswith("# bytes in allocated blocks"):
            out.append(f"py_used_mb={int(line.split('=')[1].replace(',', '')) / 1e6:.1f}")
        elif line.startswith("Total") and not any(o.startswith("py_arenas_mb") for o in out):
            out.append(f"py_arenas_mb={int(line.split('=')[1].replace(',', '')) / 1e6:.1f}")
    so = glob.glob(str(Path(duckdb_module_file()).parent.parent / "_duckdb*.so"))
    if so:
        je = ctypes.CDLL(so[0])
        one = ctypes.c_uint64(1)
        je.duckdb_je_mallctl(b"epoch", None, None, ctypes.byref(one), ctypes.c_size_t(8))
        for name in ("allocated", "resident"):
            value, size = ctypes.c_size_t(0), ctypes.c_size_t(8)
            if je.duckdb_je_mallctl(f"stats.{name}".encode(), ctypes.byref(value), ctypes.byref(size), None,
                                    ctypes.c_size_t(0)) == 0:
                out.append(f"jemalloc_{name}_mb={value.value / 1e6:.1f}")
    return " ".join(out)


def duckdb_module_file() -> str:
    import duckdb

    return duckdb.__file__


def rss_parts() -> str:
    """RSS and its anonymous and file-backed parts (code of Python and the libraries), in MB."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "RssAnon", "RssFile")):
                name, value = line.split(":", 1)
                fields[name] = int(value.split()[0]) / 1e3
    return f"rss_mb={fields.get('VmRSS', 0):.1f} anon_mb={fields.get('RssAnon', 0):.1f} file_mb={fields.get('RssFile', 0):.1f}"


# The warm-up steps a minute at a time: a live agent ticks every analysis.interval_s (5 s), and
# a step's transient memory (its seconds read into Python) grows with its length; 5 s steps
# would take minutes here, 10-minute ones left a heap no live agent grows.
WARM_STEP_S = 60.0


def log_rss(phase: str) -> None:
    """One ``event=memory`` line with the RSS at a phase of the start (read by bench/_rss.py)."""
    logging.getLogger("infersight.bench").info("event=memory phase=%s %s %s py_blocks=%d", phase, rss_parts(),
                                               allocators(), sys.getallocatedblocks())


def warm_analysis(hours: float, step_s: float = WARM_STEP_S):
    """A daemon component factory: the analysis, already stepped over the last ``hours``."""

    def factory(daemon: Daemon) -> Analyzer:
        log_rss("store_open")
        analyzer = Analyzer(daemon.config, daemon.agent.store)
        now = time.time()
        t = now - hours * 3600
        analyzer.done_until = int(t - analyzer.cfg.lag_s)   # no hour of catch-up before the hours asked for
        while t < now:
            t = min(now, t + step_s)
            analyzer.step(t)
        log_rss("analysis_warm")
        return analyzer

    return factory


def duckdb_settings(settings: list[str]):
    """A component factory applying ``NAME=VALUE`` DuckDB settings once the store is open
    (what-ifs beside the agent's own settings, e.g. memory_limit=64MB)."""

    def factory(daemon: Daemon) -> None:
        for item in settings:
            name, _, value = item.partition("=")
            if not name.replace("_", "").isalnum():
                raise SystemExit(f"bad DuckDB setting name {name!r}")
            daemon.agent.store.write_sync(lambda con: con.execute(f"SET {name} = '{value}'"))

    return factory


class MemoryProbe:
    """A daemon component that logs what the process holds (see the module docstring)."""

    name = "memory_probe"

    def __init__(self, daemon: Daemon, interval_s: float, top: int) -> None:
        self.store = daemon.agent.store
        self.interval_s = interval_s
        self.top = top
        self.ticks = 0
        self.log = logging.getLogger("infersight.bench")

    async def tick(self) -> None:
        self.ticks += 1
        import psutil

        parts = rss_parts()
        rss = psutil.Process().memory_info().rss / 1e6
        duck = await self.store.read(lambda cur: cur.execute(
            "SELECT tag, memory_usage_bytes FROM duckdb_memory() WHERE memory_usage_bytes > 0").fetchall())
        self.log.info("event=memory tick=%d %s %s py_blocks=%d gc_objects=%d duckdb_mb=%s", self.ticks, parts,
                      allocators(), sys.getallocatedblocks(), len(gc.get_objects()),
                      ",".join(f"{tag}:{n / 1e6:.1f}" for tag, n in duck) or "0")
        if self.ticks == 3:
            libc = ctypes.CDLL("libc.so.6")
            libc.malloc_trim(0)
            after = psutil.Process().memory_info().rss / 1e6
            self.log.info("event=malloc_trim rss_before_mb=%.1f rss_after_mb=%.1f", rss, after)
        if self.top and tracemalloc.is_tracing():
            snap = tracemalloc.take_snapshot()
            total = sum(st.size for st in snap.statistics("filename"))
            self.log.info("event=tracemalloc traced_mb=%.1f", total / 1e6)
            for st in snap.statistics("lineno")[: self.top]:
                self.log.info("event=tracemalloc_top size_kb=%.0f count=%d where=%s", st.size / 1e3, st.count,
                              st.traceback[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db")
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--analysis-warm-hours", type=float, default=0.0)
    ap.add_argument("--no-analysis", action="store_true")
    ap.add_argument("--duckdb-set", action="append", default=[], metavar="NAME=VALUE",
                    help="what-if: SET a DuckDB setting once the store is open (repeatable)")
    ap.add_argument("--memory-probe", type=float, default=0.0, help="log what the process holds every S seconds")
    ap.add_argument("--tracemalloc", type=int, default=0, help="with --memory-probe: the N lines holding most")
    args = ap.parse_args()
    if args.tracemalloc:
        tracemalloc.start()
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
    log_rss("imports")
    workload = Workload(config)
    log_rss("workload")
    if args.duckdb_set:
        components.insert(0, duckdb_settings(args.duckdb_set))
    if args.memory_probe:
        components.append(lambda daemon: MemoryProbe(daemon, args.memory_probe, args.tracemalloc))
    daemon = Daemon(config, extra_collectors=[SimStacks(workload), SimGpu(workload), SimEngines(workload)],
                    components=components)
    return asyncio.run(daemon.run())


if __name__ == "__main__":
    sys.exit(main())
