"""MFU and MBU from the engine's own FLOP and byte counters, in the analysis windows."""
from __future__ import annotations

import pytest

from infersight.daemon.analysis.analyzer import Analyzer
from infersight.daemon.analysis.classify import Second
from infersight.daemon.analysis.engine_roof import engine_roof_features
from infersight.daemon.config.load import Config
from infersight.daemon.gpu.peaks import peaks_for
from infersight.storage import events as q_events
from infersight.storage.model import Batch, EngineSample, GpuInfo, GpuSample

H200_FLOPS = 989.5e12
T0 = 1_000


def _batch(engine_rows: list[tuple[str, str, float]], seconds: int = 10) -> Batch:
    """Two GPUs (an H200 and a model the peak table does not know) busy for ``seconds``, and
    per second the engine rows (endpoint, signal, value)."""
    batch = Batch("test", float(T0))
    batch.gpu_info = [GpuInfo(0, "GPU-0", "NVIDIA H200", peak_dram_bw_bytes_s=4.8e12),
                      GpuInfo(1, "GPU-1", "NVIDIA Imaginary 1", peak_dram_bw_bytes_s=2.0e12)]
    for t in range(T0, T0 + seconds):
        for gpu in (0, 1):
            batch.gpu_samples.append(GpuSample(t + 0.5, gpu, {"util_gpu": 100.0, "sm_util": 90.0, "tensor_util": 60.0,
                                                              "dram_bw_util": 30.0}))
        for endpoint, signal, value in engine_rows:
            batch.engine_samples.append(EngineSample(t + 0.2, endpoint, "vllm", "m", signal, value))
    return batch


def _windows(store, batch: Batch) -> dict[int, list[dict]]:
    store.submit(batch)
    store.flush()
    Analyzer(Config(), store).analyse(T0, T0 + 10)
    rows = store.read_sync(q_events.windows, T0, T0 + 10)
    out: dict[int, list[dict]] = {}
    for w in rows:
        out.setdefault(w["gpu"], []).append(w)
    return out


def test_windows_carry_the_engines_mfu_and_mbu(store):
    rows = [("http://a/metrics", "flops_per_gpu_per_s", 0.4 * H200_FLOPS),
            ("http://a/metrics", "read_bytes_per_gpu_per_s", 2.0e12),
            ("http://a/metrics", "write_bytes_per_gpu_per_s", 0.4e12)]
    windows = _windows(store, _batch(rows))
    assert len(windows[0]) == 10
    for w in windows[0]:
        assert w["features"]["mfu"] == pytest.approx(0.4)
        assert w["features"]["mbu"] == pytest.approx(2.4e12 / 4.8e12)
    for w in windows[1]:
        # a model without a known tensor peak gets no MFU; its MBU uses NVML's bandwidth figure
        assert "mfu" not in w["features"]
        assert w["features"]["mbu"] == pytest.approx(2.4e12 / 2.0e12)


def test_two_engines_give_the_busier_ones_figure_not_their_sum(store):
    rows = [("http://a/metrics", "flops_per_gpu_per_s", 0.4 * H200_FLOPS),
            ("http://b/metrics", "flops_per_gpu_per_s", 0.1 * H200_FLOPS)]
    windows = _windows(store, _batch(rows))
    assert {round(w["features"]["mfu"], 4) for w in windows[0]} == {0.4}


def test_an_engine_without_the_counters_leaves_mfu_out(store):
    windows = _windows(store, _batch([("http://a/metrics", "generation_tokens_per_s", 500.0)]))
    assert windows[0] and all("mfu" not in w["features"] and "mbu" not in w["features"] for w in windows[0])


def test_only_read_bytes_still_give_an_mbu():
    s = Second(t=0, gpu=0, dram_bytes_per_gpu_s=1.2e12)
    assert engine_roof_features(s, peaks_for("NVIDIA H200"), None) == {"mbu": pytest.approx(0.25)}
    assert engine_roof_features(Second(t=0, gpu=0), peaks_for("NVIDIA H200"), 4.8e12) == {}
