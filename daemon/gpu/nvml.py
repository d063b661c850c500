"""A thin, blocking seam over pynvml (nvidia-ml-py) that the GPU collector calls.

Every method is one or two NVML calls and blocks: call them through ``asyncio.to_thread``.
Errors come out as :class:`NvmlError` subclasses, never as pynvml's own classes, so the
collector and its tests (which swap in :class:`~infersight.daemon.gpu.fake_nvml.FakeNvml`) handle
one vocabulary:

- :class:`NvmlUnavailable`: the library, the driver or NVML itself is not usable (no data
  on this host, or re-initialise);
- :class:`GpuLost`: this GPU fell off the bus or needs a reset (mark it, back off, re-open);
- :class:`NotSupported` / :class:`NoPermission`: this query will never work here (store
  NULL, stop asking);
- anything else (:class:`NvmlTimeout`, :class:`NotFound`, plain :class:`NvmlError`): this
  call failed this time.

Handles, GPM samples and event sets are opaque objects owned by the seam. Units on the way
out: bytes, watts, MHz, degrees C, percent, microseconds for NVML timestamps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

# NVML return codes (nvml.h). Kept here so the seam's callers never import pynvml.
ERROR_UNINITIALIZED = 1
ERROR_INVALID_ARGUMENT = 2
ERROR_NOT_SUPPORTED = 3
ERROR_NO_PERMISSION = 4
ERROR_NOT_FOUND = 6
ERROR_DRIVER_NOT_LOADED = 9
ERROR_TIMEOUT = 10
ERROR_LIBRARY_NOT_FOUND = 12
ERROR_FUNCTION_NOT_FOUND = 13
ERROR_GPU_IS_LOST = 15
ERROR_RESET_REQUIRED = 16
ERROR_LIB_RM_VERSION_MISMATCH = 18
ERROR_GPU_NOT_FOUND = 28

# GPM metric ids (nvmlGpmMetricId_t): percentages 0-100, *_PER_SEC in MiB/s.
GPM_GRAPHICS_UTIL = 1
GPM_SM_UTIL = 2
GPM_SM_OCCUPANCY = 3
GPM_ANY_TENSOR_UTIL = 5
GPM_DRAM_BW_UTIL = 10
GPM_PCIE_TX_PER_SEC = 20
GPM_PCIE_RX_PER_SEC = 21
GPM_NVLINK_TOTAL_RX_PER_SEC = 60
GPM_NVLINK_TOTAL_TX_PER_SEC = 61

# Field ids for nvmlDeviceGetFieldValues. The counters are cumulative since driver load.
FI_ECC_DBE_VOL_TOTAL = 4             # uncorrected (double-bit) ECC errors since driver load
FI_RETIRED_SBE = 29                  # pages retired for single-bit errors (before Ampere)
FI_RETIRED_DBE = 30                  # pages retired for double-bit errors (before Ampere)
FI_TOTAL_ENERGY_CONSUMPTION = 83     # mJ since driver load
FI_NVLINK_THROUGHPUT_DATA_TX = 138   # KiB, per link (scopeId) or all links (ALL_LINKS)
FI_NVLINK_THROUGHPUT_DATA_RX = 139
FI_REMAPPED_COR = 142                # rows remapped for correctable errors (Ampere and newer)
FI_REMAPPED_UNC = 143                # rows remapped for uncorrectable errors
FI_POWER_INSTANT = 186               # mW, instantaneous (nvmlDeviceGetPowerUsage averages 1 s)
FI_PCIE_COUNT_TX_BYTES = 197         # bytes
FI_PCIE_COUNT_RX_BYTES = 198
ALL_LINKS = 0xFFFFFFFF               # scopeId that sums an NVLink counter over every link

# Event type bits (nvmlEventType*).
EVENT_SINGLE_BIT_ECC = 0x1
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_XID = 0x8
EVENT_MIG_CONFIG_CHANGE = 0x100
EVENT_SBE_STORM = 0x200
EVENT_DRAM_RETIREMENT = 0x400
EVENT_DRAM_RETIREMENT_FAILURE = 0x800
EVENT_NON_FATAL_POISON = 0x1000
EVENT_FATAL_POISON = 0x2000
EVENT_GPU_UNAVAILABLE = 0x4000
EVENT_GPU_RECOVERY_ACTION = 0x8000


class NvmlError(Exception):
    """An NVML call failed; ``code`` is NVML's return code (-1 when it did not come from NVML)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class NvmlUnavailable(NvmlError):
    """NVML cannot be used at all: no library, no driver, or not initialised."""


class GpuLost(NvmlError):
    """The GPU is gone or needs a reset; its handle is no good until it is re-opened."""


class NotSupported(NvmlError):
    """This GPU, driver or binding does not offer the query."""


class NoPermission(NvmlError):
    """The query needs privileges the agent does not have."""


class NvmlTimeout(NvmlError):
    """A wait ran out (nvmlEventSetWait) or the driver timed out."""


class NotFound(NvmlError):
    """The queried object does not exist (an empty MIG slot, no samples since a timestamp)."""


_CLASSES: dict[int, type[NvmlError]] = {
    ERROR_UNINITIALIZED: NvmlUnavailable, ERROR_DRIVER_NOT_LOADED: NvmlUnavailable,
    ERROR_LIBRARY_NOT_FOUND: NvmlUnavailable, ERROR_LIB_RM_VERSION_MISMATCH: NvmlUnavailable,
    ERROR_GPU_IS_LOST: GpuLost, ERROR_RESET_REQUIRED: GpuLost, ERROR_GPU_NOT_FOUND: GpuLost,
    ERROR_NOT_SUPPORTED: NotSupported, ERROR_FUNCTION_NOT_FOUND: NotSupported,
    ERROR_NO_PERMISSION: NoPermission, ERROR_TIMEOUT: NvmlTimeout, ERROR_NOT_FOUND: NotFound,
}


def error_for(code: int, message: str) -> NvmlError:
    """The seam's exception for an NVML return code."""
    return _CLASSES.get(code, NvmlError)(code, message)


@dataclass(frozen=True, slots=True)
class ProcessUtil:
    """One nvmlProcessUtilizationSample_t: ``timestamp_us`` is NVML's CPU timestamp."""

    pid: int
    timestamp_us: int
    sm_util: float
    mem_util: float


@dataclass(frozen=True, slots=True)
class EventData:
    """One NVML event. ``gpu_instance``/``compute_instance`` are None outside MIG."""

    uuid: str
    event_type: int
    data: int
    gpu_instance: int | None
    compute_instance: int | None


_VALUE_FIELDS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")  # by nvmlValueType_t
_INVALID_INSTANCE = 0xFFFFFFFF


class Nvml:
    """The real NVML. Construction is free; :meth:`init` loads the library."""

    def __init__(self) -> None:
        self._nv: Any = None

    # -- library ---------------------------------------------------------------------------
    def init(self) -> None:
        """Load and initialise NVML (reference counted by NVML). Raises NvmlUnavailable."""
        try:
            import pynvml
        except ImportError as exc:
            raise NvmlUnavailable(-1, f"nvidia-ml-py is not installed ({exc})") from None
        self._nv = pynvml
        self._call("nvmlInit")

    def shutdown(self) -> None:
        self._call("nvmlShutdown")

    def driver_version(self) -> str:
        return _text(self._call("nvmlSystemGetDriverVersion"))

    def device_count(self) -> int:
        return int(self._call("nvmlDeviceGetCount"))

    def handle_by_index(self, index: int) -> Any:
        return self._call("nvmlDeviceGetHandleByIndex", index)

    def handle_by_uuid(self, uuid: str) -> Any:
        return self._call("nvmlDeviceGetHandleByUUID", uuid)

    # -- static facts ----------------------------------------------------------------------
    def name(self, h: Any) -> str:
        return _text(self._call("nvmlDeviceGetName", h))

    def uuid(self, h: Any) -> str:
        return _text(self._call("nvmlDeviceGetUUID", h))

    def pci_bus_id(self, h: Any) -> str:
        return _text(self._call("nvmlDeviceGetPciInfo", h).busId)

    def memory_bus_width_bits(self, h: Any) -> int:
        return int(self._call("nvmlDeviceGetMemoryBusWidth", h))

    def max_mem_clock_mhz(self, h: Any) -> int:
        return int(self._call("nvmlDeviceGetMaxClockInfo", h, self._nv.NVML_CLOCK_MEM))

    def power_limit_w(self, h: Any) -> float:
        return self._call("nvmlDeviceGetEnforcedPowerLimit", h) / 1000.0

    def mig_mode(self, h: Any) -> bool:
        current, _pending = self._call("nvmlDeviceGetMigMode", h)
        return current == 1

    def gpm_supported(self, h: Any) -> bool:
        return bool(self._call("nvmlGpmQueryDeviceSupport", h).isSupportedDevice)

    def mig_instances(self, h: Any) -> list[tuple[int, Any]]:
        """(GPU instance id, MIG device handle) for every populated MIG slot of ``h``."""
        out = []
        for i in range(int(self._call("nvmlDeviceGetMaxMigDeviceCount", h))):
            try:
                mig = self._call("nvmlDeviceGetMigDeviceHandleByIndex", h, i)
            except NvmlError as exc:
                if exc.code in (ERROR_NOT_FOUND, ERROR_INVALID_ARGUMENT):
                    continue  # an empty slot
                raise
            out.append((int(self._call("nvmlDeviceGetGpuInstanceId", mig)), mig))
        return out

    # -- fast readings ---------------------------------------------------------------------
    def utilization(self, h: Any) -> tuple[float, float]:
        """NVML utilization rates (gpu, memory) in percent over the driver's sample period."""
        u = self._call("nvmlDeviceGetUtilizationRates", h)
        return float(u.gpu), float(u.memory)

    def field_values(self, h: Any, fields: Sequence[tuple[int, int]]) -> list[float | NvmlError]:
        """One nvmlDeviceGetFieldValues call for (field id, scope id) pairs.

        Each entry is the raw value (NVML's unit for that field) or the per-field error.
        """
        values = self._call("nvmlDeviceGetFieldValues", h, list(fields))
        out: list[float | NvmlError] = []
        for v in values:
            if v.nvmlReturn != 0:
                out.append(error_for(v.nvmlReturn, f"field {v.fieldId}: {self._error_text(v.nvmlReturn)}"))
            else:
                out.append(float(getattr(v.value, _VALUE_FIELDS[v.valueType])))
        return out

    def power_usage_w(self, h: Any) -> float:
        return self._call("nvmlDeviceGetPowerUsage", h) / 1000.0

    def sm_clock_mhz(self, h: Any) -> float:
        return float(self._call("nvmlDeviceGetClockInfo", h, self._nv.NVML_CLOCK_SM))

    def clocks_event_reasons(self, h: Any) -> int:
        """Bitmask of nvmlClocksEventReason* (older bindings call it throttle reasons)."""
        if hasattr(self._nv, "nvmlDeviceGetCurrentClocksEventReasons"):
            return int(self._call("nvmlDeviceGetCurrentClocksEventReasons", h))
        return int(self._call("nvmlDeviceGetCurrentClocksThrottleReasons", h))

    # -- GPM -------------------------------------------------------------------------------
    def gpm_alloc(self) -> Any:
        return self._call("nvmlGpmSampleAlloc")

    def gpm_free(self, sample: Any) -> None:
        self._call("nvmlGpmSampleFree", sample)

    def gpm_sample(self, h: Any, sample: Any) -> None:
        self._call("nvmlGpmSampleGet", h, sample)

    def gpm_mig_sample(self, h: Any, gpu_instance: int, sample: Any) -> None:
        """A GPM sample of one MIG GPU instance, taken through the parent's handle ``h``."""
        self._call("nvmlGpmMigSampleGet", h, gpu_instance, sample)

    def gpm_metrics(self, older: Any, newer: Any, metric_ids: Sequence[int]) -> list[float | NvmlError]:
        """GPM metrics between two samples (>= 100 ms apart): value or per-metric error."""
        nv = self._nv
        req = nv.c_nvmlGpmMetricsGet_t()
        req.version = nv.NVML_GPM_METRICS_GET_VERSION
        req.numMetrics = len(metric_ids)
        req.sample1, req.sample2 = older, newer
        for i, mid in enumerate(metric_ids):
            req.metrics[i].metricId = mid
        self._call("nvmlGpmMetricsGet", req)
        out: list[float | NvmlError] = []
        for i, mid in enumerate(metric_ids):
            m = req.metrics[i]
            if m.nvmlReturn != 0:
                out.append(error_for(m.nvmlReturn, f"GPM metric {mid}: {self._error_text(m.nvmlReturn)}"))
            else:
                out.append(float(m.value))
        return out

    # -- slow readings ---------------------------------------------------------------------
    def memory(self, h: Any) -> tuple[int, int]:
        """(used, total) framebuffer bytes."""
        m = self._call("nvmlDeviceGetMemoryInfo", h)
        return int(m.used), int(m.total)

    def temperature_c(self, h: Any) -> float:
        return float(self._call("nvmlDeviceGetTemperature", h, self._nv.NVML_TEMPERATURE_GPU))

    def compute_processes(self, h: Any) -> list[tuple[int, int | None]]:
        """(pid, used GPU memory bytes or None) of every process with a compute context."""
        try:
            procs = self._call("nvmlDeviceGetComputeRunningProcesses", h)
        except NotSupported:
            procs = self._call("nvmlDeviceGetComputeRunningProcesses_v2", h)  # drivers before v3
        return [(int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory)) for p in procs]

    def process_utilization(self, h: Any, since_us: int) -> list[ProcessUtil]:
        """Per-process SM/memory utilization samples newer than ``since_us`` (may be empty)."""
        try:
            samples = self._call("nvmlDeviceGetProcessUtilization", h, since_us)
        except NotFound:
            return []  # NVML's way of saying "no samples since that timestamp"
        return [ProcessUtil(int(s.pid), int(s.timeStamp), float(s.smUtil), float(s.memUtil)) for s in samples]

    # -- events ----------------------------------------------------------------------------
    def event_set_create(self) -> Any:
        return self._call("nvmlEventSetCreate")

    def supported_event_types(self, h: Any) -> int:
        return int(self._call("nvmlDeviceGetSupportedEventTypes", h))

    def register_events(self, h: Any, mask: int, event_set: Any) -> None:
        self._call("nvmlDeviceRegisterEvents", h, mask, event_set)

    def event_wait(self, event_set: Any, timeout_ms: int) -> EventData:
        """Block up to ``timeout_ms`` for the next event; raises NvmlTimeout when none came."""
        d = self._call("nvmlEventSetWait_v2", event_set, timeout_ms)
        gi = None if d.gpuInstanceId == _INVALID_INSTANCE else int(d.gpuInstanceId)
        ci = None if d.computeInstanceId == _INVALID_INSTANCE else int(d.computeInstanceId)
        return EventData(self.uuid(d.device), int(d.eventType), int(d.eventData), gi, ci)

    def event_set_free(self, event_set: Any) -> None:
        self._call("nvmlEventSetFree", event_set)

    # -- plumbing --------------------------------------------------------------------------
    def _call(self, fn_name: str, *args: Any) -> Any:
        nv = self._nv
        if nv is None:
            raise NvmlUnavailable(ERROR_UNINITIALIZED, "NVML is not initialised")
        fn = getattr(nv, fn_name, None)
        if fn is None:
            raise NotSupported(ERROR_FUNCTION_NOT_FOUND, f"{fn_name} is missing from this nvidia-ml-py")
        try:
            return fn(*args)
        except nv.NVMLError as exc:
            raise error_for(exc.value, f"{fn_name}: {exc}") from None
        except getattr(nv, "NVMLLibraryMismatchError", ()) as exc:  # an unversioned call the driver lacks
            raise NotSupported(ERROR_FUNCTION_NOT_FOUND, f"{fn_name}: {exc}") from None

    def _error_text(self, code: int) -> str:
        try:
            return _text(self._nv.nvmlErrorString(code))
        except Exception:  # an unknown code must not turn a per-field error into a crash
            return f"NVML error {code}"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
