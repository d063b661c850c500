"""``GET /metrics``: the agent's state in the Prometheus text format (version 0.0.4).

The handler reads the file once per scrape on a reader thread (storage/metrics_queries.py:
bounded gauges, incremental counters), then a custom prometheus_client collector turns that
snapshot and the agent's in-memory health into metric families on a registry built for the
request. Nothing global is registered, so several apps in one process (tests) never clash.

Names follow the Prometheus conventions: base units in the name (``_seconds``, ``_bytes``,
``_watts``, ``_celsius``, ``_hertz``, ``_ratio`` for 0-1 shares), ``_total`` on counters.
Labels are bounded: ``host``, ``gpu`` and ``uuid``, ``class`` (the seven classes),
``collector`` and ``component`` (fixed by code), ``kind`` (event kinds), ``endpoint`` (an
engine's /metrics URL: the configured and discovered ones). Never PIDs, thread or frame names.

Engine-derived figures sit next to the GPU's own: ``infersight_engine_mfu_ratio`` and
``infersight_engine_mbu_ratio`` per GPU (the engine's estimate of its FLOPs and bytes per GPU
over the model's peaks, web/engine_roof.py) beside GPM's DRAM bandwidth utilization, and
``infersight_engine_scrape_latency_seconds`` per endpoint (the API server's lag).
"""
from __future__ import annotations

import asyncio
import importlib.metadata
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from infersight.storage import metrics_queries as mq
from infersight.storage import series
from infersight.storage.model import CLASSES
from infersight.web import engine_roof
from infersight.web.keys import AGENT_KEY, CONFIG_KEY, STORE_KEY

# GPU signal -> (metric name, "gauge" | "counter", factor to the base unit, help)
GPU_METRICS: dict[str, tuple[str, str, float, str]] = {
    "util_gpu": ("infersight_gpu_utilization_ratio", "gauge", 0.01,
                 "NVML utilization.gpu: share of time any kernel ran (not how much of the GPU it used)"),
    "util_mem": ("infersight_gpu_memory_utilization_ratio", "gauge", 0.01,
                 "NVML utilization.memory: share of time device memory was read or written"),
    "sm_util": ("infersight_gpu_sm_utilization_ratio", "gauge", 0.01,
                "Share of SMs busy (NVML GPM SM_UTIL, or DCGM SM_ACTIVE)"),
    "sm_occupancy": ("infersight_gpu_sm_occupancy_ratio", "gauge", 0.01,
                     "Resident warps over the SMs' maximum (GPM SM_OCCUPANCY, or DCGM SM_OCCUPANCY)"),
    "tensor_util": ("infersight_gpu_tensor_utilization_ratio", "gauge", 0.01,
                    "Tensor core activity (GPM ANY_TENSOR_UTIL, or DCGM PIPE_TENSOR_ACTIVE)"),
    "dram_bw_util": ("infersight_gpu_dram_bandwidth_utilization_ratio", "gauge", 0.01,
                     "Device memory bandwidth used over its peak (GPM DRAM_BW_UTIL, or DCGM DRAM_ACTIVE)"),
    "graphics_util": ("infersight_gpu_graphics_utilization_ratio", "gauge", 0.01,
                      "Graphics engine activity (GPM GRAPHICS_UTIL)"),
    "pcie_tx_bytes_s": ("infersight_gpu_pcie_transmit_bytes_per_second", "gauge", 1.0, "PCIe bytes sent per second"),
    "pcie_rx_bytes_s": ("infersight_gpu_pcie_receive_bytes_per_second", "gauge", 1.0,
                        "PCIe bytes received per second"),
    "nvlink_tx_bytes_s": ("infersight_gpu_nvlink_transmit_bytes_per_second", "gauge", 1.0,
                          "NVLink bytes sent per second"),
    "nvlink_rx_bytes_s": ("infersight_gpu_nvlink_receive_bytes_per_second", "gauge", 1.0,
                          "NVLink bytes received per second"),
    "power_w": ("infersight_gpu_power_watts", "gauge", 1.0, "Board power draw"),
    "sm_clock_mhz": ("infersight_gpu_sm_clock_hertz", "gauge", 1e6, "SM clock"),
    "clocks_event_reasons": ("infersight_gpu_clocks_event_reasons", "gauge", 1.0,
                             "NVML clocks event reasons bitmask (why clocks are held down; 0 is none)"),
    "mem_used_bytes": ("infersight_gpu_memory_used_bytes", "gauge", 1.0, "Device memory in use"),
    "mem_total_bytes": ("infersight_gpu_memory_total_bytes", "gauge", 1.0, "Device memory in total"),
    "temperature_c": ("infersight_gpu_temperature_celsius", "gauge", 1.0, "GPU core temperature"),
    "energy_j": ("infersight_gpu_energy_joules_total", "counter", 1.0,
                 "Energy used since the driver was loaded (NVML total energy consumption)"),
    "ecc_errors_uncorrected": ("infersight_gpu_ecc_uncorrected_errors_total", "counter", 1.0,
                               "Uncorrected (double-bit) ECC errors since the driver was loaded"),
    "retired_pages": ("infersight_gpu_retired_pages", "gauge", 1.0,
                      "Retired pages (before Ampere) or remapped rows (Ampere and newer)"),
}

GPU_LABELS = ("host", "gpu", "uuid")
# engine signals read for /metrics: the MFU/MBU numerators and the scrape latency
ENGINE_LATEST = tuple(sorted({s for parts in engine_roof.SIGNALS.values() for s in parts} | {"scrape_latency_seconds"}))


@dataclass
class EngineSnapshot:
    """What /metrics reads of the engine data: GPU facts (series.gpus) and the newest values."""

    gpus: list[dict[str, Any]] = field(default_factory=list)
    latest: list[tuple[str, str, float, float]] = field(default_factory=list)


def _engine_snapshot(cur, now: float) -> EngineSnapshot:
    return EngineSnapshot(series.gpus(cur), series.engine_latest(cur, ENGINE_LATEST, now - mq.LATEST_HORIZON_S))


class MetricsState:
    """Per-app state: the incremental counters and a lock so two scrapes never refresh at once."""

    def __init__(self) -> None:
        self.counters = mq.Counters()
        self.lock = asyncio.Lock()


METRICS_STATE_KEY = web.AppKey("metrics_state", MetricsState)


def _version() -> str:
    try:
        return importlib.metadata.version("infersight")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class AgentCollector:
    """A prometheus_client custom collector over one snapshot; ``collect()`` yields families."""

    def __init__(self, host: str, db: mq.DbSnapshot, agent: Any, store: Any,
                 engine: EngineSnapshot | None = None) -> None:
        self.host, self.db, self.agent, self.store = host, db, agent, store
        self.engine = engine or EngineSnapshot()

    def collect(self) -> Iterator[Metric]:
        yield from self._gpu()
        yield from self._engine()
        yield from self._classes()
        yield from self._collectors()
        yield from self._storage()
        yield from self._components()
        yield from self._agent()

    # -- GPUs ------------------------------------------------------------------------------
    def _gpu_labels(self, gpu: int) -> list[str]:
        info = self.db.gpus.get(gpu) or {}
        return [self.host, str(gpu), info.get("uuid") or ""]

    def _gpu(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for signal, (name, kind, _, doc) in GPU_METRICS.items():
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            families[signal] = cls(name, doc, labels=GPU_LABELS)
        seen = GaugeMetricFamily("infersight_gpu_last_sample_timestamp_seconds",
                                 "Time of the newest sample of this GPU (Unix seconds)", labels=GPU_LABELS)
        for latest in self.db.latest:
            labels = self._gpu_labels(latest.gpu)
            seen.add_metric(labels, latest.t)
            for signal, value in latest.values.items():
                if signal in families:
                    families[signal].add_metric(labels, value * GPU_METRICS[signal][2])
        yield from (f for f in families.values() if f.samples)
        yield seen
        info = GaugeMetricFamily("infersight_gpu_info", "Static facts of each GPU (value 1)",
                                 labels=GPU_LABELS + ("name",))
        for gpu, facts in sorted(self.db.gpus.items()):
            info.add_metric(self._gpu_labels(gpu) + [facts.get("name") or ""], 1.0)
        yield info

    def _engine(self) -> Iterator[Metric]:
        docs = {
            "engine_mfu": ("infersight_engine_mfu_ratio", "Model FLOPs utilization: the engine's own estimate of "
                           "its FLOP/s per GPU (vLLM/SGLang estimated_flops_per_gpu, newest scrape, busiest engine) "
                           "over the GPU model's bf16 dense datasheet peak"),
            "engine_mbu": ("infersight_engine_mbu_ratio", "Memory bandwidth utilization: the engine's own estimate "
                           "of bytes read and written per GPU per second over the GPU's peak DRAM bandwidth; "
                           "compare with infersight_gpu_dram_bandwidth_utilization_ratio (measured)"),
        }
        ratios = engine_roof.latest_ratios(self.engine.gpus, self.engine.latest, engine_roof.endpoint_map(self.agent))
        for signal, (name, doc) in docs.items():
            family = GaugeMetricFamily(name, doc, labels=GPU_LABELS)
            for gpu, value in sorted(ratios.get(signal, {}).items()):
                family.add_metric(self._gpu_labels(gpu), value)
            if family.samples:
                yield family
        latency = GaugeMetricFamily("infersight_engine_scrape_latency_seconds", "Time from the agent's request to "
                                    "the first byte of the engine's /metrics answer, newest scrape: the engine API "
                                    "server's event-loop lag", labels=("host", "endpoint"))
        for url, signal, _, value in self.engine.latest:
            if signal == "scrape_latency_seconds":
                latency.add_metric([self.host, url], value)
        if latency.samples:
            yield latency

    def _classes(self) -> Iterator[Metric]:
        labels = GPU_LABELS + ("class",)
        current = GaugeMetricFamily("infersight_gpu_class", "1 for the GPU's current bottleneck class, 0 for the "
                                    "others (GPUs whose newest analysis window is recent)", labels=labels)
        since = GaugeMetricFamily("infersight_gpu_class_since_timestamp_seconds",
                                  "Since when the current class holds (Unix seconds)", labels=GPU_LABELS)
        for c in self.db.classes:
            base = self._gpu_labels(c.gpu)
            for klass in CLASSES:
                current.add_metric(base + [klass], 1.0 if klass == c.klass else 0.0)
            since.add_metric(base, c.since)
        yield current
        yield since
        counters = self.db.counters
        seconds = CounterMetricFamily("infersight_gpu_class_seconds", "Seconds analysed per bottleneck class "
                                      "(since the agent started, counting the windows stored then)", labels=labels)
        for (gpu, klass), value in sorted(counters.class_seconds.items()):
            seconds.add_metric(self._gpu_labels(gpu) + [klass], value)
        yield seconds
        gap = CounterMetricFamily("infersight_gpu_gap_seconds", "Seconds the GPU was under-used while work was in "
                                  "flight: classes host_bound, launch_bound and stall (CPU-GPU gaps)",
                                  labels=GPU_LABELS)
        for gpu, value in sorted(counters.gap_seconds.items()):
            gap.add_metric(self._gpu_labels(gpu), value)
        yield gap
        events = CounterMetricFamily("infersight_events", "Findings written, by kind (each counted once, when "
                                     "first seen)", labels=("host", "kind"))
        for kind, n in sorted(counters.events.items()):
            events.add_metric([self.host, kind], n)
        yield events
        yield _counter("infersight_pyspy_samples", "Stack samples py-spy took over every target", self.host,
                       counters.pyspy_samples)
        yield _counter("infersight_pyspy_errors", "Samples py-spy failed to take (it reports them as errors)",
                       self.host, counters.pyspy_errors)

    # -- agent health ------------------------------------------------------------------------
    def _collectors(self) -> Iterator[Metric]:
        if self.agent is None:
            return
        labels = ("host", "collector")
        ok = GaugeMetricFamily("infersight_collector_success", "1 when the collector's last run succeeded, 0 when it "
                               "failed (absent before its first run)", labels=labels)
        no_data = GaugeMetricFamily("infersight_collector_no_data", "1 when the last successful run found nothing "
                                    "to collect (not a failure)", labels=labels)
        duration = GaugeMetricFamily("infersight_collector_duration_seconds", "Duration of the collector's last run",
                                     labels=labels)
        last = GaugeMetricFamily("infersight_collector_last_success_timestamp_seconds",
                                 "Time of the collector's last successful run (Unix seconds)", labels=labels)
        runs = CounterMetricFamily("infersight_collector_runs", "Runs of the collector", labels=labels)
        failures = CounterMetricFamily("infersight_collector_failures", "Runs that failed as a whole", labels=labels)
        item_errors = CounterMetricFamily("infersight_collector_item_errors", "Problems inside successful runs "
                                          "(one target or field failed)", labels=labels)
        dropped = CounterMetricFamily("infersight_collector_batches_dropped", "Batches of this collector the full "
                                      "storage queue dropped", labels=labels)
        stored = CounterMetricFamily("infersight_collector_rows_stored", "Records of this collector written to "
                                     "the store", labels=labels)
        by_collector = self.store.stats().by_collector
        for name, st in sorted(self.agent.runner.status.items()):
            lv = [self.host, name]
            if st.ok is not None:
                ok.add_metric(lv, 1.0 if st.ok else 0.0)
                no_data.add_metric(lv, 1.0 if st.ok and st.no_data else 0.0)
            if st.duration_s is not None:
                duration.add_metric(lv, st.duration_s)
            if st.last_success is not None:
                last.add_metric(lv, st.last_success)
            runs.add_metric(lv, st.runs)
            failures.add_metric(lv, st.failures)
            item_errors.add_metric(lv, st.errors_reported)
            dropped.add_metric(lv, st.batches_dropped)
            stored.add_metric(lv, by_collector.get(name, 0))
        yield from (ok, no_data, duration, last, runs, failures, item_errors, dropped, stored)

    def _storage(self) -> Iterator[Metric]:
        size = GaugeMetricFamily("infersight_storage_size_bytes", "Bytes on disk of the DuckDB file and its WAL",
                                 labels=("host",))
        size.add_metric([self.host], self.store.size_bytes())
        yield size
        if self.store.read_only:
            return
        s = self.store.stats()
        for name, doc, value in (
                ("infersight_storage_rows_written", "Records written to the store", s.rows_written),
                ("infersight_storage_rows_dropped", "Records dropped (queue full, or refused by the schema)",
                 s.rows_dropped),
                ("infersight_storage_batches_written", "Collector batches written", s.batches_written),
                ("infersight_storage_batches_dropped", "Collector batches dropped", s.batches_dropped),
                ("infersight_storage_batches_rejected", "Batches dropped because the schema refused their data",
                 s.batches_rejected),
                ("infersight_storage_flush_failures", "Flushes that failed (disk full, I/O error)",
                 s.flush_failures)):
            yield _counter(name, doc, self.host, value)
        for name, doc, value in (
                ("infersight_storage_queue_batches", "Batches waiting for the writer (queued and retained)",
                 s.queue_depth),
                ("infersight_storage_last_flush_duration_seconds", "Duration of the writer's last flush",
                 s.last_flush_s),
                ("infersight_storage_writer_up", "1 while the writer thread runs", 1.0 if self.store.writer_alive
                 else 0.0)):
            yield _gauge(name, doc, self.host, value)

    def _components(self) -> Iterator[Metric]:
        if self.agent is None:
            return
        healthy = GaugeMetricFamily("infersight_component_healthy", "1 when the component's last step succeeded",
                                    labels=("host", "component"))
        extra: dict[str, Metric] = {}
        for name, component in sorted(self.agent.extras.items()):
            if hasattr(component, "health"):
                healthy.add_metric([self.host, name], 1.0 if component.health().get("ok", True) else 0.0)
            for metric, kind, doc, labels, value in (component.metrics() if hasattr(component, "metrics") else ()):
                family = extra.get(metric)
                if family is None:
                    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                    family = extra[metric] = cls(metric, doc, labels=("host",) + tuple(labels))
                family.add_metric([self.host, *labels.values()], value)
        yield healthy
        yield from extra.values()

    def _agent(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("infersight_build_info", "The agent's version (value 1)", labels=("host", "version"))
        info.add_metric([self.host, _version()], 1.0)
        yield info
        if self.agent is not None:
            yield _gauge("infersight_agent_start_time_seconds", "When the agent started (Unix seconds)", self.host,
                         self.agent.started_at)


def _counter(name: str, doc: str, host: str, value: float) -> Metric:
    family = CounterMetricFamily(name, doc, labels=("host",))
    family.add_metric([host], value)
    return family


def _gauge(name: str, doc: str, host: str, value: float) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=("host",))
    family.add_metric([host], value)
    return family


async def metrics(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    state = request.app[METRICS_STATE_KEY]
    now = time.time()
    async with state.lock:
        db = await store.read(mq.snapshot, now, state.counters)
    engine = await store.read(_engine_snapshot, now)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(request.app[CONFIG_KEY].host, db, request.app[AGENT_KEY], store, engine))
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


def add_routes(app: web.Application) -> None:
    app[METRICS_STATE_KEY] = MetricsState()
    app.router.add_get("/metrics", metrics)
