"""The neutral data model that collectors produce and the storage layer consumes.

Every collector returns a :class:`Batch`: plain records (no I/O, no SQL) plus the
collector's own errors. The storage writer interns and appends them in bulk. Times are Unix
seconds (float) unless a field says otherwise; sizes are bytes; percentages are 0-100.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Analysis classes (DESIGN.md contract).
CLASSES = ("idle", "compute_bound", "memory_bound", "latency_bound", "host_bound", "launch_bound", "stall",
           "starting", "stopping", "unknown")
# The classes in which the GPU waits on something other than its own work (a CPU-GPU gap).
GAP_CLASSES = ("host_bound", "launch_bound", "stall")

# Every GPU signal the store keeps, name -> unit. The gpu_samples table has one column per
# name; a collector leaves a signal out (or None) when the GPU does not support it.
GPU_SIGNALS: dict[str, str] = {
    "util_gpu": "percent",          # NVML utilization.gpu: "a kernel ran" share, not SM work
    "util_mem": "percent",          # NVML utilization.memory
    "sm_util": "percent",           # GPM SM_UTIL or DCGM SM_ACTIVE x 100
    "sm_occupancy": "percent",      # GPM SM_OCCUPANCY or DCGM SM_OCCUPANCY x 100
    "tensor_util": "percent",       # GPM ANY_TENSOR_UTIL or DCGM PIPE_TENSOR_ACTIVE x 100
    "dram_bw_util": "percent",      # GPM DRAM_BW_UTIL or DCGM DRAM_ACTIVE x 100
    "graphics_util": "percent",     # GPM GRAPHICS_UTIL
    "pcie_tx_bytes_s": "bytes_per_second",
    "pcie_rx_bytes_s": "bytes_per_second",
    "nvlink_tx_bytes_s": "bytes_per_second",
    "nvlink_rx_bytes_s": "bytes_per_second",
    "power_w": "watts",
    "sm_clock_mhz": "megahertz",
    "clocks_event_reasons": "bitmask",
    "mem_used_bytes": "bytes",
    "mem_total_bytes": "bytes",
    "temperature_c": "celsius",
    "energy_j": "joules",
    "ecc_errors_uncorrected": "count",
    "retired_pages": "count",
}


@dataclass(frozen=True, slots=True)
class Frame:
    """One Python frame as py-spy reports it. ``line`` is 0 when unknown."""

    function: str
    file: str
    line: int = 0
    module: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """A profiled process. Identity is (host, pid, start_time): a reused PID is a new target."""

    host: str
    pid: int
    start_time: float
    cmdline: str
    role: str = "unknown"          # api_server, engine_core, worker, engine, other_gpu_process, ...
    gpus: tuple[int, ...] = ()     # GPU indices the process holds a context on
    exited_at: float | None = None

    @property
    def key(self) -> tuple[str, int, float]:
        return (self.host, self.pid, self.start_time)


@dataclass(slots=True)
class StackSample:
    """``count`` py-spy samples of one thread with one stack inside one wall-clock bucket.

    ``bucket`` is the Unix second the samples fall in (floor of their time). ``frames``
    runs root first, leaf last. ``active`` is False for samples py-spy marked idle.
    """

    bucket: int
    pid: int
    start_time: float
    tid: int
    thread_name: str
    frames: tuple[Frame, ...]
    active: bool
    count: int


@dataclass(slots=True)
class SamplingStat:
    """Per target and bucket: samples taken and errors py-spy reported (for coverage/health)."""

    bucket: int
    pid: int
    start_time: float
    samples: int
    errors: int


@dataclass(slots=True)
class HostSample:
    t: float
    cpu_percent: float          # whole host, 0-100 x cores collapsed to 0-100
    cpu_count: int
    mem_used_bytes: int
    mem_total_bytes: int
    load1: float
    load5: float
    load15: float


@dataclass(slots=True)
class ProcessSample:
    t: float
    pid: int
    start_time: float
    cpu_percent: float          # percent of one core (can exceed 100)
    rss_bytes: int
    threads: int
    ctx_voluntary: int          # cumulative counters as the kernel reports them
    ctx_involuntary: int


@dataclass(slots=True)
class GpuSample:
    """Signals of one GPU at time ``t``; keys of ``values`` are names in GPU_SIGNALS."""

    t: float
    gpu: int
    values: dict[str, float | None]
    source: str = "nvml"        # nvml, gpm, dcgm, replay


@dataclass(slots=True)
class GpuInfo:
    """Static facts of one GPU, collected once at start (and after re-initialisation)."""

    gpu: int
    uuid: str
    name: str
    pci_bus_id: str = ""
    driver: str = ""
    mem_bus_width_bits: int | None = None
    max_mem_clock_mhz: int | None = None
    peak_dram_bw_bytes_s: float | None = None
    power_limit_w: float | None = None
    mig_mode: bool | None = None
    gpm_supported: bool | None = None
    parent_gpu: int | None = None       # set for MIG instances


@dataclass(slots=True)
class GpuProcessSample:
    """A process seen on a GPU by NVML at time ``t``."""

    t: float
    gpu: int
    pid: int
    used_memory_bytes: int | None
    sm_util: float | None = None        # percent, nvmlDeviceGetProcessUtilization
    mem_util: float | None = None


@dataclass(slots=True)
class EngineSample:
    """A normalized engine signal (see DESIGN.md's mapping), e.g. generation_tokens_per_s."""

    t: float
    endpoint: str
    engine: str                 # vllm, sglang, tgi, trtllm, triton, dynamo
    model: str
    signal: str
    value: float


@dataclass(slots=True)
class HistogramDelta:
    """Bucket count deltas of one engine histogram between two scrapes (cumulative by le)."""

    t: float
    endpoint: str
    engine: str
    model: str
    signal: str                 # ttft_seconds, itl_seconds, e2e_seconds
    bounds: tuple[float, ...]   # upper bounds, ascending, last is +inf
    counts: tuple[float, ...]   # cumulative count deltas per bound
    interval_s: float


@dataclass(slots=True)
class RawSeriesSample:
    """One raw series value from an endpoint, kept for later questions."""

    t: float
    endpoint: str
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(slots=True)
class Event:
    """A finding. ``id`` is stable across updates of the same ongoing finding."""

    id: str
    kind: str                   # cpu_gpu_gap, util_throughput_mismatch, saturation, regression, xid, ...
    start: float
    end: float
    host: str
    gpu: int | None
    severity: str = "warning"   # info, warning, critical
    klass: str | None = None    # the dominant bottleneck class, where one applies
    summary: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    top_frames: list[dict[str, Any]] = field(default_factory=list)
    open: bool = False          # still ongoing when written


@dataclass(slots=True)
class Window:
    """The analysis verdict for one GPU over [start, end)."""

    start: float
    end: float
    gpu: int
    klass: str
    features: dict[str, float | None] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """What one collector run produced. Empty lists are the normal case.

    ``errors`` are this run's problems that did not stop it (a field unsupported, one target
    failed). ``no_data`` says why there is legitimately nothing (no GPU on this host); it is
    not a failure. A run that raised is recorded by the runner, not here.
    """

    collector: str
    t: float
    errors: list[str] = field(default_factory=list)
    no_data: str | None = None
    targets: list[Target] = field(default_factory=list)
    host_samples: list[HostSample] = field(default_factory=list)
    process_samples: list[ProcessSample] = field(default_factory=list)
    stack_samples: list[StackSample] = field(default_factory=list)
    sampling_stats: list[SamplingStat] = field(default_factory=list)
    gpu_info: list[GpuInfo] = field(default_factory=list)
    gpu_samples: list[GpuSample] = field(default_factory=list)
    gpu_processes: list[GpuProcessSample] = field(default_factory=list)
    engine_samples: list[EngineSample] = field(default_factory=list)
    histogram_deltas: list[HistogramDelta] = field(default_factory=list)
    raw_series: list[RawSeriesSample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)

    def row_count(self) -> int:
        """Records carried (for queue accounting and the samples-stored counter)."""
        return sum(
            len(getattr(self, name))
            for name in (
                "targets", "host_samples", "process_samples", "stack_samples", "sampling_stats",
                "gpu_info", "gpu_samples", "gpu_processes", "engine_samples", "histogram_deltas",
                "raw_series", "events", "windows",
            )
        )
