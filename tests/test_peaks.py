"""The per-model peak table: exact NVML names, no guesses, MFU/MBU arithmetic."""
from __future__ import annotations

import math

import pytest

from infersight.daemon.gpu.peaks import known_models, mbu, mfu, peaks_for


def test_the_h200_carries_datasheet_and_measured_figures():
    p = peaks_for("NVIDIA H200")
    assert p is not None
    assert p.tensor_flops == pytest.approx(989.5e12)
    assert p.dram_bytes_per_s == pytest.approx(4.8e12)
    # DESIGN.md: ~790 TFLOP/s bf16 dense (8192^3 GEMM), ~4.3 TB/s device copy read + write
    assert p.attainable_tensor_flops == pytest.approx(790e12)
    assert p.attainable_dram_bytes_per_s == pytest.approx(4.3e12)
    assert "datasheet" in p.source and "measured" in p.source


def test_the_h100_sxm_is_matched_on_the_name_nvml_gives_it():
    # the name DESIGN.md's H100 reported through NVML
    p = peaks_for("NVIDIA H100 80GB HBM3")
    assert p is not None and p.dram_bytes_per_s == pytest.approx(3.35e12)
    assert p.attainable_tensor_flops is None  # nobody measured it: no invented figure


@pytest.mark.parametrize("name", ["nvidia h200", "  NVIDIA   H200 ", "NVIDIA H200\n"])
def test_case_and_spacing_do_not_matter(name):
    assert peaks_for(name) is peaks_for("NVIDIA H200")


@pytest.mark.parametrize("name", [
    None, "", "NVIDIA GeForce RTX 4090", "Tesla T4",
    "NVIDIA H100 80GB HBM3 MIG 1g.10gb",   # a MIG slice has a profile-dependent share of the peaks
    "NVIDIA H20",                          # a prefix of H200 is not an H200
    "NVIDIA H200 NVL2",
])
def test_unknown_models_get_no_peaks(name):
    assert peaks_for(name) is None


def test_boards_sharing_a_chip_keep_their_own_figures():
    assert peaks_for("NVIDIA H200 NVL").tensor_flops < peaks_for("NVIDIA H200").tensor_flops
    assert peaks_for("NVIDIA H100 PCIe").dram_bytes_per_s < peaks_for("NVIDIA H100 80GB HBM3").dram_bytes_per_s


def test_every_entry_is_sane():
    names = known_models()
    assert len(set(n.casefold() for n in names)) == len(names)
    for name in names:
        p = peaks_for(name)
        assert p.model == name and p.source
        # bf16 dense between 100 and 5,000 TFLOP/s, DRAM between 0.5 and 10 TB/s
        assert 1e14 < p.tensor_flops < 5e15 and 5e11 < p.dram_bytes_per_s < 1e13
        for measured, spec in ((p.attainable_tensor_flops, p.tensor_flops),
                               (p.attainable_dram_bytes_per_s, p.dram_bytes_per_s)):
            assert measured is None or 0 < measured <= spec


def test_mfu_and_mbu_divide_by_the_peaks():
    h200 = peaks_for("NVIDIA H200")
    assert mfu(494.75e12, h200) == pytest.approx(0.5)
    assert mbu(2.4e12, h200) == pytest.approx(0.5)
    # the table's figure wins over NVML's bus-width estimate; without the model NVML's is used
    assert mbu(2.4e12, h200, nvml_peak_bytes_per_s=1e12) == pytest.approx(0.5)
    assert mbu(1e12, None, nvml_peak_bytes_per_s=4e12) == pytest.approx(0.25)


@pytest.mark.parametrize("value", [None, math.nan, math.inf])
def test_no_number_gives_no_ratio(value):
    h200 = peaks_for("NVIDIA H200")
    assert mfu(value, h200) is None and mbu(value, h200) is None


def test_no_peak_gives_no_ratio():
    assert mfu(1e12, None) is None
    assert mbu(1e12, None) is None
    assert mbu(1e12, None, nvml_peak_bytes_per_s=0.0) is None
