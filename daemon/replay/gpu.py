"""A recording's ``gpu.jsonl`` (layout of tests/fixtures/h100-scenario/) as GPU records.

Pure: lines in, records out, no I/O. The first line is ``{"info": {...}}``; every other line
is one sample ``{"t", "util_gpu", ..., "pcie_tx_mib_s", "mem_used_mib", "gpu_pids", ...}``
written every ``interval_s`` by the recorder's sampler. Field names map onto GPU_SIGNALS
(MiB and MiB/s become bytes and bytes/s); keys the store has no column for (``proc_cpu_pct``,
``sample_cost_ms``) are not GPU signals and are left out. ``gpu_pids`` (with
``gpu_proc_mem_mib`` and ``gpu_proc_sm`` where recorded) become process sightings. A line that cannot be read is
reported in ``errors`` with its line number and skipped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from infersight.daemon.gpu.device import MIB, peak_dram_bw_bytes_s
from infersight.storage.model import GpuInfo, GpuProcessSample, GpuSample

SOURCE = "replay"

# recording key -> (signal, factor to the signal's unit)
FIELD_MAP: dict[str, tuple[str, float]] = {
    "util_gpu": ("util_gpu", 1.0), "util_mem": ("util_mem", 1.0),
    "sm_util": ("sm_util", 1.0), "sm_occupancy": ("sm_occupancy", 1.0), "tensor_util": ("tensor_util", 1.0),
    "dram_bw_util": ("dram_bw_util", 1.0), "graphics_util": ("graphics_util", 1.0),
    "pcie_tx_mib_s": ("pcie_tx_bytes_s", MIB), "pcie_rx_mib_s": ("pcie_rx_bytes_s", MIB),
    "nvlink_tx_mib_s": ("nvlink_tx_bytes_s", MIB), "nvlink_rx_mib_s": ("nvlink_rx_bytes_s", MIB),
    "power_w": ("power_w", 1.0), "sm_clock_mhz": ("sm_clock_mhz", 1.0),
    "clocks_event_reasons": ("clocks_event_reasons", 1.0),
    "mem_used_mib": ("mem_used_bytes", MIB), "mem_total_mib": ("mem_total_bytes", MIB),
    "temperature_c": ("temperature_c", 1.0), "energy_j": ("energy_j", 1.0),
}
_INTEGER_SIGNALS = {"clocks_event_reasons", "mem_used_bytes", "mem_total_bytes"}


@dataclass(slots=True)
class GpuRecording:
    """What one gpu.jsonl holds: static facts, samples, and the PIDs NVML saw per sample."""

    info: GpuInfo | None = None
    interval_s: float | None = None
    samples: list[GpuSample] = field(default_factory=list)
    processes: list[GpuProcessSample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def parse_gpu_jsonl(lines: Iterable[str | bytes], gpu: int = 0) -> GpuRecording:
    """Read a recording's gpu.jsonl lines as GPU ``gpu``'s info, samples and process sightings."""
    out = GpuRecording()
    for number, raw in enumerate(lines, 1):
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            if "info" in record:
                out.info, out.interval_s = info_from(record["info"], gpu)
            else:
                sample, procs = sample_from(record, gpu)
                out.samples.append(sample)
                out.processes.extend(procs)
        except (ValueError, TypeError, KeyError) as exc:
            out.errors.append(f"line {number}: {exc}")
    return out


def info_from(info: dict[str, Any], gpu: int) -> tuple[GpuInfo, float | None]:
    """GpuInfo from the recording's ``info`` object, and its sampling interval (seconds)."""
    width, clock = info.get("mem_bus_width_bits"), info.get("max_mem_clock_mhz")
    return GpuInfo(
        gpu=gpu, uuid=str(info.get("uuid", "")), name=str(info.get("gpu", info.get("name", ""))),
        pci_bus_id=str(info.get("pci_bus_id", "")), driver=str(info.get("driver", "")),
        mem_bus_width_bits=width, max_mem_clock_mhz=clock, peak_dram_bw_bytes_s=peak_dram_bw_bytes_s(width, clock),
        power_limit_w=info.get("power_limit_w"), mig_mode=info.get("mig_mode"),
        gpm_supported=info.get("gpm_supported")), info.get("interval_s")


def sample_from(record: dict[str, Any], gpu: int) -> tuple[GpuSample, list[GpuProcessSample]]:
    """One sample line as a GpuSample (only the signals it has) and its ``gpu_pids`` sightings."""
    t = float(record["t"])
    values: dict[str, float | None] = {}
    for key, (signal, factor) in FIELD_MAP.items():
        v = record.get(key)
        if v is None:
            continue
        v = float(v) * factor
        values[signal] = int(round(v)) if signal in _INTEGER_SIGNALS else v
    # ``gpu_proc_sm`` (newer recordings): NVML's per-process SM share, % (pid -> value)
    shares = {int(pid): float(v) for pid, v in (record.get("gpu_proc_sm") or {}).items()}
    memory = {int(pid): int(float(v) * MIB) for pid, v in (record.get("gpu_proc_mem_mib") or {}).items()}
    pids = list(dict.fromkeys([*(int(p) for p in record.get("gpu_pids") or ()), *shares]))
    procs = [GpuProcessSample(t=t, gpu=gpu, pid=pid, used_memory_bytes=memory.get(pid), sm_util=shares.get(pid))
             for pid in pids]
    return GpuSample(t=t, gpu=gpu, values=values, source=SOURCE), procs
