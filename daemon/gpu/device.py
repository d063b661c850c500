"""One GPU's state and the NVML reads of one collector tick (used by collectors/gpu.py).

Blocking: every function here calls NVML through the seam and must run off the event loop.
A query the GPU does not offer is remembered per (gpu, probe) by :class:`Problems`, logged
once and never asked again; its signal stays out of the sample (stored as NULL). GpuLost and
NvmlUnavailable are not handled here: they propagate to the collector, which marks the GPU
lost or re-initialises NVML.

GPU ids: a physical GPU is its NVML index; a MIG GPU instance is ``mig_gpu_id(parent, gi)``
= 100 x (parent + 1) + GPU instance id (GPU 0's instances are 100..., GPU 1's 200...), so the
id is stable across restarts and the same whether NVML or dcgm-exporter reports it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from infersight.daemon.gpu.nvml import (
    ALL_LINKS,
    FI_ECC_DBE_VOL_TOTAL,
    FI_NVLINK_THROUGHPUT_DATA_RX,
    FI_NVLINK_THROUGHPUT_DATA_TX,
    FI_PCIE_COUNT_RX_BYTES,
    FI_PCIE_COUNT_TX_BYTES,
    FI_POWER_INSTANT,
    FI_REMAPPED_COR,
    FI_REMAPPED_UNC,
    FI_RETIRED_DBE,
    FI_RETIRED_SBE,
    FI_TOTAL_ENERGY_CONSUMPTION,
    GPM_ANY_TENSOR_UTIL,
    GPM_DRAM_BW_UTIL,
    GPM_GRAPHICS_UTIL,
    GPM_NVLINK_TOTAL_RX_PER_SEC,
    GPM_NVLINK_TOTAL_TX_PER_SEC,
    GPM_PCIE_RX_PER_SEC,
    GPM_PCIE_TX_PER_SEC,
    GPM_SM_OCCUPANCY,
    GPM_SM_UTIL,
    GpuLost,
    NoPermission,
    NotSupported,
    NvmlError,
    NvmlUnavailable,
)
from infersight.storage.model import GpuInfo, GpuProcessSample

MIB = 2 ** 20
MIG_ID_BASE = 100
GPM_MIN_GAP_S = 0.1   # NVML needs >= 100 ms between the two GPM samples of a metric
GPM_MAX_WAIT_S = 0.02  # a tick up to this early waits for the gap instead of losing its GPM figures

# (signal, GPM metric id, factor to the signal's unit). Measured per nvmlGpmMetricsGet call on an
# H100 (driver 580, .gpu microbenchmark in bench/nvml_cost.py's notes): every metric here costs
# about 5 µs of CPU except GRAPHICS_UTIL, which alone costs 1.3-1.6 ms, four times everything
# else of a fast tick together. It is therefore computed on the slow tick, over a second sample
# pair (a true average over the slow interval), unless ``fast_graphics_util`` asks otherwise.
GPM_FAST_METRICS: tuple[tuple[str, int, float], ...] = (
    ("sm_util", GPM_SM_UTIL, 1.0), ("sm_occupancy", GPM_SM_OCCUPANCY, 1.0),
    ("tensor_util", GPM_ANY_TENSOR_UTIL, 1.0), ("dram_bw_util", GPM_DRAM_BW_UTIL, 1.0),
    ("pcie_tx_bytes_s", GPM_PCIE_TX_PER_SEC, MIB), ("pcie_rx_bytes_s", GPM_PCIE_RX_PER_SEC, MIB),
    ("nvlink_tx_bytes_s", GPM_NVLINK_TOTAL_TX_PER_SEC, MIB), ("nvlink_rx_bytes_s", GPM_NVLINK_TOTAL_RX_PER_SEC, MIB),
)
GPM_COSTLY_METRICS: tuple[tuple[str, int, float], ...] = (("graphics_util", GPM_GRAPHICS_UTIL, 1.0),)
GPM_METRICS = GPM_FAST_METRICS + GPM_COSTLY_METRICS
# Cumulative NVML counters turned into rates where GPM does not give the signal:
# signal -> (field id, scope id, bytes per counter unit). Never nvmlDeviceGetPcieThroughput:
# it blocks for its 20 ms sampling window.
COUNTER_FIELDS: dict[str, tuple[int, int, float]] = {
    "pcie_tx_bytes_s": (FI_PCIE_COUNT_TX_BYTES, 0, 1.0),
    "pcie_rx_bytes_s": (FI_PCIE_COUNT_RX_BYTES, 0, 1.0),
    "nvlink_tx_bytes_s": (FI_NVLINK_THROUGHPUT_DATA_TX, ALL_LINKS, 1024.0),
    "nvlink_rx_bytes_s": (FI_NVLINK_THROUGHPUT_DATA_RX, ALL_LINKS, 1024.0),
}
# The energy counter costs NVML about 4 ms of CPU per read on an H100 (driver 580), as much
# as the rest of a slow tick together, so it is read every ``energy_interval_s`` only.
ENERGY_FIELD = ("energy", FI_TOTAL_ENERGY_CONSUMPTION)
SLOW_FIELDS: tuple[tuple[str, int], ...] = (
    ENERGY_FIELD, ("ecc_dbe", FI_ECC_DBE_VOL_TOTAL),
    ("retired_sbe", FI_RETIRED_SBE), ("retired_dbe", FI_RETIRED_DBE),
    ("remapped_cor", FI_REMAPPED_COR), ("remapped_unc", FI_REMAPPED_UNC),
)


def mig_gpu_id(parent: int, gpu_instance: int) -> int:
    """The collector's id of MIG GPU instance ``gpu_instance`` on physical GPU ``parent``."""
    return MIG_ID_BASE * (parent + 1) + gpu_instance


def peak_dram_bw_bytes_s(bus_width_bits: int | None, max_mem_clock_mhz: int | None) -> float | None:
    """Peak DRAM bandwidth = bus width / 8 x 2 (double data rate) x max memory clock, bytes/s."""
    if not bus_width_bits or not max_mem_clock_mhz:
        return None
    return bus_width_bits / 8 * 2 * max_mem_clock_mhz * 1e6


class Problems:
    """Remembers failed queries per (gpu, probe): each is logged and reported once.

    NotSupported and NoPermission switch the probe off for that GPU; other errors are
    reported once per error code and the probe is tried again next time.
    """

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._off: dict[tuple[int, str], str] = {}
        self._seen: set[tuple[Any, ...]] = set()
        self._new: list[str] = []

    def off(self, gpu: int, probe: str) -> bool:
        return (gpu, probe) in self._off

    def note(self, gpu: int, probe: str, exc: NvmlError) -> None:
        if isinstance(exc, (NotSupported, NoPermission)):
            self._off[(gpu, probe)] = str(exc)
            self.once((gpu, probe, exc.code), f"GPU {gpu}: {probe} is not available ({exc}); stored as NULL",
                      logging.INFO)
        else:
            self.once((gpu, probe, exc.code), f"GPU {gpu}: {probe} failed ({exc})")

    def once(self, key: tuple[Any, ...], message: str, level: int = logging.WARNING) -> None:
        """Log ``message`` and queue it for the next Batch, the first time ``key`` is seen."""
        if key in self._seen:
            return
        self._seen.add(key)
        self._log.log(level, message)
        self._new.append(message)

    def take(self) -> list[str]:
        new, self._new = self._new, []
        return new

    def unsupported(self, gpu: int) -> list[str]:
        return sorted(name for (g, name) in list(self._off) if g == gpu)

    def forget(self, gpu: int) -> None:
        """Drop what is known about ``gpu`` (after it was re-initialised)."""
        self._off = {k: v for k, v in self._off.items() if k[0] != gpu}
        self._seen = {k for k in self._seen if k[0] != gpu}


@dataclass(eq=False)
class GpmPair:
    """Two GPM sample buffers, swapped at every reading: metrics are computed between the
    older and the newer sample. ``signals`` are the metrics this pair computes (those a GPU
    turned out not to support are removed)."""

    signals: list[tuple[str, int, float]]
    older: Any = None
    newer: Any = None
    at: float | None = None                 # monotonic time of the newer buffer's sample

    def buffers(self) -> tuple[Any, Any]:
        return self.older, self.newer


@dataclass(eq=False)
class Device:
    """A physical GPU or a MIG GPU instance (``parent`` set) and its sampling state."""

    gpu: int
    handle: Any
    uuid: str
    info: GpuInfo | None = None
    parent: "Device | None" = None
    gpu_instance: int | None = None
    gpm: bool = False                                   # GPM in use for this device
    gpm_fast: GpmPair = field(default_factory=lambda: GpmPair(list(GPM_FAST_METRICS)))   # every fast tick
    gpm_slow: GpmPair = field(default_factory=lambda: GpmPair(list(GPM_COSTLY_METRICS)))  # every slow tick
    counters: dict[str, tuple[float, float]] = field(default_factory=dict)
    proc_since_us: int = 0                              # last seen nvmlDeviceGetProcessUtilization timestamp
    energy_at: float | None = None                      # monotonic time of the last energy reading
    instances: list["Device"] = field(default_factory=list)
    lost_since: float | None = None                     # Unix time it was lost; None while healthy
    lost_error: str = ""
    retry_at: float = 0.0                               # monotonic time of the next re-open attempt
    backoff_s: float = 1.0

    @property
    def is_mig_instance(self) -> bool:
        return self.parent is not None

    @property
    def gpm_signals(self) -> list[tuple[str, int, float]]:
        """Every GPM metric this device still computes (fast and slow)."""
        return self.gpm_fast.signals + self.gpm_slow.signals

    def gpm_pairs(self) -> list[GpmPair]:
        """The pairs that compute anything."""
        return [p for p in (self.gpm_fast, self.gpm_slow) if p.signals]


def probe(nvml_fn: Any, problems: Problems, gpu: int, name: str, *args: Any) -> Any:
    """``nvml_fn(*args)``, or None when the probe is off or failed (the failure is noted)."""
    if problems.off(gpu, name):
        return None
    try:
        return nvml_fn(*args)
    except (GpuLost, NvmlUnavailable):
        raise
    except NvmlError as exc:
        problems.note(gpu, name, exc)
        return None


def new_device(gpu: int, handle: Any, uuid: str, fast_graphics_util: bool = False, **kw: Any) -> Device:
    """A device whose GPM pairs compute GRAPHICS_UTIL on the slow tick, or on every fast tick
    when ``fast_graphics_util``."""
    dev = Device(gpu=gpu, handle=handle, uuid=uuid, **kw)
    if fast_graphics_util:
        dev.gpm_fast.signals, dev.gpm_slow.signals = list(GPM_METRICS), []
    return dev


def open_device(nvml: Any, index: int, driver: str, gpm_mode: str, problems: Problems,
                handle: Any = None, fast_graphics_util: bool = False) -> Device:
    """Read the static facts of GPU ``index`` (and its MIG instances) and set up GPM.

    Raises NvmlError when the GPU cannot be opened at all (no handle, no UUID).
    """
    h = handle if handle is not None else nvml.handle_by_index(index)
    dev = new_device(index, h, nvml.uuid(h), fast_graphics_util)
    width = probe(nvml.memory_bus_width_bits, problems, index, "memory bus width", h)
    clock = probe(nvml.max_mem_clock_mhz, problems, index, "max memory clock", h)
    gpm_ok = probe(nvml.gpm_supported, problems, index, "GPM support", h)
    mig = probe(nvml.mig_mode, problems, index, "MIG mode", h)
    dev.info = GpuInfo(
        gpu=index, uuid=dev.uuid, name=probe(nvml.name, problems, index, "name", h) or "",
        pci_bus_id=probe(nvml.pci_bus_id, problems, index, "PCI bus id", h) or "", driver=driver,
        mem_bus_width_bits=width, max_mem_clock_mhz=clock, peak_dram_bw_bytes_s=peak_dram_bw_bytes_s(width, clock),
        power_limit_w=probe(nvml.power_limit_w, problems, index, "power limit", h), mig_mode=mig,
        gpm_supported=gpm_ok)
    if gpm_mode == "on" and not gpm_ok:
        problems.once((index, "gpm=on"), f"GPU {index}: collectors.gpu.gpm is 'on' but this GPU or driver has no "
                                         "GPM; using NVML utilization (and dcgm-exporter where found)")
    if gpm_mode != "off" and gpm_ok:
        start_gpm(nvml, dev, problems)
    if mig:
        dev.instances = open_instances(nvml, dev, problems, fast_graphics_util)
    return dev


def open_instances(nvml: Any, parent: Device, problems: Problems, fast_graphics_util: bool = False) -> list[Device]:
    """The MIG GPU instances of ``parent`` as devices; a broken instance is skipped and noted."""
    pairs = probe(nvml.mig_instances, problems, parent.gpu, "MIG instances", parent.handle) or []
    out = []
    for gi, mh in pairs:
        gid = mig_gpu_id(parent.gpu, gi)
        try:
            uuid = nvml.uuid(mh)
        except NvmlUnavailable:
            raise
        except NvmlError as exc:
            problems.note(gid, "MIG instance UUID", exc)
            continue
        dev = new_device(gid, mh, uuid, fast_graphics_util, parent=parent, gpu_instance=gi)
        pinfo = parent.info
        dev.info = GpuInfo(gpu=gid, uuid=uuid, name=probe(nvml.name, problems, gid, "name", mh) or "",
                           pci_bus_id=pinfo.pci_bus_id if pinfo else "", driver=pinfo.driver if pinfo else "",
                           gpm_supported=pinfo.gpm_supported if pinfo else None, parent_gpu=parent.gpu)
        if parent.gpm:
            start_gpm(nvml, dev, problems)
        out.append(dev)
    return out


def start_gpm(nvml: Any, dev: Device, problems: Problems) -> None:
    """Allocate the buffers of each GPM pair that computes anything."""
    try:
        for pair in dev.gpm_pairs():
            pair.older, pair.newer, pair.at = nvml.gpm_alloc(), nvml.gpm_alloc(), None
    except NvmlError as exc:
        problems.note(dev.gpu, "GPM", exc)
        stop_gpm(nvml, dev)
        return
    dev.gpm = True


def stop_gpm(nvml: Any, dev: Device) -> None:
    """Free ``dev``'s GPM buffers; errors are ignored (the GPU may already be gone)."""
    for pair in (dev.gpm_fast, dev.gpm_slow):
        for sample in pair.buffers():
            if sample is not None:
                try:
                    nvml.gpm_free(sample)
                except NvmlError:
                    pass
        pair.older, pair.newer, pair.at = None, None, None
    dev.gpm = False


def close_device(nvml: Any, dev: Device) -> None:
    for inst in dev.instances:
        stop_gpm(nvml, inst)
    stop_gpm(nvml, dev)


def read_fast(nvml: Any, dev: Device, problems: Problems, clock: Callable[[], float]) -> dict[str, float | None]:
    """Utilization, power, SM clock, clock event reasons, GPM and link rates of one tick.

    ``clock`` is monotonic seconds, read at the moment of each rate or GPM reading.
    """
    v: dict[str, float | None] = {}
    h, gpu = dev.handle, dev.gpu
    if not dev.is_mig_instance:   # MIG instances have none of these: they belong to the parent
        util = probe(nvml.utilization, problems, gpu, "utilization", h)
        if util is not None:
            v["util_gpu"], v["util_mem"] = util
        _read_fast_fields(nvml, dev, problems, clock, v)
        if "power_w" not in v:
            v["power_w"] = probe(nvml.power_usage_w, problems, gpu, "power usage", h)
        v["sm_clock_mhz"] = probe(nvml.sm_clock_mhz, problems, gpu, "SM clock", h)
        v["clocks_event_reasons"] = probe(nvml.clocks_event_reasons, problems, gpu, "clock event reasons", h)
    if dev.gpm and dev.gpm_fast.signals:
        v.update(_read_gpm(nvml, dev, dev.gpm_fast, problems, clock))
    return {k: x for k, x in v.items() if x is not None}


def _read_fast_fields(nvml: Any, dev: Device, problems: Problems, clock: Callable[[], float], v: dict) -> None:
    from_gpm = {s for s, _, _ in dev.gpm_signals} if dev.gpm else set()
    counters = {sig: c for sig, c in COUNTER_FIELDS.items() if sig not in from_gpm}
    got = _fields(nvml, dev, problems, [("power_w", FI_POWER_INSTANT, 0)] +
                  [(sig, fid, scope) for sig, (fid, scope, _) in counters.items()])
    now_mono = clock()
    if "power_w" in got:
        v["power_w"] = got.pop("power_w") / 1000.0   # mW
    for sig, total in got.items():
        v[sig] = _rate(dev, sig, total * counters[sig][2], now_mono)


def _fields(nvml: Any, dev: Device, problems: Problems, wanted: list[tuple[str, int, int]]) -> dict[str, float]:
    """One nvmlDeviceGetFieldValues call for (name, field id, scope id): the values that came
    back, by name. Fields switched off are not asked; per-field failures are noted."""
    wanted = [w for w in wanted if not problems.off(dev.gpu, f"field {w[0]}")]
    if not wanted:
        return {}
    got = probe(nvml.field_values, problems, dev.gpu, "field values", dev.handle, [(f, s) for _, f, s in wanted])
    out: dict[str, float] = {}
    for (name, _fid, _scope), value in zip(wanted, got or ()):
        if isinstance(value, (GpuLost, NvmlUnavailable)):
            raise value
        if isinstance(value, NvmlError):
            problems.note(dev.gpu, f"field {name}", value)
        else:
            out[name] = value
    return out


def _rate(dev: Device, signal: str, total: float, now_mono: float) -> float | None:
    """Per-second rate of a cumulative counter since the previous reading (None the first time,
    and after a wrap or reset)."""
    prev = dev.counters.get(signal)
    dev.counters[signal] = (total, now_mono)
    if prev is None or now_mono <= prev[1] or total < prev[0]:
        return None
    return (total - prev[0]) / (now_mono - prev[1])


def _read_gpm(nvml: Any, dev: Device, pair: GpmPair, problems: Problems,
              clock: Callable[[], float]) -> dict[str, float]:
    """Take a GPM sample into ``pair`` and compute its metrics since the pair's previous sample."""
    now_mono = clock()
    if pair.at is not None:
        wait = GPM_MIN_GAP_S - (now_mono - pair.at)
        if wait > GPM_MAX_WAIT_S:
            return {}  # far too soon: NVML cannot give metrics over less than 100 ms
        if wait > 0:
            time.sleep(wait)  # scheduler jitter; costs no CPU
            now_mono = max(clock(), pair.at + GPM_MIN_GAP_S)
    try:
        if dev.is_mig_instance:
            nvml.gpm_mig_sample(dev.parent.handle, dev.gpu_instance, pair.older)
        else:
            nvml.gpm_sample(dev.handle, pair.older)
    except (GpuLost, NvmlUnavailable):
        raise
    except NvmlError as exc:
        problems.note(dev.gpu, "GPM sample", exc)
        if problems.off(dev.gpu, "GPM sample"):
            stop_gpm(nvml, dev)
        return {}
    # the buffer just filled becomes the newer one; the previous newer is now the older
    pair.older, pair.newer = pair.newer, pair.older
    first, pair.at = pair.at is None, now_mono
    if first:
        return {}
    metrics = pair.signals
    got = probe(nvml.gpm_metrics, problems, dev.gpu, "GPM metrics", pair.older, pair.newer,
                [m for _, m, _ in metrics])
    out: dict[str, float] = {}
    for (sig, _mid, factor), value in zip(metrics, got or ()):
        if isinstance(value, NvmlError):
            problems.note(dev.gpu, f"GPM {sig}", value)
        else:
            out[sig] = value * factor
    pair.signals = [m for m in metrics if not problems.off(dev.gpu, f"GPM {m[0]}")]
    if not dev.gpm_signals:
        stop_gpm(nvml, dev)
    return out


def read_slow(nvml: Any, dev: Device, problems: Problems, clock: Callable[[], float],
              energy_interval_s: float = 0.0) -> dict[str, float | None]:
    """Memory, temperature, energy (when ``energy_interval_s`` has passed since the last
    reading), uncorrected ECC errors, retired pages, and the costly GPM metrics
    (GRAPHICS_UTIL) averaged since the previous slow tick.

    ``retired_pages`` counts retired pages (before Ampere) or, where the GPU remaps rows
    instead (Ampere and newer), remapped rows; ``ecc_errors_uncorrected`` counts volatile
    double-bit errors since the driver was loaded.
    """
    v: dict[str, float | None] = {}
    mem = probe(nvml.memory, problems, dev.gpu, "memory", dev.handle)
    if mem is not None:
        v["mem_used_bytes"], v["mem_total_bytes"] = mem
    if dev.gpm and dev.gpm_slow.signals:
        v.update(_read_gpm(nvml, dev, dev.gpm_slow, problems, clock))
    if dev.is_mig_instance:
        return v
    v["temperature_c"] = probe(nvml.temperature_c, problems, dev.gpu, "temperature", dev.handle)
    now_mono = clock()
    energy_due = dev.energy_at is None or now_mono - dev.energy_at >= energy_interval_s
    if energy_due:
        dev.energy_at = now_mono
    f = _fields(nvml, dev, problems, [(name, fid, 0) for name, fid in SLOW_FIELDS
                                      if energy_due or (name, fid) != ENERGY_FIELD])
    if "energy" in f:
        v["energy_j"] = f["energy"] / 1000.0
    if "ecc_dbe" in f:
        v["ecc_errors_uncorrected"] = int(f["ecc_dbe"])
    if "retired_sbe" in f or "retired_dbe" in f:
        v["retired_pages"] = int(f.get("retired_sbe", 0) + f.get("retired_dbe", 0))
    elif "remapped_cor" in f or "remapped_unc" in f:
        v["retired_pages"] = int(f.get("remapped_cor", 0) + f.get("remapped_unc", 0))
    return {k: x for k, x in v.items() if x is not None}


def read_processes(nvml: Any, dev: Device, problems: Problems, t: float) -> list[GpuProcessSample]:
    """Processes with a compute context on ``dev``, with their latest SM/memory utilization."""
    procs = probe(nvml.compute_processes, problems, dev.gpu, "compute processes", dev.handle)
    if not procs:
        return []
    latest: dict[int, Any] = {}
    for s in probe(nvml.process_utilization, problems, dev.gpu, "process utilization", dev.handle,
                   dev.proc_since_us) or ():
        if s.pid not in latest or s.timestamp_us > latest[s.pid].timestamp_us:
            latest[s.pid] = s
        dev.proc_since_us = max(dev.proc_since_us, s.timestamp_us)
    out = []
    for pid, used in procs:
        u = latest.get(pid)
        out.append(GpuProcessSample(t=t, gpu=dev.gpu, pid=pid, used_memory_bytes=used,
                                    sm_util=u.sm_util if u else None, mem_util=u.mem_util if u else None))
    return out
