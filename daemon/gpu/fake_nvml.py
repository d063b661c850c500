"""A scripted, in-memory NVML with the seam of :class:`~infersight.daemon.gpu.nvml.Nvml`.

For tests (every error path of the GPU collector), for ``bench/nvml_cost.py`` on machines
without a GPU (where it measures the collector's own overhead) and for demos. It is a fake,
not a simulator: readings are whatever the caller put in the :class:`FakeGpu` fields.

Conventions: a reading set to ``None`` (or a field / GPM metric id missing from its dict)
is one the GPU does not support, so the call raises :class:`NotSupported` exactly like NVML.
``lost = True`` makes every call on that GPU raise :class:`GpuLost`; ``FakeNvml.available
= False`` makes ``init`` fail like a host without the driver; ``FakeNvml.broken = True``
makes every call fail like a driver that went away. ``calls`` counts every method call.
"""
from __future__ import annotations

import collections
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

from infersight.daemon.gpu.nvml import (
    ERROR_DRIVER_NOT_LOADED,
    ERROR_GPU_IS_LOST,
    ERROR_INVALID_ARGUMENT,
    ERROR_LIBRARY_NOT_FOUND,
    ERROR_NOT_SUPPORTED,
    FI_POWER_INSTANT,
    GPM_ANY_TENSOR_UTIL,
    GPM_DRAM_BW_UTIL,
    GPM_GRAPHICS_UTIL,
    GPM_NVLINK_TOTAL_RX_PER_SEC,
    GPM_NVLINK_TOTAL_TX_PER_SEC,
    GPM_PCIE_RX_PER_SEC,
    GPM_PCIE_TX_PER_SEC,
    GPM_SM_OCCUPANCY,
    GPM_SM_UTIL,
    EventData,
    GpuLost,
    NotSupported,
    NvmlError,
    NvmlTimeout,
    NvmlUnavailable,
    ProcessUtil,
)

ALL_EVENTS = 0xFFFF


def gpm_values(sm: float = 0.0, occupancy: float = 0.0, tensor: float = 0.0, dram: float = 0.0,
               graphics: float = 0.0, pcie_tx_mib_s: float = 0.0, pcie_rx_mib_s: float = 0.0,
               nvlink_tx_mib_s: float = 0.0, nvlink_rx_mib_s: float = 0.0) -> dict[int, float]:
    """GPM metric id -> value in NVML's unit (percent, MiB/s)."""
    return {GPM_SM_UTIL: sm, GPM_SM_OCCUPANCY: occupancy, GPM_ANY_TENSOR_UTIL: tensor, GPM_DRAM_BW_UTIL: dram,
            GPM_GRAPHICS_UTIL: graphics, GPM_PCIE_TX_PER_SEC: pcie_tx_mib_s, GPM_PCIE_RX_PER_SEC: pcie_rx_mib_s,
            GPM_NVLINK_TOTAL_TX_PER_SEC: nvlink_tx_mib_s, GPM_NVLINK_TOTAL_RX_PER_SEC: nvlink_rx_mib_s}


@dataclass
class FakeMig:
    """One MIG GPU instance."""

    gpu_instance: int
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3 MIG 3g.40gb"
    memory: tuple[int, int] | None = (1 << 30, 40 << 30)
    gpm: dict[int, float] = field(default_factory=gpm_values)
    processes: list[tuple[int, int | None]] = field(default_factory=list)


@dataclass
class FakeGpu:
    """One physical GPU; defaults read like an idle H100 SXM."""

    uuid: str
    name: str | None = "NVIDIA H100 80GB HBM3"
    pci_bus_id: str | None = "00000000:19:00.0"
    bus_width_bits: int | None = 5120
    max_mem_clock_mhz: int | None = 2619
    power_limit_w: float | None = 700.0
    gpm_supported: bool | None = True
    mig_mode: bool | None = False
    instances: list[FakeMig] = field(default_factory=list)
    util: tuple[float, float] | None = (0.0, 0.0)
    power_usage_w: float | None = 118.0
    sm_clock_mhz: float | None = 1980.0
    clocks_event_reasons: int | None = 0
    memory: tuple[int, int] | None = (3 << 30, 80 << 30)
    temperature_c: float | None = 31.0
    # (field id, scope id) -> raw value in NVML's unit (power mW, counters cumulative)
    fields: dict[tuple[int, int], float] = field(default_factory=lambda: {(FI_POWER_INSTANT, 0): 118_000.0})
    gpm: dict[int, float] = field(default_factory=gpm_values)
    processes: list[tuple[int, int | None]] | None = field(default_factory=list)
    process_util: list[ProcessUtil] | None = field(default_factory=list)
    supported_events: int | None = ALL_EVENTS
    lost: bool = False


@dataclass(eq=False)
class FakeHandle:
    gpu: FakeGpu
    mig: FakeMig | None = None


@dataclass(eq=False)
class FakeGpmSample:
    owner: str | None = None          # UUID of the GPU or MIG instance it was taken on
    values: dict[int, float] | None = None


@dataclass(eq=False)
class FakeEventSet:
    registered: dict[str, int] = field(default_factory=dict)
    freed: bool = False


class FakeNvml:
    """The fake library. Thread-safe enough for the collector and its event thread."""

    def __init__(self, gpus: Sequence[FakeGpu] = (), driver: str = "580.159.04") -> None:
        self.gpus = list(gpus)
        self.driver = driver
        self.available = True
        self.broken = False
        self.initialised = 0
        self.calls: collections.Counter[str] = collections.Counter()
        self.gpm_live: set[int] = set()          # ids of allocated, not yet freed GPM samples
        self.gpm_metric_requests: list[tuple[int, ...]] = []   # metric ids of every gpm_metrics call
        self.event_sets: list[FakeEventSet] = []
        self._events: queue.Queue[EventData] = queue.Queue()
        self._lock = threading.Lock()

    # -- test controls ---------------------------------------------------------------------
    def inject_event(self, event: EventData) -> None:
        """Deliver ``event`` to the next event_wait on a set that registered its GPU."""
        self._events.put(event)

    # -- library ---------------------------------------------------------------------------
    def init(self) -> None:
        self._count("init")
        if not self.available:
            raise NvmlUnavailable(ERROR_LIBRARY_NOT_FOUND, "NVML Shared Library Not Found")
        self._check_library()
        self.initialised += 1

    def shutdown(self) -> None:
        self._count("shutdown")
        self.initialised = max(0, self.initialised - 1)

    def driver_version(self) -> str:
        self._count("driver_version")
        self._check_library()
        return self.driver

    def device_count(self) -> int:
        self._count("device_count")
        self._check_library()
        return len(self.gpus)

    def handle_by_index(self, index: int) -> FakeHandle:
        self._count("handle_by_index")
        self._check_library()
        if index >= len(self.gpus):
            raise NvmlError(ERROR_INVALID_ARGUMENT, "Invalid Argument")
        return self._usable(FakeHandle(self.gpus[index]))

    def handle_by_uuid(self, uuid: str) -> FakeHandle:
        self._count("handle_by_uuid")
        self._check_library()
        for g in self.gpus:
            if g.uuid == uuid:
                return self._usable(FakeHandle(g))
        raise GpuLost(ERROR_GPU_IS_LOST, "GPU is lost")

    # -- static facts ----------------------------------------------------------------------
    def name(self, h: FakeHandle) -> str:
        return self._get(h, "name", h.mig.name if h.mig else h.gpu.name)

    def uuid(self, h: FakeHandle) -> str:
        return self._get(h, "uuid", h.mig.uuid if h.mig else h.gpu.uuid)

    def pci_bus_id(self, h: FakeHandle) -> str:
        return self._get(h, "pci_bus_id", h.gpu.pci_bus_id)

    def memory_bus_width_bits(self, h: FakeHandle) -> int:
        return self._get(h, "memory_bus_width_bits", h.gpu.bus_width_bits)

    def max_mem_clock_mhz(self, h: FakeHandle) -> int:
        return self._get(h, "max_mem_clock_mhz", h.gpu.max_mem_clock_mhz)

    def power_limit_w(self, h: FakeHandle) -> float:
        return self._get(h, "power_limit_w", h.gpu.power_limit_w)

    def mig_mode(self, h: FakeHandle) -> bool:
        return self._get(h, "mig_mode", h.gpu.mig_mode)

    def gpm_supported(self, h: FakeHandle) -> bool:
        return self._get(h, "gpm_supported", h.gpu.gpm_supported)

    def mig_instances(self, h: FakeHandle) -> list[tuple[int, FakeHandle]]:
        self._get(h, "mig_instances", True)
        if not h.gpu.mig_mode:
            return []
        return [(m.gpu_instance, FakeHandle(h.gpu, m)) for m in h.gpu.instances]

    # -- fast readings ---------------------------------------------------------------------
    def utilization(self, h: FakeHandle) -> tuple[float, float]:
        return self._get(h, "utilization", None if h.mig else h.gpu.util)

    def field_values(self, h: FakeHandle, fields: Sequence[tuple[int, int]]) -> list[float | NvmlError]:
        self._get(h, "field_values", None if h.mig else True)
        return [h.gpu.fields[f] if f in h.gpu.fields else NotSupported(ERROR_NOT_SUPPORTED, f"field {f}")
                for f in fields]

    def power_usage_w(self, h: FakeHandle) -> float:
        return self._get(h, "power_usage_w", None if h.mig else h.gpu.power_usage_w)

    def sm_clock_mhz(self, h: FakeHandle) -> float:
        return self._get(h, "sm_clock_mhz", None if h.mig else h.gpu.sm_clock_mhz)

    def clocks_event_reasons(self, h: FakeHandle) -> int:
        return self._get(h, "clocks_event_reasons", None if h.mig else h.gpu.clocks_event_reasons)

    # -- GPM -------------------------------------------------------------------------------
    def gpm_alloc(self) -> FakeGpmSample:
        self._count("gpm_alloc")
        self._check_library()
        sample = FakeGpmSample()
        with self._lock:
            self.gpm_live.add(id(sample))
        return sample

    def gpm_free(self, sample: FakeGpmSample) -> None:
        self._count("gpm_free")
        with self._lock:
            self.gpm_live.discard(id(sample))

    def gpm_sample(self, h: FakeHandle, sample: FakeGpmSample) -> None:
        self._get(h, "gpm_sample", True if h.gpu.gpm_supported and not h.mig else None)
        sample.owner, sample.values = h.gpu.uuid, dict(h.gpu.gpm)

    def gpm_mig_sample(self, h: FakeHandle, gpu_instance: int, sample: FakeGpmSample) -> None:
        self._get(h, "gpm_mig_sample", True if h.gpu.gpm_supported else None)
        mig = next((m for m in h.gpu.instances if m.gpu_instance == gpu_instance), None)
        if mig is None:
            raise NvmlError(ERROR_INVALID_ARGUMENT, f"no GPU instance {gpu_instance}")
        sample.owner, sample.values = mig.uuid, dict(mig.gpm)

    def gpm_metrics(self, older: FakeGpmSample, newer: FakeGpmSample,
                    metric_ids: Sequence[int]) -> list[float | NvmlError]:
        self._count("gpm_metrics")
        self._check_library()
        self.gpm_metric_requests.append(tuple(metric_ids))
        if older.values is None or newer.values is None or older.owner != newer.owner:
            raise NvmlError(ERROR_INVALID_ARGUMENT, "GPM samples are empty or from different GPUs")
        return [newer.values[m] if m in newer.values else NotSupported(ERROR_NOT_SUPPORTED, f"GPM metric {m}")
                for m in metric_ids]

    # -- slow readings ---------------------------------------------------------------------
    def memory(self, h: FakeHandle) -> tuple[int, int]:
        return self._get(h, "memory", h.mig.memory if h.mig else h.gpu.memory)

    def temperature_c(self, h: FakeHandle) -> float:
        return self._get(h, "temperature_c", None if h.mig else h.gpu.temperature_c)

    def compute_processes(self, h: FakeHandle) -> list[tuple[int, int | None]]:
        return list(self._get(h, "compute_processes", h.mig.processes if h.mig else h.gpu.processes))

    def process_utilization(self, h: FakeHandle, since_us: int) -> list[ProcessUtil]:
        samples = self._get(h, "process_utilization", None if h.mig else h.gpu.process_util)
        return [s for s in samples if s.timestamp_us > since_us]

    # -- events ----------------------------------------------------------------------------
    def event_set_create(self) -> FakeEventSet:
        self._count("event_set_create")
        self._check_library()
        es = FakeEventSet()
        self.event_sets.append(es)
        return es

    def supported_event_types(self, h: FakeHandle) -> int:
        return self._get(h, "supported_event_types", h.gpu.supported_events)

    def register_events(self, h: FakeHandle, mask: int, event_set: FakeEventSet) -> None:
        self._get(h, "register_events", True)
        event_set.registered[h.gpu.uuid] = mask

    def event_wait(self, event_set: FakeEventSet, timeout_ms: int) -> EventData:
        self._count("event_wait")
        self._check_library()
        if event_set.freed:
            raise NvmlError(ERROR_INVALID_ARGUMENT, "event set was freed")
        try:
            event = self._events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise NvmlTimeout(10, "Timeout") from None
        if event.event_type & event_set.registered.get(event.uuid, 0):
            return event
        raise NvmlTimeout(10, "Timeout")  # not for this set: NVML would not have woken it

    def event_set_free(self, event_set: FakeEventSet) -> None:
        self._count("event_set_free")
        event_set.freed = True

    # -- plumbing --------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1

    def _check_library(self) -> None:
        if self.broken:
            raise NvmlUnavailable(ERROR_DRIVER_NOT_LOADED, "Driver Not Loaded")

    def _usable(self, h: FakeHandle) -> FakeHandle:
        if h.gpu.lost:
            raise GpuLost(ERROR_GPU_IS_LOST, "GPU is lost")
        return h

    def _get(self, h: FakeHandle, name: str, value: Any) -> Any:
        self._count(name)
        self._check_library()
        self._usable(h)
        if value is None:
            raise NotSupported(ERROR_NOT_SUPPORTED, f"{name}: Not Supported")
        return value
