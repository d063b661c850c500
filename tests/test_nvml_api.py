"""The NVML seam: its constants agree with nvidia-ml-py, errors are translated into the
seam's classes, and the fake offers exactly the real seam's methods."""
from __future__ import annotations

import inspect

import pynvml
import pytest

from infersight.daemon.gpu import nvml as nvml_api
from infersight.daemon.gpu.fake_nvml import FakeNvml
from infersight.daemon.gpu.nvml import (
    GpuLost,
    NoPermission,
    NotFound,
    NotSupported,
    Nvml,
    NvmlError,
    NvmlTimeout,
    NvmlUnavailable,
    error_for,
)

# seam constant -> the pynvml name it must equal
PYNVML_NAMES = {
    "GPM_GRAPHICS_UTIL": "NVML_GPM_METRIC_GRAPHICS_UTIL", "GPM_SM_UTIL": "NVML_GPM_METRIC_SM_UTIL",
    "GPM_SM_OCCUPANCY": "NVML_GPM_METRIC_SM_OCCUPANCY", "GPM_ANY_TENSOR_UTIL": "NVML_GPM_METRIC_ANY_TENSOR_UTIL",
    "GPM_DRAM_BW_UTIL": "NVML_GPM_METRIC_DRAM_BW_UTIL", "GPM_PCIE_TX_PER_SEC": "NVML_GPM_METRIC_PCIE_TX_PER_SEC",
    "GPM_PCIE_RX_PER_SEC": "NVML_GPM_METRIC_PCIE_RX_PER_SEC",
    "GPM_NVLINK_TOTAL_RX_PER_SEC": "NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC",
    "GPM_NVLINK_TOTAL_TX_PER_SEC": "NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC",
    "FI_ECC_DBE_VOL_TOTAL": "NVML_FI_DEV_ECC_DBE_VOL_TOTAL", "FI_RETIRED_SBE": "NVML_FI_DEV_RETIRED_SBE",
    "FI_RETIRED_DBE": "NVML_FI_DEV_RETIRED_DBE", "FI_TOTAL_ENERGY_CONSUMPTION": "NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "FI_NVLINK_THROUGHPUT_DATA_TX": "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX",
    "FI_NVLINK_THROUGHPUT_DATA_RX": "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX",
    "FI_REMAPPED_COR": "NVML_FI_DEV_REMAPPED_COR", "FI_REMAPPED_UNC": "NVML_FI_DEV_REMAPPED_UNC",
    "FI_POWER_INSTANT": "NVML_FI_DEV_POWER_INSTANT", "FI_PCIE_COUNT_TX_BYTES": "NVML_FI_DEV_PCIE_COUNT_TX_BYTES",
    "FI_PCIE_COUNT_RX_BYTES": "NVML_FI_DEV_PCIE_COUNT_RX_BYTES",
    "EVENT_SINGLE_BIT_ECC": "nvmlEventTypeSingleBitEccError", "EVENT_DOUBLE_BIT_ECC": "nvmlEventTypeDoubleBitEccError",
    "EVENT_XID": "nvmlEventTypeXidCriticalError", "EVENT_MIG_CONFIG_CHANGE": "nvmlEventMigConfigChange",
    "EVENT_SBE_STORM": "nvmlEventTypeSingleBitEccErrorStorm",
    "EVENT_DRAM_RETIREMENT": "nvmlEventTypeDramRetirementEvent",
    "EVENT_DRAM_RETIREMENT_FAILURE": "nvmlEventTypeDramRetirementFailure",
    "EVENT_NON_FATAL_POISON": "nvmlEventTypeNonFatalPoisonError", "EVENT_FATAL_POISON": "nvmlEventTypeFatalPoisonError",
    "EVENT_GPU_UNAVAILABLE": "nvmlEventTypeGpuUnavailableError",
    "EVENT_GPU_RECOVERY_ACTION": "nvmlEventTypeGpuRecoveryAction",
    "ERROR_NOT_SUPPORTED": "NVML_ERROR_NOT_SUPPORTED", "ERROR_GPU_IS_LOST": "NVML_ERROR_GPU_IS_LOST",
    "ERROR_GPU_NOT_FOUND": "NVML_ERROR_GPU_NOT_FOUND", "ERROR_FUNCTION_NOT_FOUND": "NVML_ERROR_FUNCTION_NOT_FOUND",
    "ERROR_LIBRARY_NOT_FOUND": "NVML_ERROR_LIBRARY_NOT_FOUND", "ERROR_TIMEOUT": "NVML_ERROR_TIMEOUT",
}


@pytest.mark.parametrize("ours,theirs", sorted(PYNVML_NAMES.items()))
def test_constants_match_nvidia_ml_py(ours, theirs):
    assert getattr(nvml_api, ours) == getattr(pynvml, theirs)


def test_every_seam_constant_is_checked():
    prefixes = ("GPM_", "FI_", "EVENT_")
    assert {n for n in dir(nvml_api) if n.startswith(prefixes)} <= set(PYNVML_NAMES)


@pytest.mark.parametrize("code,cls", [
    (pynvml.NVML_ERROR_NOT_SUPPORTED, NotSupported), (pynvml.NVML_ERROR_FUNCTION_NOT_FOUND, NotSupported),
    (pynvml.NVML_ERROR_NO_PERMISSION, NoPermission), (pynvml.NVML_ERROR_GPU_IS_LOST, GpuLost),
    (pynvml.NVML_ERROR_RESET_REQUIRED, GpuLost), (pynvml.NVML_ERROR_GPU_NOT_FOUND, GpuLost),
    (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, NvmlUnavailable), (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, NvmlUnavailable),
    (pynvml.NVML_ERROR_UNINITIALIZED, NvmlUnavailable), (pynvml.NVML_ERROR_TIMEOUT, NvmlTimeout),
    (pynvml.NVML_ERROR_NOT_FOUND, NotFound), (pynvml.NVML_ERROR_UNKNOWN, NvmlError),
])
def test_error_codes_map_to_seam_classes(code, cls):
    exc = error_for(code, "x")
    assert type(exc) is cls and exc.code == code


def test_real_seam_translates_pynvml_errors():
    nvml = Nvml()
    with pytest.raises(NvmlUnavailable):
        nvml.device_count()                      # before init
    nvml._nv = pynvml                            # as init would leave it, without needing a GPU
    if pynvml.nvmlLib is None:                   # no libnvidia-ml here: pynvml says "uninitialized"
        with pytest.raises(NvmlUnavailable):
            nvml.device_count()
    with pytest.raises(NotSupported):
        nvml._call("nvmlDeviceGetSomethingThatDoesNotExist")


def test_init_without_a_driver_is_unavailable_not_a_crash():
    if pynvml.nvmlLib is not None:
        pytest.skip("an NVIDIA driver is loaded in this process; tests/gpu covers the real library")
    try:
        Nvml().init()
    except NvmlUnavailable as exc:
        assert exc.code in (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    else:
        pytest.skip("NVML initialised: this host has a driver")


def test_fake_offers_exactly_the_real_seam():
    def public(cls):
        return {name: inspect.signature(fn) for name, fn in inspect.getmembers(cls, inspect.isfunction)
                if not name.startswith("_")}

    real, fake = public(Nvml), public(FakeNvml)
    assert set(real) == set(fake) - {"inject_event"}
    for name, sig in real.items():
        assert list(sig.parameters) == list(fake[name].parameters), name


@pytest.fixture
def seam(monkeypatch):
    """The real seam over pynvml, with the named pynvml calls replaced per test."""
    nvml = Nvml()
    nvml._nv = pynvml
    return nvml


def test_field_values_are_decoded_by_value_type(seam, monkeypatch):
    def fake_get(handle, field_ids):
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        for v, (fid, scope) in zip(values, field_ids):
            v.fieldId, v.scopeId = fid, scope
        values[0].valueType, values[0].value.uiVal = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, 512_000
        values[1].valueType, values[1].value.ullVal = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, 2 ** 40 + 7
        values[2].valueType, values[2].value.dVal = pynvml.NVML_VALUE_TYPE_DOUBLE, 0.25
        values[3].nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return values

    monkeypatch.setattr(pynvml, "nvmlDeviceGetFieldValues", fake_get)
    monkeypatch.setattr(pynvml, "nvmlErrorString", lambda code: "Not Supported")
    got = seam.field_values(object(), [(186, 0), (138, nvml_api.ALL_LINKS), (1, 0), (197, 0)])
    assert got[:3] == [512_000.0, float(2 ** 40 + 7), 0.25]
    assert isinstance(got[3], NotSupported) and "197" in str(got[3])


def test_gpm_request_is_built_and_read_per_metric(seam, monkeypatch):
    seen = {}

    def fake_metrics_get(req):
        seen["version"], seen["n"] = req.version, req.numMetrics
        seen["ids"] = [req.metrics[i].metricId for i in range(req.numMetrics)]
        req.metrics[0].value = 96.6
        req.metrics[1].nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        req.metrics[2].value = 3.5
        return req

    monkeypatch.setattr(pynvml, "nvmlGpmMetricsGet", fake_metrics_get)
    monkeypatch.setattr(pynvml, "nvmlErrorString", lambda code: "Not Supported")
    older, newer = pynvml.c_nvmlGpmSample_t(), pynvml.c_nvmlGpmSample_t()
    got = seam.gpm_metrics(older, newer, [nvml_api.GPM_SM_UTIL, nvml_api.GPM_ANY_TENSOR_UTIL,
                                          nvml_api.GPM_PCIE_TX_PER_SEC])
    assert seen == {"version": pynvml.NVML_GPM_METRICS_GET_VERSION, "n": 3, "ids": [2, 5, 20]}
    assert got[0] == 96.6 and isinstance(got[1], NotSupported) and got[2] == 3.5


def test_event_wait_maps_device_and_instances(seam, monkeypatch):
    def fake_wait(event_set, timeout_ms):
        d = pynvml.c_nvmlEventData_t()
        d.eventType, d.eventData = pynvml.nvmlEventTypeXidCriticalError, 79
        d.gpuInstanceId, d.computeInstanceId = 0xFFFFFFFF, 0xFFFFFFFF
        return d

    monkeypatch.setattr(pynvml, "nvmlEventSetWait_v2", fake_wait)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUUID", lambda h: "GPU-x")
    ev = seam.event_wait(object(), 250)
    assert (ev.uuid, ev.event_type, ev.data, ev.gpu_instance, ev.compute_instance) == ("GPU-x", 8, 79, None, None)


def test_process_utilization_no_samples_is_empty_and_processes_fall_back_to_v2(seam, monkeypatch):
    def none_since(handle, ts):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def v3_missing(handle):
        raise pynvml.NVMLLibraryMismatchError("unversioned function missing")

    class P:
        pid, usedGpuMemory = 42, None

    monkeypatch.setattr(pynvml, "nvmlDeviceGetProcessUtilization", none_since)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", v3_missing)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses_v2", lambda h: [P()])
    assert seam.process_utilization(object(), 123) == []
    assert seam.compute_processes(object()) == [(42, None)]
