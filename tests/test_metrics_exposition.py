"""GET /metrics: Prometheus text that promtool accepts, names and labels by the conventions,
values read back from the store, and counters that only grow by what is new."""
from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infersight.daemon.config.load import Config, with_overrides
from infersight.daemon.runner import Runner
from infersight.daemon.runtime import Agent
from infersight.storage import events as q_events
from infersight.storage import retention
from infersight.storage.model import (
    CLASSES,
    GPU_SIGNALS,
    Batch,
    EngineSample,
    Event,
    GpuInfo,
    GpuSample,
    HostSample,
    SamplingStat,
    Target,
    Window,
)
from infersight.web import metrics as web_metrics
from infersight.web.app import create_app

ALLOWED_LABELS = {"host", "gpu", "uuid", "class", "collector", "component", "kind", "name", "version", "outcome",
                  "endpoint"}
ENGINE_A, ENGINE_B = "http://127.0.0.1:8000/metrics", "http://127.0.0.1:8001/metrics"
H100_BF16 = 989.5e12
UNIT_SUFFIXES = ("_ratio", "_bytes", "_bytes_per_second", "_watts", "_hertz", "_celsius", "_seconds", "_joules",
                 "_errors", "_pages", "_reasons", "_info", "_success", "_no_data", "_batches", "_up", "_healthy",
                 "_pushes", "_class")
HOST = "node-7"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (make test does it when run as root)",
                    pytrace=False)
    return found


class Healthy:
    name, interval_s = "fakehost", 1.0

    async def collect(self, now: float) -> Batch:
        return Batch(self.name, now, host_samples=[HostSample(now, 12.0, 8, 1 << 30, 1 << 34, 0.5, 0.4, 0.3)])


class Broken:
    name, interval_s = "broken", 1.0

    async def collect(self, now: float) -> Batch:
        raise RuntimeError("injected")


class Component:
    """A component with health and its own metrics, as the Pyroscope pusher has."""

    name = "pushy"

    def health(self) -> dict:
        return {"ok": False, "last_error": "down"}

    def metrics(self):
        return [("infersight_pyroscope_pushes_total", "counter", "pushes", {"outcome": "sent"}, 7)]


def gpu_batch(now: float) -> Batch:
    """Two H100s: GPU 0 runs a bf16 GEMM (DESIGN.md's measured means), GPU 1 copies memory.
    GPU 0's newest tick lacks GPM values (a NULL must not hide the older real value)."""
    b = Batch("fakegpu", now, gpu_info=[GpuInfo(0, "GPU-aaaa", "NVIDIA H100 80GB HBM3"),
                                        GpuInfo(1, "GPU-bbbb", "NVIDIA H100 80GB HBM3")])
    b.gpu_samples += [
        GpuSample(now - 2.0, 0, {"util_gpu": 100.0, "sm_util": 96.6, "tensor_util": 93.8, "dram_bw_util": 25.8,
                                 "power_w": 690.0, "sm_clock_mhz": 1980.0, "mem_used_bytes": 70 << 30,
                                 "temperature_c": 61.0, "energy_j": 123456.0, "ecc_errors_uncorrected": 0}),
        GpuSample(now - 1.0, 0, {"util_gpu": 100.0, "power_w": 700.0}),
        GpuSample(now - 1.0, 1, {"util_gpu": 100.0, "sm_util": 99.5, "tensor_util": 0.0, "dram_bw_util": 90.1}),
        GpuSample(now - 600.0, 2, {"util_gpu": 55.0}),  # stale: not exposed
    ]
    return b


def engine_samples(now: float) -> list[EngineSample]:
    """Two engines' per-GPU estimates and scrape latencies: A at 30% MFU and 50% MBU of an H100
    SXM in its newest scrape (an older one and a stale one must not count), B less busy."""
    def sample(t, endpoint, signal, v):
        return EngineSample(t, endpoint, "vllm", "m", signal, v)
    out = []
    for t, flops in ((now - 600.0, 0.9), (now - 3.0, 0.1), (now - 1.0, 0.3)):
        out += [sample(t, ENGINE_A, "flops_per_gpu_per_s", flops * H100_BF16),
                sample(t, ENGINE_A, "read_bytes_per_gpu_per_s", 1.0e12),
                sample(t, ENGINE_A, "write_bytes_per_gpu_per_s", 0.675e12),
                sample(t, ENGINE_A, "scrape_latency_seconds", 1.2 if t == now - 1.0 else 0.01)]
    out += [sample(now - 1.5, ENGINE_B, "flops_per_gpu_per_s", 0.2 * H100_BF16),
            sample(now - 1.5, ENGINE_B, "scrape_latency_seconds", 0.004)]
    return out


def windows(gpu: int, start: float, classes: list[str], features: dict | None = None) -> list[Window]:
    return [Window(start + i, start + i + 1, gpu, k, dict(features or {})) for i, k in enumerate(classes)]


@pytest.fixture
async def setup(store, aiohttp_client):
    now = time.time()
    config = with_overrides(Config(), **{"agent.host": HOST})
    store.submit(gpu_batch(now))
    b = Batch("analysis", now)
    b.windows += windows(0, now - 40, ["idle"] * 10 + ["host_bound"] * 5 + ["compute_bound"] * 20, {"running": 3.0})
    b.windows += windows(1, now - 40, ["memory_bound"] * 30)
    b.targets.append(Target("testhost", 4242, 1.0, "python -m vllm", "engine_core", (0,)))
    b.sampling_stats += [SamplingStat(int(now) - 30 + i, 4242, 1.0, 20, 1) for i in range(5)]
    b.engine_samples += engine_samples(now)
    store.submit(b)
    store.flush()
    await store.write(q_events.upsert_events, [Event("gap-1", "cpu_gpu_gap", now - 25, now - 20, HOST, 0),
                                               Event("mm-1", "util_throughput_mismatch", now - 30, now - 5, HOST, 0,
                                                     open=True)])
    runner = Runner([Healthy(), Broken()], store.submit)
    await runner.run_once("fakehost")
    await runner.run_once("broken")
    store.flush()
    agent = Agent(config, store, runner, extras={"pushy": Component()})
    client = await aiohttp_client(create_app(config, store, agent=agent))
    return client, store, now


async def scrape(client) -> tuple[str, dict[tuple[str, tuple], float]]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await resp.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def value(samples: dict, metric: str, **labels: str) -> float | None:
    return samples.get((metric, tuple(sorted({"host": HOST, **labels}.items()))))


def gpu(index: int) -> dict[str, str]:
    return {"gpu": str(index), "uuid": {0: "GPU-aaaa", 1: "GPU-bbbb"}.get(index, "")}


async def test_promtool_accepts_the_exposition(setup, tmp_path):
    client, _, _ = setup
    text, _ = await scrape(client)
    proc = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (proc.stdout + proc.stderr).strip() == ""


def test_promtool_rejects_what_it_should():
    """Guard for the test above: promtool really lints (a counter without _total, a ms unit)."""
    bad = "# HELP x_ms latency\n# TYPE x_ms gauge\nx_ms 1\n# HELP y things\n# TYPE y counter\ny 1\n"
    proc = subprocess.run([promtool(), "check", "metrics"], input=bad, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "x_ms" in proc.stdout + proc.stderr


async def test_names_and_labels_follow_the_conventions(setup):
    client, _, _ = setup
    text, samples = await scrape(client)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M))
    assert types and all(name.startswith("infersight_") for name in types)
    for name, kind in types.items():
        assert (kind == "counter") == name.endswith("_total"), name
        base = name.removesuffix("_total")
        assert base.endswith(UNIT_SUFFIXES) or kind == "counter", f"{name}: no unit in the name"
    for name, labels in samples:
        keys = {k for k, _ in labels}
        assert keys <= ALLOWED_LABELS, (name, keys)
        assert "host" in keys, name
        for k, v in labels:
            assert k != "pid" and not (k in ("gpu",) and not v.isdigit())


def test_every_gpu_signal_has_a_metric():
    assert set(web_metrics.GPU_METRICS) == set(GPU_SIGNALS)
    names = [m[0] for m in web_metrics.GPU_METRICS.values()]
    assert len(set(names)) == len(names)
    for signal, (name, kind, factor, _) in web_metrics.GPU_METRICS.items():
        if GPU_SIGNALS[signal] == "percent":
            assert name.endswith("_ratio") and factor == 0.01, signal
        assert (kind == "counter") == name.endswith("_total")


async def test_gpu_values_are_the_latest_stored_in_base_units(setup):
    client, _, now = setup
    _, samples = await scrape(client)
    assert value(samples, "infersight_gpu_sm_utilization_ratio", **gpu(0)) == pytest.approx(0.966)
    assert value(samples, "infersight_gpu_tensor_utilization_ratio", **gpu(0)) == pytest.approx(0.938)
    assert value(samples, "infersight_gpu_power_watts", **gpu(0)) == pytest.approx(700.0)  # the newest tick
    assert value(samples, "infersight_gpu_sm_clock_hertz", **gpu(0)) == pytest.approx(1.98e9)
    assert value(samples, "infersight_gpu_memory_used_bytes", **gpu(0)) == 70 << 30
    assert value(samples, "infersight_gpu_energy_joules_total", **gpu(0)) == pytest.approx(123456.0)
    assert value(samples, "infersight_gpu_dram_bandwidth_utilization_ratio", **gpu(1)) == pytest.approx(0.901)
    assert value(samples, "infersight_gpu_last_sample_timestamp_seconds", **gpu(0)) == pytest.approx(now - 1.0)
    assert value(samples, "infersight_gpu_info", name="NVIDIA H100 80GB HBM3", **gpu(1)) == 1.0
    assert not [k for k in samples if ("gpu", "2") in k[1]], "a GPU without a recent sample is stale"


async def test_current_class_and_since(setup):
    client, _, now = setup
    _, samples = await scrape(client)
    for index, expected, since in ((0, "compute_bound", now - 25), (1, "memory_bound", now - 40)):
        flags = {k: value(samples, "infersight_gpu_class", **gpu(index), **{"class": k}) for k in CLASSES}
        assert flags == {k: (1.0 if k == expected else 0.0) for k in CLASSES}
        assert value(samples, "infersight_gpu_class_since_timestamp_seconds", **gpu(index)) == pytest.approx(since)


async def test_class_and_gap_counters_grow_only_by_new_windows(setup):
    client, store, now = setup
    _, first = await scrape(client)
    seconds = lambda s, i, k: value(s, "infersight_gpu_class_seconds_total", **gpu(i), **{"class": k})  # noqa: E731
    assert seconds(first, 0, "compute_bound") == 20 and seconds(first, 0, "idle") == 10
    assert seconds(first, 1, "memory_bound") == 30
    assert value(first, "infersight_gpu_gap_seconds_total", **gpu(0)) == 5  # host_bound with 3 requests running
    assert value(first, "infersight_gpu_gap_seconds_total", **gpu(1)) == 0
    # newer windows: a stall, host-bound with nothing in flight (not a gap), host-bound without
    # engine data (unknown counts as in flight), launch-bound with tokens flowing
    b = Batch("analysis", now)
    b.windows += windows(0, now - 5, ["stall"] * 2, {"running": 0.0, "waiting": 4.0})
    b.windows += windows(0, now - 3, ["host_bound"] * 3, {"running": 0.0, "waiting": 0.0, "gen_tokens_s": 0.0})
    b.windows += windows(0, now, ["host_bound"], {})
    b.windows += windows(0, now + 1, ["launch_bound"] * 2, {"running": None, "gen_tokens_s": 950.0})
    store.submit(b)
    store.flush()
    # retention deleting the old windows must not make a counter go down
    await store.write(retention.delete_before, now - 20)
    _, second = await scrape(client)
    assert seconds(second, 0, "compute_bound") == 20
    assert seconds(second, 0, "stall") == 2 and seconds(second, 0, "host_bound") == 5 + 3 + 1
    assert seconds(second, 0, "launch_bound") == 2
    assert value(second, "infersight_gpu_gap_seconds_total", **gpu(0)) == 5 + 2 + 1 + 2
    _, third = await scrape(client)  # nothing new: nothing added
    assert seconds(third, 0, "host_bound") == 9 and seconds(third, 1, "memory_bound") == 30


async def test_events_count_each_id_once(setup):
    client, store, now = setup
    _, first = await scrape(client)
    assert value(first, "infersight_events_total", kind="cpu_gpu_gap") == 1
    assert value(first, "infersight_events_total", kind="util_throughput_mismatch") == 1
    # the open finding is updated (same id), a new gap is found
    await store.write(q_events.upsert_events, [
        Event("mm-1", "util_throughput_mismatch", now - 30, now, HOST, 0, open=False),
        Event("gap-2", "cpu_gpu_gap", now - 10, now - 4, HOST, 0)])
    _, second = await scrape(client)
    assert value(second, "infersight_events_total", kind="cpu_gpu_gap") == 2
    assert value(second, "infersight_events_total", kind="util_throughput_mismatch") == 1


async def test_pyspy_counters_take_late_stats(setup):
    client, store, now = setup
    _, first = await scrape(client)
    assert value(first, "infersight_pyspy_samples_total") == 100
    assert value(first, "infersight_pyspy_errors_total") == 5
    # a recording ends: stats for seconds already counted arrive late, plus new seconds
    b = Batch("stacks", now, sampling_stats=[SamplingStat(int(now) - 30, 4242, 1.0, 20, 3),
                                             SamplingStat(int(now) - 2, 4242, 1.0, 19, 0)])
    store.submit(b)
    store.flush()
    _, second = await scrape(client)
    assert value(second, "infersight_pyspy_samples_total") == 100 + 20 + 19
    assert value(second, "infersight_pyspy_errors_total") == 5 + 3


async def test_agent_health_metrics(setup):
    client, store, _ = setup
    _, samples = await scrape(client)
    assert value(samples, "infersight_collector_success", collector="fakehost") == 1.0
    assert value(samples, "infersight_collector_success", collector="broken") == 0.0
    assert value(samples, "infersight_collector_failures_total", collector="broken") == 1
    assert value(samples, "infersight_collector_runs_total", collector="fakehost") == 1
    assert value(samples, "infersight_collector_duration_seconds", collector="fakehost") >= 0
    assert value(samples, "infersight_collector_rows_stored_total", collector="fakehost") == 1
    stats = store.stats()
    assert value(samples, "infersight_storage_rows_written_total") == stats.rows_written > 0
    assert value(samples, "infersight_storage_rows_dropped_total") == 0
    assert value(samples, "infersight_storage_queue_batches") == stats.queue_depth
    assert value(samples, "infersight_storage_size_bytes") == pytest.approx(store.size_bytes(), rel=0.5)
    assert value(samples, "infersight_component_healthy", component="pushy") == 0.0
    assert value(samples, "infersight_pyroscope_pushes_total", outcome="sent") == 7
    assert value(samples, "infersight_build_info", version=web_metrics._version()) == 1.0


async def test_a_read_only_store_without_agent_serves_gpu_metrics(tmp_path, aiohttp_client):
    from infersight.storage.store import Store

    path = str(tmp_path / "ro.duckdb")
    now = time.time()
    writer = Store.open(path, host=HOST)
    writer.submit(gpu_batch(now))
    writer.close()
    ro = Store.open(path, read_only=True)
    try:
        config = with_overrides(Config(), **{"agent.host": HOST})
        client = await aiohttp_client(create_app(config, ro))
        _, samples = await scrape(client)
        assert value(samples, "infersight_gpu_sm_utilization_ratio", **gpu(1)) == pytest.approx(0.995)
        assert not [k for k in samples if k[0].startswith(("infersight_collector_", "infersight_storage_rows"))]
    finally:
        ro.close()


async def test_a_gpu_written_after_a_scrape_of_the_same_step_is_counted(setup):
    """The analysis writes one step GPU by GPU; a scrape between two writes must not lose the
    second GPU's windows (they are older than the first GPU's newest window)."""
    client, store, now = setup
    await scrape(client)
    store.submit(Batch("analysis", now, windows=windows(0, now, ["stall"] * 4, {"waiting": 2.0})))
    store.flush()
    _, between = await scrape(client)
    store.submit(Batch("analysis", now, windows=windows(1, now - 10, ["stall"] * 14, {"waiting": 2.0})
                       + windows(3, now - 30, ["idle"] * 14)))  # a GPU new to the analysis
    store.flush()
    _, after = await scrape(client)
    stall = lambda s, i: value(s, "infersight_gpu_class_seconds_total", **gpu(i), **{"class": "stall"})  # noqa: E731
    assert stall(between, 0) == 4 and stall(between, 1) is None
    assert stall(after, 0) == 4 and stall(after, 1) == 14
    assert value(after, "infersight_gpu_class_seconds_total", **gpu(3), **{"class": "idle"}) == 14
    assert value(after, "infersight_gpu_gap_seconds_total", **gpu(1)) == 14


async def test_engine_mfu_mbu_and_scrape_latency(setup):
    client, _, _ = setup
    text, samples = await scrape(client)
    for index in (0, 1):   # no engine-to-GPU mapping: each GPU gets the busiest engine's figure
        assert value(samples, "infersight_engine_mfu_ratio", **gpu(index)) == pytest.approx(0.3)
        assert value(samples, "infersight_engine_mbu_ratio", **gpu(index)) == pytest.approx(1.675e12 / 3.35e12)
    assert value(samples, "infersight_engine_scrape_latency_seconds", endpoint=ENGINE_A) == pytest.approx(1.2)
    assert value(samples, "infersight_engine_scrape_latency_seconds", endpoint=ENGINE_B) == pytest.approx(0.004)
    # next to the measured DRAM bandwidth, in the same GPU label set
    assert value(samples, "infersight_gpu_dram_bandwidth_utilization_ratio", **gpu(1)) == pytest.approx(0.901)
    assert "# TYPE infersight_engine_mfu_ratio gauge" in text


async def test_no_engine_figures_without_a_known_peak_or_recent_data(tmp_path, aiohttp_client):
    from infersight.storage.store import Store

    store = Store.open(str(tmp_path / "s.duckdb"), host=HOST)
    now = time.time()
    b = Batch("t", now, gpu_info=[GpuInfo(0, "GPU-x", "NVIDIA Imaginary 1", peak_dram_bw_bytes_s=2e12)],
              gpu_samples=[GpuSample(now - 1, 0, {"util_gpu": 50.0})])
    b.engine_samples += [EngineSample(now - 1, ENGINE_A, "vllm", "m", "flops_per_gpu_per_s", 1e14),
                         EngineSample(now - 1, ENGINE_A, "vllm", "m", "read_bytes_per_gpu_per_s", 1e12),
                         EngineSample(now - 900, ENGINE_B, "vllm", "m", "scrape_latency_seconds", 3.0)]
    store.submit(b)
    store.flush()
    try:
        client = await aiohttp_client(create_app(with_overrides(Config(), **{"agent.host": HOST}), store))
        _, samples = await scrape(client)
    finally:
        store.close()
    # an unknown model: no MFU, never a guess; its MBU uses NVML's bandwidth figure
    assert not [k for k in samples if k[0] == "infersight_engine_mfu_ratio"]
    assert value(samples, "infersight_engine_mbu_ratio", gpu="0", uuid="GPU-x") == pytest.approx(0.5)
    assert not [k for k in samples if k[0] == "infersight_engine_scrape_latency_seconds"]   # 15 min old: stale


async def test_engine_figures_follow_the_endpoint_to_gpu_map(store, aiohttp_client):
    """With the daemon's endpoint -> GPU map (the analysis holds it), each GPU gets its own
    engine's figures: A serves GPU 0, B serves GPU 1."""
    from infersight.daemon.analysis.analyzer import Analyzer

    now = time.time()
    config = with_overrides(Config(), **{"agent.host": HOST})
    store.submit(gpu_batch(now))
    store.submit(Batch("engines", now, engine_samples=engine_samples(now)))
    store.flush()
    analysis = Analyzer(config, store)
    analysis.engine_map = {ENGINE_A: (0,), ENGINE_B: (1,)}
    agent = Agent(config, store, Runner([], store.submit), extras={"analysis": analysis})
    client = await aiohttp_client(create_app(config, store, agent=agent))
    _, samples = await scrape(client)
    assert value(samples, "infersight_engine_mfu_ratio", **gpu(0)) == pytest.approx(0.3)
    assert value(samples, "infersight_engine_mfu_ratio", **gpu(1)) == pytest.approx(0.2)
    assert value(samples, "infersight_engine_mbu_ratio", **gpu(0)) == pytest.approx(0.5)
    assert value(samples, "infersight_engine_mbu_ratio", **gpu(1)) is None     # B exports no byte counts
    resp = await client.get("/api/series", params={"signal": "engine_mfu", "gpu": "1", "from": str(now - 5),
                                                   "to": str(now), "step": "5"})
    assert [v for _, v in (await resp.json())["points"]] == [pytest.approx(0.2)]
