"""MFU and MBU of one second: from the engine's own estimates of its work, or from the
configured model weight bytes and the token rate.

vLLM >= 0.24 (``vllm:estimated_flops_per_gpu_total``, ``..._read_bytes_...``,
``..._write_bytes_...``) and SGLang with ``--enable-mfu-metrics`` count the FLOPs and bytes
their model needs per step, per GPU; their rates over a second are the numerators. The
denominators come from daemon/gpu/peaks.py (the GPU model's datasheet peaks; for bandwidth,
NVML's bus-width figure when the model is not in the table). These are the engine's model of
its work, not hardware counters: next to GPM's ``dram_bw_util`` they show how much of the
traffic the model itself explains.
"""
from __future__ import annotations

from infersight.daemon.analysis.classify import Second
from infersight.daemon.gpu.peaks import Peaks, mbu, mfu


def engine_roof_features(s: Second, peaks: Peaks | None, nvml_peak_bw: float | None) -> dict[str, float]:
    """``mfu`` and ``mbu`` (0-1) where the engine exports the numerator and a peak is known.

    Only keys with a value are returned, so a ``mbu`` from the configured model weight bytes
    (:func:`mbu_features`) stays where the engine exports no byte counts.
    """
    out: dict[str, float] = {}
    util = mfu(s.flops_per_gpu_s, peaks)
    if util is not None:
        out["mfu"] = round(util, 4)
    util = mbu(s.dram_bytes_per_gpu_s, peaks, nvml_peak_bw)
    if util is not None:
        out["mbu"] = round(util, 4)
    return out


def mbu_features(s: Second, peak_bw_bytes_s: float | None, weight_bytes: float) -> dict[str, float | None]:
    """Achieved DRAM bandwidth and, with known weights, model bandwidth utilization (0-1).

    MBU = weight bytes read per decode step x decode steps per second / peak bandwidth, with
    steps per second = generated tokens/s / running requests (one step serves the batch).
    """
    out: dict[str, float | None] = {}
    if peak_bw_bytes_s and s.dram_bw_util is not None:
        # whole MB/s: the utilization behind it has 2 decimals of a percent of TB/s
        out["dram_bw_bytes_s"] = round(s.dram_bw_util / 100.0 * peak_bw_bytes_s, -6)
        out["dram_bw_of_peak"] = round(s.dram_bw_util / 100.0, 4)
    if peak_bw_bytes_s and weight_bytes and s.gen_tokens_s and s.running and s.running >= 1:
        steps = s.gen_tokens_s / s.running
        out["mbu"] = round(weight_bytes * steps / peak_bw_bytes_s, 4)
    return out
