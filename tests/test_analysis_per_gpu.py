"""The analysis fed by the live collectors on a fake NVML, CPU only: other GPU processes are
named, and each GPU reads its own engine's signals.

Real pieces: the GPU collector (on :class:`FakeNvml`), process discovery on real processes,
the host collector, the engine collector scraping real processes' /metrics (endpoints found
on their listening ports), the endpoint -> GPU map, the store and the analyzer. The clock is
the test's: one tick is one second of Unix time, the GPU collector's monotonic clock moves
with it, and the engine collector reads it as the scrape time. The programs' token counters
grow by a fixed amount per scrape (tests/programs/tiny_engine.py), so the token rate is
known exactly.
"""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import psutil

from infersight.daemon.analysis.analyzer import Analyzer
from infersight.daemon.analysis.seconds import EngineScope, build_seconds
from infersight.daemon.collectors import engine_gpu_map
from infersight.daemon.collectors.engines import EngineCollector
from infersight.daemon.collectors.gpu import GpuCollector
from infersight.daemon.collectors.host import HostCollector
from infersight.daemon.config.load import (
    Config,
    EnginesCollectorConfig,
    GpuCollectorConfig,
    HostCollectorConfig,
    TargetsConfig,
    with_overrides,
)
from infersight.daemon.gpu.fake_nvml import FakeGpu, FakeNvml, gpm_values
from infersight.daemon.gpu.nvml import ProcessUtil
from infersight.daemon.stacks.discovery import Discovery
from infersight.storage import events as q_events
from infersight.storage.model import Batch, EngineSample, GpuSample

PROGRAMS = Path(__file__).parent / "programs"
GIB = 1 << 30
MEMORY_BOUND = gpm_values(sm=82.0, occupancy=40.0, tensor=3.0, dram=88.0)   # decode-like (DESIGN.md GEMV)


class Rig:
    """The collectors of one host, ticked one second at a time into ``store``."""

    def __init__(self, store, gpus: list[FakeGpu], tag: str, autodiscover: bool = True) -> None:
        self.store = store
        self.t0 = float(int(time.time()) - 600)
        self.i = 0
        self.nvml = FakeNvml(gpus)
        self.gpu = GpuCollector(GpuCollectorConfig(fast_interval_s=1.0, slow_interval_s=1.0, dcgm_url="off",
                                                   events=False), "testhost", nvml=self.nvml, clock=self.mono)
        self.discovery = Discovery(TargetsConfig(cmdline_patterns=(tag,)), "testhost", nvml=self.gpu.pid_gpus)
        self.targets: list = []
        self.host = HostCollector(HostCollectorConfig(), "testhost", lambda: self.targets)
        self.engines = EngineCollector(EnginesCollectorConfig(interval_s=1.0, autodiscover=autodiscover), "testhost",
                                       clock=self.now,
                                       engine_pids=lambda: [t.pid for t in self.targets], discover_every_s=1.0)
        self.map = engine_gpu_map([self.gpu, self.engines, _Stacks(self)])

    def now(self) -> float:
        return self.t0 + self.i

    def mono(self) -> float:
        return 1000.0 + self.i

    async def tick(self) -> None:
        now = self.now()
        self._submit(await self.gpu.collect(now))
        self.targets = self.discovery.scan()
        self._submit(Batch("stacks", now, targets=list(self.targets)))
        self._submit(await self.engines.collect(now))
        self._submit(await self.host.collect(now))
        self.i += 1

    def _submit(self, batch: Batch) -> None:
        while not self.store.submit(batch):
            self.store.flush()

    async def analyse(self) -> list[dict]:
        """One analyzer tick over everything collected (its clock: lag_s after the last tick)."""
        self.store.flush()
        config = with_overrides(Config(), **{"agent.host": "testhost"})
        analyzer = Analyzer(config, self.store, clock=lambda: self.now() + config.analysis.lag_s,
                            endpoint_gpus=self.map)
        await analyzer.tick()
        assert analyzer.last_error is None, analyzer.last_error
        self.analyzer = analyzer
        return await self.store.read(q_events.events, self.t0, self.now() + 60)

    async def close(self) -> None:
        await self.engines.close()
        await self.gpu.close()


class _Stacks:
    """What the registry link reads from the stacks collector: its current targets."""

    name = "stacks"

    def __init__(self, rig: Rig) -> None:
        self.rig = rig

    def targets(self) -> list:
        return list(self.rig.targets)


def _engine(spawn, tag: str, tokens_per_s: int, running: int) -> tuple[int, int]:
    proc = spawn([str(PROGRAMS / "tiny_engine.py"), "0", str(tokens_per_s), str(running), "1", "vllm", "serve", tag])
    return proc.pid, json.loads(proc.first_line)["core"]


async def test_a_neighbour_on_the_gpu_is_named_live_with_its_memory_and_sm_share(spawn, store) -> None:
    tag = f"isight-{uuid.uuid4().hex[:8]}"
    api, core = _engine(spawn, tag, tokens_per_s=16000, running=64)
    neighbour = spawn([str(PROGRAMS / "idle.py"), "120", f"train-{uuid.uuid4().hex[:8]}"])
    gpu = FakeGpu(uuid="GPU-0", util=(100.0, 60.0), gpm=dict(MEMORY_BOUND), processes=[(core, 20 * GIB)])
    rig = Rig(store, [gpu], tag)
    try:
        for _ in range(25):                      # the engine alone: the baseline
            await rig.tick()
        # another process opens a context on the GPU and runs GEMMs: same tokens, more GPU work
        gpu.processes = [(core, 20 * GIB), (neighbour.pid, 12 * GIB)]
        gpu.gpm = gpm_values(sm=93.0, occupancy=45.0, tensor=55.0, dram=88.0)
        for _ in range(15):
            gpu.process_util = [ProcessUtil(neighbour.pid, int(rig.mono() * 1e6), 45.0, 20.0),
                                ProcessUtil(core, int(rig.mono() * 1e6), 48.0, 60.0)]
            await rig.tick()
        events = await rig.analyse()
    finally:
        await rig.close()
    roles = {t.pid: t.role for t in rig.targets}
    assert roles[neighbour.pid] == "other_gpu_process" and roles[core] == "engine_core" and roles[api] == "api_server"
    # NVML gives the neighbour an SM share: a noisy_neighbor finding, compared with the
    # engine's episode alone at the same load
    found = [e for e in events if e["kind"] == "noisy_neighbor"]
    assert found, [(e["kind"], e["summary"]) for e in events]
    (named,) = found[0]["evidence"]["foreign_processes"]
    assert named["pid"] == neighbour.pid and named["role"] == "other_gpu_process"
    assert named["used_memory_bytes"] == 12 * GIB and named["sm_util"] == 45.0
    assert f"pid {neighbour.pid} idle.py (12.0 GiB, 45% SM)" in found[0]["summary"]
    assert found[0]["evidence"]["comparison"] is not None, found[0]["summary"]
    # the finding covers the neighbour's seconds, not the engine's baseline
    assert found[0]["start"] >= rig.t0 + 25


async def test_two_engines_on_two_gpus_get_their_own_engine_signals(spawn, store) -> None:
    tag = f"isight-{uuid.uuid4().hex[:8]}"
    api_a, core_a = _engine(spawn, tag, tokens_per_s=1000, running=4)
    api_b, core_b = _engine(spawn, tag, tokens_per_s=3000, running=12)
    gpus = [FakeGpu(uuid=f"GPU-{i}", util=(100.0, 60.0), gpm=dict(MEMORY_BOUND), pci_bus_id=f"00000000:1{i}:00.0",
                    processes=[(core, 20 * GIB)]) for i, core in enumerate((core_a, core_b))]
    rig = Rig(store, gpus, tag)
    try:
        for _ in range(8):
            await rig.tick()
        # a third endpoint nobody serves from this host's GPUs (a remote engine, say): unmapped
        rig.engines.add_endpoint("http://198.51.100.7:8000/metrics", origin="config")
        await rig.analyse()
        mapping = await rig.map()
        windows = await store.read(q_events.windows, rig.t0, rig.now() + 60)
    finally:
        await rig.close()
    assert {t.pid: t.gpus for t in rig.targets if t.pid in (api_a, api_b)} == {api_a: (0,), api_b: (1,)}
    urls = {ep["pids"][0]: ep["url"] for ep in rig.engines.endpoint_status() if ep["pids"]}
    assert mapping == {urls[api_a]: (0,), urls[api_b]: (1,), "http://198.51.100.7:8000/metrics": ()}
    per_gpu = {g: [w["features"] for w in windows if w["gpu"] == g and w["features"].get("gen_tokens_s")]
               for g in (0, 1)}
    assert len(per_gpu[0]) >= 4 and len(per_gpu[1]) >= 4, windows
    assert {f["gen_tokens_s"] for f in per_gpu[0]} == {1000.0} and {f["running"] for f in per_gpu[0]} == {4.0}
    assert {f["gen_tokens_s"] for f in per_gpu[1]} == {3000.0} and {f["running"] for f in per_gpu[1]} == {12.0}


async def test_an_endpoint_configured_by_url_is_matched_by_its_port(spawn, store) -> None:
    tag = f"isight-{uuid.uuid4().hex[:8]}"
    api, core = _engine(spawn, tag, tokens_per_s=500, running=2)
    rig = Rig(store, [FakeGpu(uuid="GPU-0"), FakeGpu(uuid="GPU-1", processes=[(core, GIB)])], tag,
              autodiscover=False)
    (port,) = [c.laddr.port for c in psutil.Process(api).net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    rig.engines.add_endpoint(f"localhost:{port}", origin="config")     # spelt unlike what discovery would find
    try:
        for _ in range(3):
            await rig.tick()
        mapping = await rig.map()
    finally:
        await rig.close()
    assert mapping == {f"http://localhost:{port}/metrics": (1,)}


def test_unmapped_endpoints_count_only_where_no_known_engine_runs(store) -> None:
    t0 = float(int(time.time()) - 100)
    batch = Batch("fixture", t0)
    rates = {"http://127.0.0.1:8000/metrics": 1000.0, "http://127.0.0.1:8001/metrics": 3000.0,
             "http://198.51.100.7:8000/metrics": 500.0}
    for i in range(4):
        for gpu in (0, 1, 2):
            batch.gpu_samples.append(GpuSample(t0 + i + 0.5, gpu, {"util_gpu": 100.0, "sm_util": 80.0}))
        for url, rate in rates.items():
            batch.engine_samples.append(EngineSample(t0 + i + 0.5, url, "vllm", "m", "generation_tokens_per_s", rate))
    store.submit(batch)
    store.flush()
    mapping = {"http://127.0.0.1:8000/metrics": (0,), "http://127.0.0.1:8001/metrics": (1,),
               "http://198.51.100.7:8000/metrics": ()}
    cfg = Config().analysis

    def tokens(gpu: int, endpoint_gpus) -> set[float]:
        scope = EngineScope.for_gpu(gpu, endpoint_gpus)
        return {s.gen_tokens_s for s in store.read_sync(build_seconds, gpu, int(t0), int(t0) + 4, cfg, scope)}

    # each GPU its own engine; a GPU no engine maps to gets the endpoints nobody claims
    assert (tokens(0, mapping), tokens(1, mapping), tokens(2, mapping)) == ({1000.0}, {3000.0}, {500.0})
    # nothing mapped (replay, a host whose engine could not be tied to a process): the host's sum
    assert tokens(0, None) == tokens(2, {url: () for url in mapping}) == {4500.0}
