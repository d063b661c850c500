"""CPU cost of the GPU collector on this host, in the figures the issue asks for.

usage: python bench/nvml_cost.py [--ticks 100] [--seconds 30] [--fake [--fake-gpus N]]

0. Each NVML call the collector makes, through its own seam on GPU 0: process CPU per call
   (what decided which reads are fast and which slow: daemon/gpu/device.py).

1. One tick per GPU: the collector is driven tick by tick (0.11 s apart, so GPM gets a
   sample pair every tick) and the process's CPU time (``time.process_time``: every thread,
   so the worker thread, the event loop and anything NVML runs) is divided by ticks and
   GPUs. Fast ticks (utilization, GPM, power, clock, reasons) and slow ticks (the fast reads
   plus memory, temperature, energy, ECC, processes) are measured separately. The worker
   thread's own CPU time (``time.thread_time`` inside the tick) is shown beside it.
2. The default settings' total: a collector with the defaults (fast 0.5 s, slow 5 s, XID
   event thread on, dcgm-exporter probed where a GPU lacks GPM) runs for ``--seconds`` at its
   own cadence; process CPU time / wall time is the share of one core, divided by the GPU
   count. The target is <= 0.5 % of one core per GPU.

Without an NVIDIA GPU (or with ``--fake``) it runs against the fake NVML layer and says so:
those figures are the collector's Python overhead alone, NVML's own cost is not in them.
"""
from __future__ import annotations

import argparse
import asyncio
import time

from infersight.daemon.collectors.gpu import GpuCollector
from infersight.daemon.config.load import GpuCollectorConfig
from infersight.daemon.gpu.device import COUNTER_FIELDS, GPM_COSTLY_METRICS, GPM_FAST_METRICS, SLOW_FIELDS
from infersight.daemon.gpu.fake_nvml import FakeGpu, FakeNvml, gpm_values
from infersight.daemon.gpu.nvml import FI_POWER_INSTANT, Nvml, NvmlError

TARGET_PCT = 0.5
GPM_SPACING_S = 0.11


def pick_nvml(force_fake: bool, fake_gpus: int) -> tuple[object, str, bool]:
    """(nvml seam, description, is_fake)."""
    if not force_fake:
        real = Nvml()
        try:
            real.init()
            count = real.device_count()
            names = [real.name(real.handle_by_index(i)) for i in range(count)]
            driver = real.driver_version()
            real.shutdown()
            if count:
                return real, f"{count} x {', '.join(sorted(set(names)))}, driver {driver}", False
            why = "NVML found no GPU"
        except NvmlError as exc:
            why = f"NVML is not available ({exc})"
    else:
        why = "--fake given"
    gpus = [FakeGpu(uuid=f"GPU-fake-{i}", processes=[(1000 + i, 4 << 30)],
                    gpm=gpm_values(sm=60.0, tensor=30.0, dram=40.0)) for i in range(fake_gpus)]
    return FakeNvml(gpus), f"NO REAL GPU MEASURED ({why}): fake NVML with {fake_gpus} GPU(s)", True


async def drive(collector: GpuCollector, ticks: int, spacing_s: float) -> tuple[float, float, int]:
    """Run ``ticks`` collections ``spacing_s`` apart; (process CPU s, wall s, GPU count)."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    gpus = 0
    for _ in range(ticks):
        started = time.perf_counter()
        batch = await collector.collect(time.time())
        gpus = max(gpus, len({s.gpu for s in batch.gpu_samples if s.source != "dcgm"}))
        await asyncio.sleep(max(0.0, spacing_s - (time.perf_counter() - started)))
    return time.process_time() - cpu0, time.perf_counter() - wall0, gpus


def thread_ms(before: list, after: list) -> float:
    n = after[0] - before[0]
    return 1000 * (after[1] - before[1]) / n if n else float("nan")


async def per_tick(nvml: object, ticks: int) -> None:
    # slow ticks never come due here: these are fast ticks only
    fast = GpuCollector(GpuCollectorConfig(slow_interval_s=3600, dcgm_url="off", events=False), "bench", nvml=nvml)
    await drive(fast, 3, GPM_SPACING_S)   # open the GPUs, read static facts, prime GPM
    before = list(fast.tick_cpu_s["fast"])
    cpu, wall, gpus = await drive(fast, ticks, GPM_SPACING_S)
    after = fast.tick_cpu_s["fast"]
    gpm = sum(g["gpm"] for g in fast.status()["gpus"])
    await fast.close()
    print(f"one fast tick:  {1000 * cpu / ticks / gpus:7.3f} ms process CPU per GPU "
          f"({thread_ms(before, after) / gpus:.3f} ms in the worker thread; {ticks} ticks, {gpus} GPU(s), "
          f"GPM on {gpm} of them)")
    # fast 0.5 s / slow 0.5 s driven 0.26 s apart: the slow reads come due on every tick
    slow = GpuCollector(GpuCollectorConfig(fast_interval_s=0.5, slow_interval_s=0.5, dcgm_url="off", events=False),
                        "bench", nvml=nvml)
    await drive(slow, 2, 0.26)
    n = max(10, ticks // 5)
    before = list(slow.tick_cpu_s["slow"])
    cpu, wall, gpus = await drive(slow, n, 0.26)
    after = slow.tick_cpu_s["slow"]
    await slow.close()
    print(f"one slow tick:  {1000 * cpu / n / gpus:7.3f} ms process CPU per GPU "
          f"({thread_ms(before, after) / gpus:.3f} ms in the worker thread; {after[0] - before[0]} of {n} ticks "
          "were slow)")


def per_call(nvml: object, repeats: int = 100) -> None:
    """Process CPU of each NVML call of a tick, on GPU 0 (a failing call prints its error)."""
    nvml.init()
    h = nvml.handle_by_index(0)
    older, newer = nvml.gpm_alloc(), nvml.gpm_alloc()
    calls: list[tuple[str, object, int, float]] = [
        ("utilization", lambda: nvml.utilization(h), repeats, 0.0),
        ("field power_instant", lambda: nvml.field_values(h, [(FI_POWER_INSTANT, 0)]), repeats, 0.0),
        ("fields PCIe + NVLink counters (no-GPM path)",
         lambda: nvml.field_values(h, [(f, sc) for f, sc, _ in COUNTER_FIELDS.values()]), repeats, 0.0),
        ("SM clock", lambda: nvml.sm_clock_mhz(h), repeats, 0.0),
        ("clock event reasons", lambda: nvml.clocks_event_reasons(h), repeats, 0.0),
        ("GPM sample", lambda: nvml.gpm_sample(h, older), max(10, repeats // 4), 0.11),
        (f"GPM metrics, fast set ({len(GPM_FAST_METRICS)})",
         lambda: nvml.gpm_metrics(older, newer, [m for _, m, _ in GPM_FAST_METRICS]), repeats, 0.0),
        ("GPM metrics, graphics_util alone",
         lambda: nvml.gpm_metrics(older, newer, [m for _, m, _ in GPM_COSTLY_METRICS]), repeats, 0.0),
        ("memory", lambda: nvml.memory(h), repeats, 0.0),
        ("temperature", lambda: nvml.temperature_c(h), repeats, 0.0),
        (f"fields slow set ({len(SLOW_FIELDS)}: energy, ECC, retired/remapped)",
         lambda: nvml.field_values(h, [(f, 0) for _, f in SLOW_FIELDS]), max(10, repeats // 4), 0.0),
        ("compute processes", lambda: nvml.compute_processes(h), repeats, 0.0),
        ("process utilization", lambda: nvml.process_utilization(h, 0), max(10, repeats // 4), 0.0),
    ]
    try:
        nvml.gpm_sample(h, older)
        time.sleep(GPM_SPACING_S)
        nvml.gpm_sample(h, newer)
    except NvmlError as exc:
        print(f"  (no GPM sample pair: {exc})")
    print("per NVML call on GPU 0 (process CPU, mean of the repeats):")
    for name, fn, n, gap in calls:
        try:
            fn()
            cpu = 0.0
            for _ in range(n):
                c0 = time.process_time()
                fn()
                cpu += time.process_time() - c0
                if gap:
                    time.sleep(gap)
            print(f"  {name:58s} {1000 * cpu / n:7.3f} ms")
        except NvmlError as exc:
            print(f"  {name:58s} {'-':>7s}    ({exc})")
    for sample in (older, newer):
        nvml.gpm_free(sample)
    nvml.shutdown()


async def defaults(nvml: object, seconds: float) -> None:
    config = GpuCollectorConfig()
    c = GpuCollector(config, "bench", nvml=nvml)
    await drive(c, 3, config.fast_interval_s)   # opening is a one-off; not part of the steady cost
    ticks = max(1, round(seconds / config.fast_interval_s))
    cpu, wall, gpus = await drive(c, ticks, config.fast_interval_s)
    status = c.status()
    await c.close()
    pct = 100 * cpu / wall / gpus
    verdict = "within" if pct <= TARGET_PCT else "OVER"
    events = "on" if status["events"]["running"] else "off"
    dcgm = status["dcgm"]["state"] if status["dcgm"] else "off"
    print(f"defaults (fast {config.fast_interval_s} s, slow {config.slow_interval_s} s, events {events}, "
          f"dcgm {dcgm}): {pct:.3f} % of one core per GPU ({cpu:.3f} s CPU over {wall:.1f} s wall, {gpus} GPU(s)); "
          f"target <= {TARGET_PCT} %: {verdict}")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ticks", type=int, default=100, help="fast ticks measured one by one (default 100)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the default-settings run (default 30)")
    p.add_argument("--fake", action="store_true", help="measure against the fake NVML even where a GPU exists")
    p.add_argument("--fake-gpus", type=int, default=1, help="GPUs of the fake NVML (default 1)")
    args = p.parse_args()
    nvml, what, fake = pick_nvml(args.fake, args.fake_gpus)
    print(f"infersight GPU collector cost on {what}")
    if fake:
        print("  (fake NVML: these figures are the collector's own Python overhead, not NVML's cost)")
    per_call(nvml)
    await per_tick(nvml, args.ticks)
    await defaults(nvml, args.seconds)


if __name__ == "__main__":
    asyncio.run(main())
