"""The simulated load of one inference host at the agent's default settings, for the benchmarks.

One :class:`Workload` produces, for any Unix second, the batches the live collectors would
have submitted during that second:

- stacks: ``processes`` worker processes x ``threads`` threads sampled at
  ``collectors.stacks.rate_hz`` (read from ``Config()``), idle samples kept (the default).
  Most threads sit in one of a few wait stacks all second (one idle row each). The first
  ``active_threads`` threads of each process replay the real recording
  ``tests/fixtures/h100-scenario/stacks/644.raw.jsonl.gz``: each second a thread takes one
  recorded 1 s window (processes and threads at different offsets, so phases differ between
  them), is active for the share of the window py-spy found it running, and draws that many
  samples from the window's own stack distribution; the rest of its samples are waits.
  One SamplingStat per process and second.
- GPU: ``gpus`` GPUs every ``collectors.gpu.fast_interval_s`` with the fast signals of the real
  recording ``gpu.jsonl`` (GPU i reads the recording at its own offset), plus the slow signals
  and one GPU process per GPU every ``collectors.gpu.slow_interval_s``.
- engine: the recording's ``engine_metrics.jsonl.gz`` scrapes, normalized by the live
  collector's own code (:func:`replay_engine_lines`), one scrape per
  ``collectors.engines.interval_s`` from ``endpoints`` endpoints, raw series kept (the default).
- host: one HostSample and one ProcessSample per worker per ``collectors.host.interval_s``.

Everything is deterministic for a seed. Timestamps carry a few ms of jitter, as real ticks do.
"""
from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infersight.daemon.config.load import Config
from infersight.daemon.replay.engine import read_lines, replay_engine_lines
from infersight.daemon.stacks.parse import parse_raw
from infersight.storage.model import (
    Batch,
    EngineSample,
    Frame,
    GpuInfo,
    GpuProcessSample,
    GpuSample,
    HistogramDelta,
    HostSample,
    ProcessSample,
    RawSeriesSample,
    SamplingStat,
    StackSample,
    Target,
)

RECORDING = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "h100-scenario"
HOST = "bench-host"
MIB = 2**20


def _thread_frames(*names: tuple[str, str, int]) -> tuple[Frame, ...]:
    return tuple(Frame(fn, file, line, file.rsplit("/", 1)[-1].removesuffix(".py")) for fn, file, line in names)


_BOOT = (("Thread._bootstrap", "threading.py", 1002), ("Thread._bootstrap_inner", "threading.py", 1045),
         ("Thread.run", "threading.py", 982))
# What idle threads of a serving process wait in: worker pools, queues, selectors, sleeps.
WAIT_STACKS: tuple[tuple[Frame, ...], ...] = (
    _thread_frames(*_BOOT, ("_worker", "concurrent/futures/thread.py", 89), ("SimpleQueue.get", "queue.py", 171)),
    _thread_frames(*_BOOT, ("Condition.wait", "threading.py", 355)),
    _thread_frames(*_BOOT, ("BaseEventLoop.run_forever", "asyncio/base_events.py", 641),
                   ("BaseEventLoop._run_once", "asyncio/base_events.py", 1949), ("EpollSelector.select", "selectors.py", 468)),
    _thread_frames(*_BOOT, ("MetricsPusher.loop", "vllm/metrics/pusher.py", 61), ("sleep", "time", 0)),
    _thread_frames(*_BOOT, ("ZmqPoller.poll", "zmq/sugar/poll.py", 106)),
)


@dataclass
class _Window:
    """One recorded 1 s py-spy window: stacks and the probability of each, and the share of
    the window the thread was running."""

    stacks: list[tuple[Frame, ...]]
    probs: np.ndarray
    active_share: float


def load_windows(path: Path = RECORDING / "stacks" / "644.raw.jsonl.gz") -> list[_Window]:
    """The recording's windows, parsed with the live parser; windows without samples are idle."""
    windows = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            counts: Counter = Counter()
            if rec.get("raw"):
                for s in parse_raw(rec["raw"]).stacks:
                    counts[s.frames] += s.count
            total = sum(counts.values())
            expected = rec.get("rate_hz", 50) * rec.get("duration_s", 1)
            stacks = list(counts)
            probs = np.array([counts[s] / total for s in stacks]) if total else np.zeros(0)
            windows.append(_Window(stacks, probs, min(1.0, total / expected) if expected else 0.0))
    return windows


_GPU_FIELDS = ("util_gpu", "util_mem", "sm_util", "sm_occupancy", "tensor_util", "dram_bw_util", "graphics_util",
               "pcie_tx_mib_s", "pcie_rx_mib_s", "power_w", "sm_clock_mhz", "clocks_event_reasons", "mem_used_mib")


def load_gpu_rows(path: Path = RECORDING / "gpu.jsonl") -> list[dict]:
    """The recording's GPU rows, only the fields the load uses (a dict of the recording's
    every field per row held 2 MB of the measured agent's memory)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if "t" in rec:
                rows.append({k: rec[k] for k in _GPU_FIELDS})
    return rows


def _compact(batch: Batch, labels: dict) -> Batch:
    """A replayed scrape holding one copy of each label set (the parser's own copies per scrape
    were 4 MB of the measured agent's memory); the records are rebuilt at each use anyway."""
    for r in batch.raw_series:
        r.labels = labels.setdefault(r.labels, r.labels)
        r.name = labels.setdefault(r.name, r.name)
    return batch


def _gpu_values(rec: dict) -> dict[str, float | None]:
    return {
        "util_gpu": rec["util_gpu"], "util_mem": rec["util_mem"], "sm_util": rec["sm_util"],
        "sm_occupancy": rec["sm_occupancy"], "tensor_util": rec["tensor_util"], "dram_bw_util": rec["dram_bw_util"],
        "graphics_util": rec["graphics_util"], "pcie_tx_bytes_s": rec["pcie_tx_mib_s"] * MIB,
        "pcie_rx_bytes_s": rec["pcie_rx_mib_s"] * MIB, "power_w": rec["power_w"], "sm_clock_mhz": rec["sm_clock_mhz"],
        "clocks_event_reasons": rec["clocks_event_reasons"],
    }


class Workload:
    """Batches of one simulated host, second by second (see the module docstring)."""

    def __init__(self, config: Config | None = None, *, processes: int = 8, threads: int = 20,
                 active_threads: int = 2, gpus: int = 8, endpoints: int = 1, seed: int = 0,
                 extra_depth: int = 0, rate_hz: int | None = None) -> None:
        cfg = config or Config()
        # rate_hz: the highest rate, which the CPU budget (collectors.stacks.cpu_budget_percent)
        # lowers for targets whose stacks cost more; a lower one models that
        self.rate_hz = rate_hz or cfg.collectors.stacks.rate_hz
        self.gpu_fast_s = cfg.collectors.gpu.fast_interval_s
        self.gpu_slow_s = cfg.collectors.gpu.slow_interval_s
        self.engine_s = cfg.collectors.engines.interval_s
        self.host_s = cfg.collectors.host.interval_s
        self.processes, self.threads, self.active_threads = processes, threads, active_threads
        self.gpus, self.endpoints = gpus, endpoints
        self.rng = np.random.default_rng(seed)
        self.jitter = random.Random(seed)
        prefix = _thread_frames(*[(f"layer_{i}", f"vllm/worker/stack_{i % 7}.py", 10 + i) for i in range(extra_depth)])
        self.windows = load_windows()
        if prefix:
            for w in self.windows:
                w.stacks = [s[:1] + prefix + s[1:] for s in w.stacks]
        self.gpu_rows = load_gpu_rows()
        shared: dict = {}
        scrapes = [_compact(b, shared) for b in replay_engine_lines(read_lines(RECORDING / "engine_metrics.jsonl.gz"),
                                                                    endpoint="http://127.0.0.1:8000/metrics")
                   if b.engine_samples or b.raw_series]
        self.scrapes = scrapes
        self.start_time = 1_700_000_000.0
        self.pids = [4000 + p for p in range(processes)]
        self.tids = [[40000 + 100 * p + i for i in range(threads)] for p in range(processes)]
        self._energy = [0.0] * gpus

    # -- what the live collectors would report ------------------------------------------
    def targets(self, now: float) -> list[Target]:
        return [Target(HOST, pid, self.start_time, f"python -m vllm.worker --rank {p}", "worker", (p % self.gpus,))
                for p, pid in enumerate(self.pids)]

    def gpu_info(self) -> list[GpuInfo]:
        return [GpuInfo(g, f"GPU-bench-{g:04d}", "NVIDIA H100 80GB HBM3", f"0000:{g + 0x18:02x}:00.0", "580.159.04",
                        5120, 2619, 5120 / 8 * 2 * 2619e6, 700.0, False, True) for g in range(self.gpus)]

    def stack_batch(self, second: int) -> Batch:
        """The stacks collector's rows for Unix second ``second`` (every process and thread)."""
        samples: list[StackSample] = []
        stats: list[SamplingStat] = []
        n_windows = len(self.windows)
        for p, pid in enumerate(self.pids):
            for i, tid in enumerate(self.tids[p]):
                name = "MainThread" if i == 0 else f"Thread-{i}"
                if i < self.active_threads:
                    w = self.windows[(second + 11 * p + 29 * i) % n_windows]
                    active = int(round(self.rate_hz * w.active_share))
                    if active and len(w.stacks):
                        drawn = self.rng.multinomial(active, w.probs)
                        for k in np.flatnonzero(drawn):
                            samples.append(StackSample(second, pid, self.start_time, tid, name, w.stacks[k], True,
                                                       int(drawn[k])))
                    idle = self.rate_hz - active
                    if idle:
                        samples.append(StackSample(second, pid, self.start_time, tid, name, WAIT_STACKS[1], False,
                                                   idle))
                else:
                    samples.append(StackSample(second, pid, self.start_time, tid, name,
                                               WAIT_STACKS[i % len(WAIT_STACKS)], False, self.rate_hz))
            errors = 1 if self.jitter.random() < 0.1 else 0
            stats.append(SamplingStat(second, pid, self.start_time, self.rate_hz, errors))
        return Batch("stacks", second + 0.9, stack_samples=samples, sampling_stats=stats)

    def gpu_batch(self, t: float, slow: bool) -> Batch:
        """One GPU collector tick at ``t``: fast signals of every GPU, plus the slow ones when ``slow``."""
        batch = Batch("gpu", t)
        n = len(self.gpu_rows)
        for g in range(self.gpus):
            rec = self.gpu_rows[(int(t * 10) + 97 * g) % n]
            values = _gpu_values(rec)
            if slow:
                self._energy[g] += rec["power_w"] * self.gpu_slow_s
                values.update(mem_used_bytes=rec["mem_used_mib"] * MIB, mem_total_bytes=80 * 1024 * MIB,
                              temperature_c=38.0 + rec["util_gpu"] / 4, energy_j=round(self._energy[g], 1),
                              ecc_errors_uncorrected=0, retired_pages=0)
                batch.gpu_processes.append(GpuProcessSample(t, g, self.pids[g % len(self.pids)],
                                                            rec["mem_used_mib"] * MIB))
            batch.gpu_samples.append(GpuSample(t, g, values, "gpm"))
        return batch

    def gpu_batches(self, second: int) -> list[Batch]:
        """The GPU collector's ticks within Unix second ``second``."""
        ticks = max(1, round(1.0 / self.gpu_fast_s))
        every = max(1, round(self.gpu_slow_s / self.gpu_fast_s))
        return [self.gpu_batch(second + k * self.gpu_fast_s + self.jitter.uniform(0.0, 0.004),
                               (second * ticks + k) % every == 0) for k in range(ticks)]

    def engine_batch(self, t: float, scrape: int, endpoint: int = 0) -> Batch:
        """Scrape number ``scrape`` of the recording (cycled), as endpoint ``endpoint`` reports it at ``t``."""
        src = self.scrapes[scrape % len(self.scrapes)]
        url = f"http://127.0.0.1:{8000 + endpoint}/metrics"
        return Batch(
            "engines", t,
            engine_samples=[EngineSample(t, url, s.engine, s.model, s.signal, s.value) for s in src.engine_samples],
            histogram_deltas=[HistogramDelta(t, url, h.engine, h.model, h.signal, h.bounds, h.counts, h.interval_s)
                              for h in src.histogram_deltas],
            raw_series=[RawSeriesSample(t, url, r.name, r.labels, r.value) for r in src.raw_series])

    def engine_batches(self, second: int) -> list[Batch]:
        """The engine collector's scrapes within Unix second ``second``, every endpoint."""
        per_s = max(1, round(1.0 / self.engine_s))
        return [self.engine_batch(second + k * self.engine_s + 0.3 + self.jitter.uniform(0.0, 0.02),
                                  second * per_s + k, e)
                for k in range(per_s) for e in range(self.endpoints)]

    def host_batch(self, second: int) -> Batch:
        t = second + 0.05 + self.jitter.uniform(0.0, 0.003)
        cpu = 20.0 + 10.0 * self.jitter.random()
        procs = [ProcessSample(t, pid, self.start_time, 95.0 + self.jitter.random() * 10, (6 << 30) + p * MIB,
                               self.threads, 1000 * second + p, 10 * second + p) for p, pid in enumerate(self.pids)]
        return Batch("host", t, host_samples=[HostSample(t, cpu, 64, 200 << 30, 1 << 40, 8.0, 8.0, 8.0)],
                     process_samples=procs)

    def second(self, second: int) -> list[Batch]:
        """Every batch of Unix second ``second``, in the order the collectors would submit them."""
        out = [self.host_batch(second)]
        out += self.gpu_batches(second)
        out += self.engine_batches(second)
        out.append(self.stack_batch(second))
        return out

    def first_batches(self, now: float) -> list[Batch]:
        """What the collectors report once at start: targets and GPU facts."""
        return [Batch("stacks", now, targets=self.targets(now)), Batch("gpu", now, gpu_info=self.gpu_info())]

    def samples_per_second(self) -> int:
        """py-spy samples the stacks collector takes per second (every thread, idle included)."""
        return self.processes * self.threads * self.rate_hz
