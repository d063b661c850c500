"""Replay of a recording's gpu.jsonl: the mapping on literal lines, then the real H100
recordings through the storage writer and the series query the UI uses."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from infersight.daemon.replay.gpu import parse_gpu_jsonl
from infersight.storage import series
from infersight.storage.model import GPU_SIGNALS, Batch

FIXTURES = Path(__file__).parent / "fixtures"

INFO = ('{"info": {"gpu": "NVIDIA H100 80GB HBM3", "uuid": "GPU-c107", "driver": "580.159.04", '
        '"mem_bus_width_bits": 5120, "max_mem_clock_mhz": 2619, "power_limit_w": 700.0, '
        '"gpm_supported": true, "interval_s": 0.1}}')
SAMPLE = ('{"t": 1795483096.25, "util_gpu": 100, "util_mem": 63, "power_w": 510.5, "sm_clock_mhz": 1980, '
          '"mem_used_mib": 10360, "clocks_event_reasons": 4, "sm_util": 68.5, "sm_occupancy": 9.6, '
          '"tensor_util": 6.4, "dram_bw_util": 70.3, "graphics_util": 78.3, "pcie_tx_mib_s": 7.5, '
          '"pcie_rx_mib_s": 34.25, "proc_cpu_pct": {"644": 68.6}, "gpu_pids": [644, 647], "sample_cost_ms": 1.84}')


def test_info_line_becomes_gpu_info_with_peak_bandwidth():
    rec = parse_gpu_jsonl([INFO], gpu=3)
    info = rec.info
    assert (info.gpu, info.uuid, info.name, info.driver) == (3, "GPU-c107", "NVIDIA H100 80GB HBM3", "580.159.04")
    assert (info.mem_bus_width_bits, info.max_mem_clock_mhz, info.power_limit_w) == (5120, 2619, 700.0)
    # 5120 bit / 8 x 2 x 2619 MHz: the H100 SXM's 3.35 TB/s
    assert info.peak_dram_bw_bytes_s == pytest.approx(3.352e12, rel=1e-3)
    assert info.gpm_supported is True and rec.interval_s == 0.1 and rec.errors == []


def test_sample_line_maps_names_and_units():
    rec = parse_gpu_jsonl([INFO, SAMPLE])
    (s,) = rec.samples
    assert (s.t, s.gpu, s.source) == (1795483096.25, 0, "replay")
    assert s.values == {
        "util_gpu": 100.0, "util_mem": 63.0, "power_w": 510.5, "sm_clock_mhz": 1980.0,
        "mem_used_bytes": 10360 * 2 ** 20, "clocks_event_reasons": 4, "sm_util": 68.5, "sm_occupancy": 9.6,
        "tensor_util": 6.4, "dram_bw_util": 70.3, "graphics_util": 78.3,
        "pcie_tx_bytes_s": 7.5 * 2 ** 20, "pcie_rx_bytes_s": 34.25 * 2 ** 20}
    assert set(s.values) <= set(GPU_SIGNALS)
    assert [(p.t, p.gpu, p.pid, p.used_memory_bytes) for p in rec.processes] == [
        (1795483096.25, 0, 644, None), (1795483096.25, 0, 647, None)]


def test_missing_and_null_fields_stay_out_and_bad_lines_are_reported():
    lines = [INFO, '{"t": 5.0, "util_gpu": 7, "sm_util": null}', "{not json", "[1, 2]", '{"util_gpu": 1}', "",
             b'{"t": 6.0, "dram_bw_util": 1.5}']
    rec = parse_gpu_jsonl(lines)
    assert [(s.t, s.values) for s in rec.samples] == [(5.0, {"util_gpu": 7.0}), (6.0, {"dram_bw_util": 1.5})]
    assert [e.split(":")[0] for e in rec.errors] == ["line 3", "line 4", "line 5"]


def _phase_means(store, fixture: str, signals: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Replay ``fixture``'s gpu.jsonl into ``store`` and read each labelled phase's mean per
    signal back through the series query (first and last second of a phase excluded, as the
    recording's README does). A phase name that occurs twice keeps its first occurrence."""
    lines = (FIXTURES / fixture / "gpu.jsonl").read_text().splitlines()
    rec = parse_gpu_jsonl(lines)
    assert rec.errors == [] and len(rec.samples) == len(lines) - 1
    store.submit(Batch(collector="replay", t=rec.samples[0].t, gpu_info=[rec.info], gpu_samples=rec.samples,
                       gpu_processes=rec.processes))
    store.flush()
    out: dict[str, dict[str, float]] = {}
    for label in map(json.loads, (FIXTURES / fixture / "labels.jsonl").read_text().splitlines()):
        t0, t1 = label["t0"] + 1, label["t1"] - 1
        if label["phase"] in out:
            continue
        out[label["phase"]] = {}
        for sig in signals:
            (point,) = store.read_sync(series.gpu_series, sig, 0, t0, t1, t1 - t0 + 1e-6)
            out[label["phase"]][sig] = point[1]
    return out


SIGNALS = ("util_gpu", "sm_util", "tensor_util", "dram_bw_util")
# README.md of the recordings, "Ground truth": util / SM / tensor / DRAM bandwidth, rounded
GROUND_TRUTH = {
    "h100-scenario": {
        "healthy": (84, 74, 6, 76), "host_bound": (2, 2, 2, 1), "core_bound": (21, 17, 5, 18),
        "memory_bound": (71, 62, 9, 64), "idle": (0, 0, 0, 0), "launch_bound": (47, 24, 1, 26),
        "compute_bound": (56, 52, 45, 23), "stall": (7, 6, 1, 6), "noisy_neighbor": (100, 83, 57, 44)},
    "h100-scenario-split": {"host_bound": (9, 7, 4, 6), "launch_bound": (60, 30, 1, 33)},
}


@pytest.mark.parametrize("fixture", sorted(GROUND_TRUTH))
def test_real_recording_through_storage_reproduces_the_ground_truth(store, fixture):
    means = _phase_means(store, fixture, SIGNALS)
    for phase, expected in GROUND_TRUTH[fixture].items():
        got = tuple(means[phase][s] for s in SIGNALS)
        assert got == pytest.approx(expected, abs=0.6), (phase, got)


def test_real_recording_units_survive_storage(store):
    """PCIe MiB/s and memory MiB come back as bytes; the GPU's static facts are stored."""
    raw = [json.loads(line) for line in (FIXTURES / "h100-scenario" / "gpu.jsonl").read_text().splitlines()[1:]]
    means = _phase_means(store, "h100-scenario", ("pcie_rx_bytes_s", "mem_used_bytes", "power_w"))
    label = json.loads((FIXTURES / "h100-scenario" / "labels.jsonl").read_text().splitlines()[0])
    inside = [r for r in raw if label["t0"] + 1 <= r["t"] < label["t1"] - 1]
    expect_rx = sum(r["pcie_rx_mib_s"] for r in inside) / len(inside) * 2 ** 20
    expect_mem = sum(r["mem_used_mib"] for r in inside) / len(inside) * 2 ** 20
    assert means["healthy"]["pcie_rx_bytes_s"] == pytest.approx(expect_rx, rel=1e-3)
    assert means["healthy"]["mem_used_bytes"] == pytest.approx(expect_mem, rel=1e-6)
    assert 100 < means["healthy"]["power_w"] < 700
    (gpu,) = store.read_sync(series.gpus)
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["gpm_supported"] is True
    assert gpu["peak_dram_bw_bytes_s"] == pytest.approx(5120 / 8 * 2 * 2619e6)


def test_every_mapped_field_is_a_stored_signal():
    from infersight.daemon.replay.gpu import FIELD_MAP

    assert {signal for signal, _ in FIELD_MAP.values()} <= set(GPU_SIGNALS)
