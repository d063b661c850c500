"""The GPU collector driven through a fake NVML: mapping, cadence and every error path
(NotSupported per field, GPU lost, NVML absent or gone, MIG, events, off-loop calls)."""
from __future__ import annotations

import asyncio
import threading

import pytest

from infersight.daemon.collectors.gpu import GpuCollector
from infersight.daemon.config.load import GpuCollectorConfig
from infersight.daemon.gpu.device import MIB
from infersight.daemon.gpu.fake_nvml import FakeGpu, FakeMig, FakeNvml, gpm_values
from infersight.daemon.gpu.nvml import (
    ALL_LINKS,
    EVENT_DOUBLE_BIT_ECC,
    EVENT_XID,
    FI_ECC_DBE_VOL_TOTAL,
    FI_NVLINK_THROUGHPUT_DATA_RX,
    FI_NVLINK_THROUGHPUT_DATA_TX,
    FI_PCIE_COUNT_RX_BYTES,
    FI_PCIE_COUNT_TX_BYTES,
    FI_POWER_INSTANT,
    FI_REMAPPED_COR,
    FI_REMAPPED_UNC,
    FI_TOTAL_ENERGY_CONSUMPTION,
    GPM_ANY_TENSOR_UTIL,
    GPM_GRAPHICS_UTIL,
    GPM_PCIE_RX_PER_SEC,
    GPM_PCIE_TX_PER_SEC,
    EventData,
    ProcessUtil,
)

WALL = 1_800_000_000.0


class Clock:
    """The collector's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(gpus, **config):
    config.setdefault("dcgm_url", "off")
    config.setdefault("events", False)
    nvml, clock = FakeNvml(gpus), Clock()
    return GpuCollector(GpuCollectorConfig(**config), "host-a", nvml=nvml, clock=clock), nvml, clock


async def ticks(collector, clock, n, dt=0.5):
    out = []
    for _ in range(n):
        out.append(await collector.collect(WALL + clock.t))
        clock.t += dt
    return out


def busy_h100(uuid="GPU-0"):
    return FakeGpu(uuid=uuid, util=(100.0, 63.0), power_usage_w=400.0, sm_clock_mhz=1755.0, clocks_event_reasons=4,
                   memory=(10 << 30, 80 << 30), temperature_c=55.0,
                   fields={(FI_POWER_INSTANT, 0): 510_000.0, (FI_TOTAL_ENERGY_CONSUMPTION, 0): 9_000_000.0,
                           (FI_ECC_DBE_VOL_TOTAL, 0): 0.0, (FI_REMAPPED_COR, 0): 1.0, (FI_REMAPPED_UNC, 0): 2.0},
                   gpm=gpm_values(sm=96.6, occupancy=40.5, tensor=93.8, dram=25.8, graphics=97.0,
                                  pcie_tx_mib_s=3.0, pcie_rx_mib_s=5.0, nvlink_tx_mib_s=7.0, nvlink_rx_mib_s=11.0))


async def test_gpm_gpu_reports_every_signal_in_its_unit():
    c, nvml, clock = make([busy_h100()])
    first, second = await ticks(c, clock, 2)
    (info,) = first.gpu_info
    assert (info.gpu, info.uuid, info.driver, info.gpm_supported, info.mig_mode) == (0, "GPU-0", "580.159.04", True,
                                                                                      False)
    assert info.peak_dram_bw_bytes_s == pytest.approx(5120 / 8 * 2 * 2619e6)
    # GPM needs two samples: the first tick has NVML figures only
    assert first.gpu_samples[0].source == "nvml" and "sm_util" not in first.gpu_samples[0].values
    (s,) = second.gpu_samples
    assert s.source == "gpm" and s.t == WALL + 100.5
    v = s.values
    assert (v["util_gpu"], v["util_mem"], v["power_w"], v["sm_clock_mhz"], v["clocks_event_reasons"]) == (
        100.0, 63.0, 510.0, 1755.0, 4)
    assert (v["sm_util"], v["sm_occupancy"], v["tensor_util"], v["dram_bw_util"]) == (96.6, 40.5, 93.8, 25.8)
    assert "graphics_util" not in v           # a slow-tick signal (its NVML computation is costly)
    assert (v["pcie_tx_bytes_s"], v["pcie_rx_bytes_s"]) == (3 * MIB, 5 * MIB)
    assert (v["nvlink_tx_bytes_s"], v["nvlink_rx_bytes_s"]) == (7 * MIB, 11 * MIB)
    # slow figures came with the first tick
    slow = first.gpu_samples[0].values
    assert (slow["mem_used_bytes"], slow["mem_total_bytes"], slow["temperature_c"]) == (10 << 30, 80 << 30, 55.0)
    assert (slow["energy_j"], slow["ecc_errors_uncorrected"], slow["retired_pages"]) == (9000.0, 0, 3)
    assert "mem_used_bytes" not in v


async def test_graphics_util_is_the_slow_interval_average_unless_asked_for_every_tick():
    c, nvml, clock = make([busy_h100()], fast_interval_s=0.5, slow_interval_s=5.0)
    batches = await ticks(c, clock, 21)  # 10.5 s: slow ticks at 0, 5 and 10 s
    with_graphics = [i for i, b in enumerate(batches) if "graphics_util" in b.gpu_samples[0].values]
    assert with_graphics == [10, 20]     # the slow pair's first sample gives no figure
    assert batches[10].gpu_samples[0].values["graphics_util"] == 97.0
    assert all("sm_util" in b.gpu_samples[0].values for b in batches[1:])
    # GRAPHICS_UTIL is asked only in its own (slow) calls, never with the fast metrics
    assert [r for r in nvml.gpm_metric_requests if GPM_GRAPHICS_UTIL in r] == [(GPM_GRAPHICS_UTIL,)] * 2
    assert len(nvml.gpm_live) == 4        # two buffers per pair

    c, nvml, clock = make([busy_h100()], fast_graphics_util=True)
    batches = await ticks(c, clock, 3)
    assert ["graphics_util" in b.gpu_samples[0].values for b in batches] == [False, True, True]
    assert len(nvml.gpm_live) == 2


async def test_energy_is_read_every_energy_interval_only():
    gpu = busy_h100()
    c, nvml, clock = make([gpu], fast_interval_s=0.5, slow_interval_s=5.0, energy_interval_s=20.0)
    batches = await ticks(c, clock, 90)  # 45 s: slow ticks every 5 s, energy at 0, 20 and 40 s
    with_energy = [i for i, b in enumerate(batches) if "energy_j" in b.gpu_samples[0].values]
    assert with_energy == [0, 40, 80]
    with_ecc = [i for i, b in enumerate(batches) if "ecc_errors_uncorrected" in b.gpu_samples[0].values]
    assert with_ecc == list(range(0, 90, 10))
    assert "field energy" not in c.status()["gpus"][0]["unsupported"]   # leaving it out is not a failure


async def test_slow_signals_follow_the_slow_interval():
    c, nvml, clock = make([busy_h100()], fast_interval_s=0.5, slow_interval_s=5.0)
    batches = await ticks(c, clock, 30)  # 15 s
    with_slow = [i for i, b in enumerate(batches) if "temperature_c" in b.gpu_samples[0].values]
    assert with_slow == [0, 10, 20]
    assert all("util_gpu" in b.gpu_samples[0].values for b in batches)
    assert nvml.calls["temperature_c"] == 3 and nvml.calls["utilization"] == 30


async def test_gpm_samples_are_never_less_than_100ms_apart():
    c, nvml, clock = make([busy_h100()], fast_interval_s=0.1)
    await ticks(c, clock, 2, dt=0.1)
    taken = nvml.calls["gpm_sample"]
    b = (await ticks(c, clock, 1, dt=0.05))[0]
    assert "sm_util" in b.gpu_samples[0].values
    b = (await ticks(c, clock, 1, dt=0.05))[0]   # 50 ms after the last GPM sample
    assert "sm_util" not in b.gpu_samples[0].values and "util_gpu" in b.gpu_samples[0].values
    assert nvml.calls["gpm_sample"] == taken + 1
    b = (await ticks(c, clock, 1, dt=0.09))[0]    # 100 ms after it
    assert b.gpu_samples[0].values["sm_util"] == 96.6
    b = (await ticks(c, clock, 1))[0]             # 90 ms: scheduler jitter, waits 10 ms for the gap
    assert b.gpu_samples[0].values["sm_util"] == 96.6
    assert nvml.calls["gpm_sample"] == taken + 3


async def test_unsupported_fields_are_null_reported_once_and_not_asked_again():
    gpu = busy_h100()
    gpu.util = None
    gpu.temperature_c = None
    del gpu.fields[(FI_POWER_INSTANT, 0)]     # no instant power: falls back to the 1 s average
    del gpu.gpm[GPM_ANY_TENSOR_UTIL]
    c, nvml, clock = make([gpu], slow_interval_s=0.5)
    batches = await ticks(c, clock, 6)
    values = batches[-1].gpu_samples[0].values
    assert "util_gpu" not in values and "temperature_c" not in values and "tensor_util" not in values
    assert values["power_w"] == 400.0 and values["sm_util"] == 96.6
    errors = [e for b in batches for e in b.errors]
    for what in ("utilization", "temperature", "field power_w", "GPM tensor_util"):
        assert sum(what in e for e in errors) == 1, (what, errors)
    assert nvml.calls["utilization"] == 1 and nvml.calls["temperature_c"] == 1
    status = c.status()["gpus"][0]
    assert {"utilization", "temperature", "GPM tensor_util"} <= set(status["unsupported"])


async def test_link_rates_come_from_counters_where_gpm_lacks_them():
    gpu = busy_h100()
    for m in (GPM_PCIE_TX_PER_SEC, GPM_PCIE_RX_PER_SEC):
        del gpu.gpm[m]
    gpu.fields.update({(FI_PCIE_COUNT_TX_BYTES, 0): 1e9, (FI_PCIE_COUNT_RX_BYTES, 0): 2e9})
    c, nvml, clock = make([gpu])
    await ticks(c, clock, 2)                  # second tick: GPM says PCIe is unsupported
    b = (await ticks(c, clock, 1))[0]         # first counter reading: no rate yet
    assert "pcie_tx_bytes_s" not in b.gpu_samples[0].values
    gpu.fields[(FI_PCIE_COUNT_TX_BYTES, 0)] += 50e6    # +50 MB in 0.5 s
    gpu.fields[(FI_PCIE_COUNT_RX_BYTES, 0)] += 10e6
    v = (await ticks(c, clock, 1))[0].gpu_samples[0].values
    assert v["pcie_tx_bytes_s"] == pytest.approx(100e6) and v["pcie_rx_bytes_s"] == pytest.approx(20e6)
    assert v["nvlink_tx_bytes_s"] == 7 * MIB      # still from GPM
    gpu.fields[(FI_PCIE_COUNT_TX_BYTES, 0)] = 0.0  # counter reset: no negative rate
    v = (await ticks(c, clock, 1))[0].gpu_samples[0].values
    assert "pcie_tx_bytes_s" not in v and v["pcie_rx_bytes_s"] == 0.0


async def test_gpm_forced_off_uses_nvml_only():
    gpu = busy_h100()
    gpu.fields.update({(FI_PCIE_COUNT_TX_BYTES, 0): 0.0, (FI_NVLINK_THROUGHPUT_DATA_TX, ALL_LINKS): 0.0,
                       (FI_NVLINK_THROUGHPUT_DATA_RX, ALL_LINKS): 0.0})
    c, nvml, clock = make([gpu], gpm="off")
    await ticks(c, clock, 1)
    gpu.fields[(FI_NVLINK_THROUGHPUT_DATA_TX, ALL_LINKS)] += 1000.0   # KiB in 0.5 s
    (b,) = await ticks(c, clock, 1)
    (s,) = b.gpu_samples
    assert s.source == "nvml" and s.values["util_gpu"] == 100.0
    assert not {"sm_util", "tensor_util", "dram_bw_util"} & set(s.values)
    assert s.values["nvlink_tx_bytes_s"] == pytest.approx(1000 * 1024 / 0.5)
    assert nvml.calls["gpm_sample"] == 0 and nvml.calls["gpm_alloc"] == 0
    assert c.status()["gpus"][0]["gpm"] is False


async def test_gpm_on_without_support_says_so_once():
    gpu = FakeGpu(uuid="GPU-a100", name="NVIDIA A100-SXM4-80GB", gpm_supported=False)
    c, nvml, clock = make([gpu], gpm="on")
    batches = await ticks(c, clock, 3)
    errors = [e for b in batches for e in b.errors]
    assert sum("gpm is 'on'" in e for e in errors) == 1
    assert all(s.source == "nvml" for b in batches for s in b.gpu_samples)


async def test_lost_gpu_is_marked_backed_off_and_reopened():
    good, bad = busy_h100("GPU-good"), busy_h100("GPU-bad")
    c, nvml, clock = make([good, bad])
    await ticks(c, clock, 2)
    assert len(nvml.gpm_live) == 8
    bad.lost = True
    (b,) = await ticks(c, clock, 1)
    assert [s.gpu for s in b.gpu_samples] == [0]
    (ev,) = b.events
    assert (ev.kind, ev.gpu, ev.open, ev.severity) == ("gpu_lost", 1, True, "critical")
    assert any("GPU 1" in e and "lost" in e for e in b.errors)
    assert len(nvml.gpm_live) == 4                     # its GPM buffers were freed
    assert c.status()["gpus"][1]["state"] == "lost"
    # re-open attempts back off: 1 s, then 2 s, then 4 s after each failure
    attempts = []
    for _ in range(16):                               # 8 s
        before = nvml.calls["handle_by_uuid"]
        b = (await ticks(c, clock, 1))[0]
        if nvml.calls["handle_by_uuid"] > before:
            attempts.append(clock.t - 0.5)
        assert [s.gpu for s in b.gpu_samples] == [0]
    assert [a - attempts[0] for a in attempts] == [0.0, 2.0, 6.0]
    bad.lost = False
    batches = await ticks(c, clock, 16)               # the next attempt is due 8 s after the last
    back = next(b for b in batches if b.gpu_info)
    assert [i.gpu for i in back.gpu_info] == [1]
    (closed,) = back.events
    assert (closed.id, closed.open, closed.start) == (ev.id, False, ev.start) and closed.end > ev.start
    assert any(s.gpu == 1 and s.source == "gpm" for s in batches[-1].gpu_samples)
    assert c.status()["gpus"][1]["state"] == "ok"


async def test_gpu_that_cannot_be_opened_at_start_is_retried():
    gpu = busy_h100()
    gpu.lost = True
    c, nvml, clock = make([gpu])
    (b,) = await ticks(c, clock, 1)
    assert b.no_data is None and b.gpu_samples == [] and b.events[0].kind == "gpu_lost"
    gpu.lost = False
    batches = await ticks(c, clock, 3, dt=1.0)
    assert any(b.gpu_info and b.gpu_info[0].uuid == "GPU-0" for b in batches)
    assert batches[-1].gpu_samples[0].gpu == 0


async def test_no_nvml_is_no_data_and_retried_later():
    c, nvml, clock = make([busy_h100()])
    nvml.available = False
    batches = await ticks(c, clock, 4)
    assert all(b.no_data and "NVML is not available" in b.no_data for b in batches)
    assert all(b.errors == [] and b.gpu_samples == [] for b in batches)
    assert nvml.calls["init"] == 1 and c.status()["state"] == "no_nvml"
    nvml.available = True
    clock.t += 10
    (b,) = await ticks(c, clock, 1)
    assert b.no_data is None and b.gpu_info and c.status()["state"] == "ok"


async def test_no_gpu_is_no_data():
    c, nvml, clock = make([])
    (b,) = await ticks(c, clock, 1)
    assert b.no_data == "NVML found no NVIDIA GPU" and b.row_count() == 0
    assert nvml.initialised == 0                      # init was balanced by shutdown


async def test_driver_going_away_resets_and_recovers():
    c, nvml, clock = make([busy_h100()])
    await ticks(c, clock, 2)
    nvml.broken = True
    (b,) = await ticks(c, clock, 1)
    assert b.no_data and "NVML stopped working" in b.no_data and b.errors
    assert len(nvml.gpm_live) == 0
    nvml.broken = False
    clock.t += 10
    (b,) = await ticks(c, clock, 1)
    assert b.no_data is None and b.gpu_info[0].uuid == "GPU-0"


def mig_h100():
    gpu = busy_h100("GPU-mig")
    gpu.mig_mode, gpu.util = True, None   # NVML has no device utilization in MIG mode
    gpu.instances = [
        FakeMig(1, "MIG-aaa", gpm=gpm_values(sm=80.0, tensor=70.0, dram=20.0), processes=[(501, 5 << 30)]),
        FakeMig(2, "MIG-bbb", gpm=gpm_values(sm=10.0, tensor=0.0, dram=60.0), processes=[(502, None)]),
    ]
    gpu.processes = [(501, 5 << 30), (502, None)]
    return gpu


async def test_mig_instances_are_reported_per_instance():
    gpu = mig_h100()
    c, nvml, clock = make([gpu])
    first, second = await ticks(c, clock, 2)
    infos = {i.gpu: i for i in first.gpu_info}
    assert set(infos) == {0, 101, 102}
    assert infos[0].mig_mode is True
    assert (infos[101].uuid, infos[101].parent_gpu, infos[102].parent_gpu) == ("MIG-aaa", 0, 0)
    by_gpu = {s.gpu: s for s in second.gpu_samples}
    assert by_gpu[101].values["sm_util"] == 80.0 and by_gpu[102].values["dram_bw_util"] == 60.0
    assert by_gpu[101].source == "gpm" and "util_gpu" not in by_gpu[0].values
    assert by_gpu[0].values["power_w"] == 510.0        # device-level figures stay on the parent
    assert {(p.gpu, p.pid) for p in first.gpu_processes} == {(101, 501), (102, 502)}
    assert c.pid_gpus() == {501: (101,), 502: (102,)} and c.compute_pids() == {501, 502}
    first_mem = {s.gpu: s.values.get("mem_total_bytes") for s in first.gpu_samples}
    assert first_mem[101] == 40 << 30


async def test_mig_reconfiguration_and_broken_instances_never_crash():
    gpu = mig_h100()
    c, nvml, clock = make([gpu], slow_interval_s=0.5)
    await ticks(c, clock, 2)
    gpu.instances.append(FakeMig(5, "MIG-ccc"))
    b = (await ticks(c, clock, 1))[0]
    assert [i.gpu for i in b.gpu_info] == [101, 102, 105]
    gpu.instances = [FakeMig(1, "MIG-aaa")]
    b = (await ticks(c, clock, 1))[0]
    assert [i.gpu for i in b.gpu_info] == [101]
    assert len(nvml.gpm_live) == 8                    # two pairs (fast, slow) of two for the parent and the instance
    gpu.instances[0].memory = None                    # an instance without memory figures
    b = (await ticks(c, clock, 2))[-1]
    assert {s.gpu for s in b.gpu_samples} == {0, 101}


async def test_processes_and_their_utilization_since_the_last_seen_timestamp():
    gpu = busy_h100()
    gpu.processes = [(11, 4 << 30), (12, None)]
    gpu.process_util = [ProcessUtil(11, 1000, 10.0, 1.0), ProcessUtil(11, 2000, 55.0, 20.0),
                        ProcessUtil(12, 1500, 3.0, 0.0)]
    other = busy_h100("GPU-1")
    other.processes = [(11, 1 << 30)]
    c, nvml, clock = make([gpu, other], slow_interval_s=0.5)
    (b,) = await ticks(c, clock, 1)
    procs = {(p.gpu, p.pid): p for p in b.gpu_processes}
    assert (procs[(0, 11)].used_memory_bytes, procs[(0, 11)].sm_util, procs[(0, 11)].mem_util) == (4 << 30, 55.0,
                                                                                                  20.0)
    assert procs[(0, 12)].used_memory_bytes is None and procs[(0, 12)].sm_util == 3.0
    assert procs[(1, 11)].sm_util is None
    assert c.pid_gpus() == {11: (0, 1), 12: (0,)}
    (b,) = await ticks(c, clock, 1)                    # nothing newer than timestamp 2000
    assert all(p.sm_util is None for p in b.gpu_processes if p.gpu == 0)
    gpu.process_util.append(ProcessUtil(12, 2500, 42.0, 7.0))
    gpu.processes = [(12, None)]
    (b,) = await ticks(c, clock, 1)
    assert [(p.pid, p.sm_util) for p in b.gpu_processes if p.gpu == 0] == [(12, 42.0)]
    assert c.compute_pids() == {11, 12}


async def test_xid_events_arrive_as_events_and_the_thread_stops_cleanly():
    c, nvml, clock = make([busy_h100("GPU-x"), busy_h100("GPU-y")], events=True)
    await ticks(c, clock, 1)
    assert c.status()["events"] == {"running": True, "gpus": [0, 1]}
    nvml.inject_event(EventData("GPU-y", EVENT_XID, 79, None, None))
    nvml.inject_event(EventData("GPU-x", EVENT_DOUBLE_BIT_ECC, 0, None, None))
    events = []
    for _ in range(100):
        events += (await ticks(c, clock, 1))[0].events
        if len(events) == 2:
            break
        await asyncio.sleep(0.02)
    xid, ecc = events
    assert (xid.kind, xid.gpu, xid.severity, xid.evidence["xid"]) == ("xid", 1, "critical", 79)
    assert "fallen off the bus" in xid.summary and xid.host == "host-a"
    assert (ecc.kind, ecc.gpu) == ("ecc_uncorrected", 0)
    await c.close()
    assert not any(t.name == "infersight-nvml-events" for t in threading.enumerate())
    assert all(es.freed for es in nvml.event_sets)
    assert nvml.initialised == 0 and len(nvml.gpm_live) == 0


async def test_events_unsupported_is_reported_not_fatal():
    gpu = busy_h100()
    gpu.supported_events = None
    c, nvml, clock = make([gpu], events=True)
    (b,) = await ticks(c, clock, 1)
    assert b.gpu_samples and any("cannot register for NVML events" in e for e in b.errors)
    assert c.status()["events"]["running"] is False
    await c.close()


async def test_every_nvml_call_runs_off_the_event_loop():
    loop_thread = threading.get_ident()
    seen: set[int] = set()

    class Recording(FakeNvml):
        def _count(self, name: str) -> None:
            seen.add(threading.get_ident())
            super()._count(name)

    nvml, clock = Recording([mig_h100(), busy_h100("GPU-1")]), Clock()
    c = GpuCollector(GpuCollectorConfig(dcgm_url="off", events=True), "h", nvml=nvml, clock=clock)
    await ticks(c, clock, 3)
    c.status()
    c.compute_pids()
    await c.close()
    assert seen and loop_thread not in seen
