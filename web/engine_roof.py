"""MFU and MBU per GPU from the engine's own per-GPU estimates, for /api/series and /metrics.

The numerators are engine signals (``flops_per_gpu_per_s``; ``read_bytes_per_gpu_per_s`` +
``write_bytes_per_gpu_per_s``, see daemon/engines/specs.py) of the endpoints serving the GPU,
the busiest one's where several do; the denominators are the GPU model's peaks
(daemon/gpu/peaks.py), and for bandwidth NVML's bus-width figure when the model is not in the
table. Which endpoints serve a GPU follows the analysis (seconds.EngineScope.for_gpu) on the
live daemon's endpoint -> GPUs map; without one (a read-only store, replay) every endpoint
does. The analysis windows carry the same two figures as the features ``mfu`` and ``mbu``.
"""
from __future__ import annotations

from typing import Any, Mapping

from infersight.daemon.gpu.peaks import Peaks, mbu, mfu, peaks_for
from infersight.storage import series

# series name -> the engine signals whose sum is its numerator
SIGNALS: dict[str, tuple[str, ...]] = {
    "engine_mfu": ("flops_per_gpu_per_s",),
    "engine_mbu": ("read_bytes_per_gpu_per_s", "write_bytes_per_gpu_per_s"),
}
NVML_BANDWIDTH = "NVML: memory bus width x maximum memory clock"
EndpointGpus = Mapping[str, tuple[int, ...]]


def endpoint_map(agent: Any) -> EndpointGpus | None:
    """The analysis' last endpoint URL -> GPUs answer (None without a live daemon or map)."""
    analysis = agent.extras.get("analysis") if agent is not None else None
    return getattr(analysis, "engine_map", None)


def scope(gpu: int, endpoint_gpus: EndpointGpus | None) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """(include, exclude) endpoint URLs for ``gpu``: the rule of the analysis' EngineScope.for_gpu
    (the endpoints mapped to the GPU; else those mapped to no GPU; without a map, all)."""
    if not endpoint_gpus:
        return None, ()
    mine = tuple(sorted(url for url, gpus in endpoint_gpus.items() if gpu in gpus))
    if mine:
        return mine, ()
    return None, tuple(sorted(url for url, gpus in endpoint_gpus.items() if gpus))


def ratio(signal: str, value: float | None, peaks: Peaks | None, nvml_bw: float | None) -> float | None:
    """``value`` (the numerator of ``signal``) over the GPU's peak; None without one."""
    return mfu(value, peaks) if signal == "engine_mfu" else mbu(value, peaks, nvml_bw)


def peak_of(signal: str, gpu: dict[str, Any]) -> tuple[float | None, str | None]:
    """(peak, where it comes from) of ``signal`` for a row of series.gpus."""
    peaks = peaks_for(gpu.get("name"))
    if signal == "engine_mfu":
        return (peaks.tensor_flops, peaks.source) if peaks else (None, None)
    if peaks is not None:
        return peaks.dram_bytes_per_s, peaks.source
    nvml_bw = gpu.get("peak_dram_bw_bytes_s")
    return (nvml_bw, NVML_BANDWIDTH) if nvml_bw else (None, None)


async def series_body(store: Any, signal: str, gpu: int, t_from: float, t_to: float, step: float,
                      endpoint_gpus: EndpointGpus | None = None) -> dict:
    """The /api/series answer for ``engine_mfu`` or ``engine_mbu`` of ``gpu``. A GPU whose
    peak is unknown gets no points and says why (``peak`` null), not an error."""
    facts = next((g for g in await store.read(series.gpus) if g["gpu"] == gpu), {"gpu": gpu})
    peak, source = peak_of(signal, facts)
    body: dict[str, Any] = {"signal": signal, "unit": "ratio", "gpu": gpu, "gpu_name": facts.get("name"),
                            "peak": peak, "peak_source": source, "points": []}
    if peak is None:
        body["reason"] = f"no peak known for GPU model {facts.get('name')!r}"
        return body
    include, exclude = scope(gpu, endpoint_gpus)
    points = await store.read(series.engine_per_gpu_series, SIGNALS[signal], t_from, t_to, step, include, exclude)
    body["points"] = [[t, None if v is None else round(v / peak, 4)] for t, v in points]
    return body


def latest_ratios(gpus: list[dict[str, Any]], latest: list[tuple[str, str, float, float]],
                  endpoint_gpus: EndpointGpus | None = None) -> dict[str, dict[int, float]]:
    """signal -> gpu -> ratio from the newest per-endpoint values (series.engine_latest): per
    endpoint the numerator's signals add up; of the endpoints serving a GPU the busiest gives
    its figure."""
    per_endpoint: dict[str, dict[str, float]] = {}
    for url, signal, _, value in latest:
        for name, parts in SIGNALS.items():
            if signal in parts:
                acc = per_endpoint.setdefault(name, {})
                acc[url] = acc.get(url, 0.0) + value
    out: dict[str, dict[int, float]] = {}
    for g in gpus:
        include, exclude = scope(int(g["gpu"]), endpoint_gpus)
        for name, by_url in per_endpoint.items():
            values = [v for url, v in by_url.items() if (include is None or url in include) and url not in exclude]
            value = ratio(name, max(values), peaks_for(g.get("name")), g.get("peak_dram_bw_bytes_s")) if values else None
            if value is not None:
                out.setdefault(name, {})[int(g["gpu"])] = value
    return out
