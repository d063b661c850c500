"""Peak tensor throughput and DRAM bandwidth per GPU model: the denominators of MFU and MBU.

:func:`peaks_for` takes the name NVML reports (``nvmlDeviceGetName``, stored in ``gpus.name``)
and returns that model's :class:`Peaks`, or None for a model not in the table: an unknown
GPU gets no MFU rather than a guessed one. Names match exactly (case and repeated spaces
aside): "NVIDIA H200" and "NVIDIA H200 NVL" are different boards with different peaks, and a
MIG slice ("NVIDIA H100 80GB HBM3 MIG 1g.10gb") has a fraction of its parent's peaks that
depends on the profile, so it is not matched.

Two pairs of figures per model, both per GPU:

- ``tensor_flops`` / ``dram_bytes_per_s``: the vendor's datasheet peaks, bf16 dense (without
  the 2:4 sparsity that doubles the headline figure) and DRAM bandwidth. These are the
  conventional MFU and MBU denominators, what published MFU figures divide by.
- ``attainable_tensor_flops`` / ``attainable_dram_bytes_per_s``: what was measured on that
  model (DESIGN.md, "Facts measured"), None where nobody measured it. The measured copy
  bandwidth counts bytes read plus bytes written, as vLLM's read and write byte counters do.
  An engine near these is at the roof in practice, whatever the datasheet says.

Every figure carries where it comes from in ``source``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

TERA = 1e12


@dataclass(frozen=True, slots=True)
class Peaks:
    """One GPU model's peaks. FLOP/s and bytes/s per GPU; attainable ones None when unmeasured."""

    model: str                      # the NVML name it was matched on
    tensor_flops: float             # bf16 dense tensor-core FLOP/s, datasheet
    dram_bytes_per_s: float         # DRAM bandwidth, bytes/s, datasheet
    source: str                     # where the datasheet figures (and measured ones) come from
    attainable_tensor_flops: float | None = None
    attainable_dram_bytes_per_s: float | None = None


_H100_DATASHEET = "NVIDIA H100 Tensor Core GPU datasheet (BF16 Tensor Core, half of the with-sparsity figure)"
_H200_DATASHEET = "NVIDIA H200 Tensor Core GPU datasheet (BF16 Tensor Core, half of the with-sparsity figure)"
_A100_DATASHEET = "NVIDIA A100 Tensor Core GPU datasheet (BF16 Tensor Core, dense)"
_H200_MEASURED = ("measured on an H200 (driver 580.159.04, DESIGN.md): 8192^3 bf16 GEMM ~790 TFLOP/s, "
                  "device-to-device copy ~4.3 TB/s read + write")

_TABLE: tuple[Peaks, ...] = (
    # H100 SXM5 80 GB (NVML: "NVIDIA H100 80GB HBM3"): 1,979 TFLOPS BF16 with sparsity, 3.35 TB/s
    Peaks("NVIDIA H100 80GB HBM3", 989.5 * TERA, 3.35e12, _H100_DATASHEET + ", H100 SXM column"),
    # H100 PCIe 80 GB: 1,513 TFLOPS BF16 with sparsity, 2.0 TB/s HBM2e
    Peaks("NVIDIA H100 PCIe", 756.5 * TERA, 2.0e12, _H100_DATASHEET + ", H100 PCIe column"),
    # H100 NVL 94 GB: 1,671 TFLOPS BF16 with sparsity, 3.9 TB/s
    Peaks("NVIDIA H100 NVL", 835.5 * TERA, 3.9e12, _H100_DATASHEET + ", H100 NVL column"),
    # H200 SXM 141 GB: 1,979 TFLOPS BF16 with sparsity, 4.8 TB/s HBM3e
    Peaks("NVIDIA H200", 989.5 * TERA, 4.8e12, _H200_DATASHEET + ", H200 SXM column; " + _H200_MEASURED,
          attainable_tensor_flops=790 * TERA, attainable_dram_bytes_per_s=4.3e12),
    # H200 NVL 141 GB: 1,671 TFLOPS BF16 with sparsity, 4.8 TB/s
    Peaks("NVIDIA H200 NVL", 835.5 * TERA, 4.8e12, _H200_DATASHEET + ", H200 NVL column"),
    # A100: 312 TFLOPS BF16 dense on every form factor; bandwidth per memory size and form factor
    Peaks("NVIDIA A100-SXM4-80GB", 312 * TERA, 2.039e12, _A100_DATASHEET + ", A100 80GB SXM column"),
    Peaks("NVIDIA A100-SXM4-40GB", 312 * TERA, 1.555e12, _A100_DATASHEET + ", A100 40GB SXM column"),
    Peaks("NVIDIA A100 80GB PCIe", 312 * TERA, 1.935e12, _A100_DATASHEET + ", A100 80GB PCIe column"),
    Peaks("NVIDIA A100-PCIE-40GB", 312 * TERA, 1.555e12, _A100_DATASHEET + ", A100 40GB PCIe column"),
)


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


_BY_NAME = {_key(p.model): p for p in _TABLE}


def peaks_for(name: str | None) -> Peaks | None:
    """The peaks of the GPU model NVML calls ``name``; None when unknown (or no name)."""
    if not name:
        return None
    return _BY_NAME.get(_key(name))


def known_models() -> tuple[str, ...]:
    """The NVML names the table knows, in table order."""
    return tuple(p.model for p in _TABLE)


def mfu(flops_per_s: float | None, peaks: Peaks | None) -> float | None:
    """Model FLOPs utilization (0-1, can exceed 1 when the engine over-estimates): achieved
    FLOP/s per GPU over the datasheet bf16 dense peak. None without both."""
    if flops_per_s is None or peaks is None or not math.isfinite(flops_per_s):
        return None
    return flops_per_s / peaks.tensor_flops


def mbu(bytes_per_s: float | None, peaks: Peaks | None, nvml_peak_bytes_per_s: float | None = None) -> float | None:
    """Memory bandwidth utilization (0-1): bytes read plus written per second per GPU over the
    peak DRAM bandwidth -- the table's datasheet figure, else the one NVML derives from the bus
    width and the memory clock (``gpus.peak_dram_bw_bytes_s``: a property of the board, so an
    unknown model still gets an MBU). None without a figure or a peak."""
    peak = peaks.dram_bytes_per_s if peaks is not None else nvml_peak_bytes_per_s
    if bytes_per_s is None or not peak or not math.isfinite(bytes_per_s):
        return None
    return bytes_per_s / peak
