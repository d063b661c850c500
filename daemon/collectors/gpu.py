"""The GPU collector: NVML and NVML GPM per GPU, per-process GPU use, XID events, and
dcgm-exporter's profiling fields for GPUs without GPM.

One collector, one cadence: the runner calls :meth:`GpuCollector.collect` every
``fast_interval_s``; every tick reads utilization, GPM (all but graphics_util), power, SM
clock and clock event reasons, and the first tick after ``slow_interval_s`` has passed also
reads memory, temperature, ECC, retired pages, processes and GPM graphics_util (its
computation alone costs NVML more CPU than the rest of a fast tick: gpu/device.py), and
the energy counter every ``energy_interval_s`` (about 4 ms of NVML CPU per read). One
collector rather than two because both cadences share the NVML handles, the GPM buffers
and the lost-GPU state, and a slow tick costs one thread hop instead of two.

Each tick runs in one worker thread (``asyncio.to_thread``). Per GPU and tick it emits one
GpuSample with source "gpm" (NVML + GPM figures) or "nvml" (no GPM); dcgm-exporter figures
come as separate samples with source "dcgm". A GPU that fails with GpuLost is marked,
reported as an open ``gpu_lost`` event, re-opened by UUID with exponential backoff (1 s to
60 s), and the event is closed when it is back. No NVML or no GPU is ``Batch.no_data``,
re-checked every few minutes.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any, Callable

from infersight.daemon.config.load import GpuCollectorConfig
from infersight.daemon.gpu.dcgm import DcgmReading, DcgmScraper, to_samples
from infersight.daemon.gpu.device import (
    Device,
    Problems,
    close_device,
    mig_gpu_id,
    open_device,
    open_instances,
    probe,
    read_fast,
    read_processes,
    read_slow,
)
from infersight.daemon.gpu.events import NvmlEventListener
from infersight.daemon.gpu.nvml import GpuLost, Nvml, NvmlError, NvmlUnavailable
from infersight.storage.model import Batch, Event, GpuSample

log = logging.getLogger(__name__)

LOST_BACKOFF_MAX_S = 60.0
INIT_RETRY_S = (10.0, 300.0)   # first and longest wait before looking for NVML / GPUs again


class GpuCollector:
    """Samples every NVIDIA GPU of the host. ``nvml`` defaults to the real NVML seam."""

    name = "gpu"

    def __init__(self, config: GpuCollectorConfig, host: str, nvml: Any = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.host = host
        self.interval_s = config.fast_interval_s
        self._nvml = nvml if nvml is not None else Nvml()
        self._clock = clock
        self._problems = Problems(log)
        self._devices: list[Device] = []
        self._open = False
        self._state, self._detail, self._driver = "starting", "not initialised yet", ""
        self._retry_at, self._retry_wait = 0.0, INIT_RETRY_S[0]
        self._next_slow = 0.0
        self._events: NvmlEventListener | None = None
        self._dcgm = DcgmScraper(config.dcgm_url, config.dcgm_interval_s, log) if config.dcgm_url != "off" else None
        self._dcgm_fed: set[int] = set()   # GPUs the last successful scrape gave figures for
        self._pid_gpus: dict[int, tuple[int, ...]] = {}
        self._lock = asyncio.Lock()
        self.tick_cpu_s = {"fast": [0, 0.0], "slow": [0, 0.0]}   # kind -> [ticks, thread CPU seconds]

    # -- protocol --------------------------------------------------------------------------
    async def collect(self, now: float) -> Batch:
        async with self._lock:
            batch = await asyncio.to_thread(self._tick, now)
            if self._dcgm is not None and self._open:
                wanted = self._dcgm_gpus()
                if wanted:
                    readings = await self._dcgm.poll(self._clock())
                    if readings is not None:
                        samples = to_samples(readings, now, lambda r: self._dcgm_gpu(r, wanted))
                        self._dcgm_fed = {s.gpu for s in samples}
                        batch.gpu_samples.extend(samples)
                    batch.errors.extend(self._dcgm.take_errors())
            return batch

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._shutdown)

    # -- what others read ------------------------------------------------------------------
    def compute_pids(self) -> set[int]:
        """PIDs that held a CUDA context at the last slow tick (for process discovery)."""
        return set(self._pid_gpus)

    def pid_gpus(self) -> dict[int, tuple[int, ...]]:
        """pid -> GPU ids (MIG instances by their own id) it held a context on at the last slow tick."""
        return dict(self._pid_gpus)

    def status(self) -> dict[str, Any]:
        """Health of the collector and of each GPU, for /api/health and ``infersight check``."""
        now_mono = self._clock()
        gpus = []
        for dev in self._devices:
            for d in [dev, *dev.instances]:
                gpus.append({
                    "gpu": d.gpu, "uuid": d.uuid, "name": d.info.name if d.info else "",
                    "parent_gpu": d.parent.gpu if d.parent else None,
                    "state": "lost" if dev.lost_since is not None else "ok",
                    "lost_since": dev.lost_since, "last_error": dev.lost_error or None,
                    "retry_in_s": round(max(0.0, dev.retry_at - now_mono), 1) if dev.lost_since is not None else None,
                    "gpm": d.gpm, "source": self._source_of(d), "unsupported": self._problems.unsupported(d.gpu)})
        fast, slow = self.tick_cpu_s["fast"], self.tick_cpu_s["slow"]
        return {
            "state": self._state, "detail": self._detail, "driver": self._driver, "gpus": gpus,
            "events": {"running": bool(self._events and self._events.running),
                       "gpus": list(self._events.registered) if self._events else []},
            "dcgm": self._dcgm.status() if self._dcgm else None,
            "tick_cpu_ms": {"fast": round(1000 * fast[1] / fast[0], 3) if fast[0] else None,
                            "slow": round(1000 * slow[1] / slow[0], 3) if slow[0] else None},
        }

    # -- the tick (worker thread) ----------------------------------------------------------
    def _tick(self, now: float) -> Batch:
        cpu0 = time.thread_time()
        mono = self._clock()
        batch = Batch(collector=self.name, t=now)
        if not self._open and mono >= self._retry_at:
            self._start(now, mono, batch)
        if not self._open:
            batch.no_data = self._detail
            batch.errors.extend(self._problems.take())
            return batch
        slow = mono >= self._next_slow
        if slow:  # half a tick of slack so scheduler jitter does not push it to the next tick
            self._next_slow = mono + self.config.slow_interval_s - self.interval_s / 2
        pid_gpus: dict[int, set[int]] = defaultdict(set)
        restart_events = False
        for i, dev in enumerate(self._devices):
            try:
                if dev.lost_since is not None:
                    if mono < dev.retry_at or not self._reopen(i, now, mono, batch):
                        continue
                    dev, restart_events = self._devices[i], True
                self._sample(dev, now, slow, batch, pid_gpus)
            except GpuLost as exc:
                self._mark_lost(dev, now, mono, exc, batch)
            except NvmlUnavailable as exc:
                self._reset(mono, f"NVML stopped working: {exc}", batch)
                batch.no_data = self._detail
                return batch
        if restart_events:
            self._start_events()
        if self._events is not None:
            batch.events.extend(self._events.drain())
            batch.errors.extend(self._events.take_problems())
        if slow:
            self._pid_gpus = {pid: tuple(sorted(g)) for pid, g in pid_gpus.items()}
        batch.errors.extend(self._problems.take())
        stat = self.tick_cpu_s["slow" if slow else "fast"]
        stat[0] += 1
        stat[1] += time.thread_time() - cpu0
        return batch

    def _sample(self, dev: Device, now: float, slow: bool, batch: Batch, pid_gpus: dict[int, set[int]]) -> None:
        if slow and dev.info is not None and dev.info.mig_mode:
            self._refresh_instances(dev, batch)
        for d in [dev, *dev.instances]:
            values = read_fast(self._nvml, d, self._problems, self._clock)
            if slow:
                values.update(read_slow(self._nvml, d, self._problems, self._clock,
                                        self.config.energy_interval_s - self.interval_s / 2))
                # a MIG parent's processes are listed by its instances
                if not (d is dev and dev.instances):
                    for p in read_processes(self._nvml, d, self._problems, now):
                        batch.gpu_processes.append(p)
                        pid_gpus[p.pid].add(d.gpu)
            if values:
                source = "gpm" if d.gpm and any(s in values for s, _, _ in d.gpm_signals) else "nvml"
                batch.gpu_samples.append(GpuSample(t=now, gpu=d.gpu, values=values, source=source))

    def _refresh_instances(self, dev: Device, batch: Batch) -> None:
        """Re-list MIG instances (they can be created and destroyed at any time)."""
        pairs = probe(self._nvml.mig_instances, self._problems, dev.gpu, "MIG instances", dev.handle)
        if pairs is None or {gi for gi, _ in pairs} == {d.gpu_instance for d in dev.instances}:
            return
        for inst in dev.instances:
            close_device(self._nvml, inst)
        dev.instances = open_instances(self._nvml, dev, self._problems, self.config.fast_graphics_util)
        batch.gpu_info.extend(d.info for d in dev.instances if d.info)
        log.info("GPU %d: MIG instances are now %s", dev.gpu, sorted(d.gpu for d in dev.instances))

    # -- opening, losing, re-opening -------------------------------------------------------
    def _start(self, now: float, mono: float, batch: Batch) -> None:
        nvml = self._nvml
        try:
            nvml.init()
            count = nvml.device_count()
        except NvmlError as exc:
            self._no_data(mono, "no_nvml", f"NVML is not available ({exc}): no NVIDIA driver or GPU here")
            return
        if count == 0:
            self._shutdown_nvml()
            self._no_data(mono, "no_gpu", "NVML found no NVIDIA GPU")
            return
        self._open = True   # from here on, _reset() undoes what was done
        try:
            self._driver = nvml.driver_version()
        except NvmlError as exc:
            self._problems.once(("driver",), f"cannot read the driver version ({exc})")
        self._devices = []
        for index in range(count):
            try:
                dev = open_device(nvml, index, self._driver, self.config.gpm, self._problems,
                                  fast_graphics_util=self.config.fast_graphics_util)
            except NvmlUnavailable as exc:
                self._reset(mono, f"NVML stopped working while opening GPU {index}: {exc}", batch)
                return
            except NvmlError as exc:
                dev = self._placeholder(index)
                self._mark_lost(dev, now, mono, exc, batch)
            self._devices.append(dev)
        for dev in self._devices:
            batch.gpu_info.extend(d.info for d in [dev, *dev.instances] if d.info)
        self._state, self._retry_wait = "ok", INIT_RETRY_S[0]
        self._detail = f"{count} GPU(s), driver {self._driver}"
        self._next_slow = mono
        log.info("GPU collector: %s", self._detail)
        self._start_events()

    def _placeholder(self, index: int) -> Device:
        return Device(gpu=index, handle=None, uuid="")

    def _mark_lost(self, dev: Device, now: float, mono: float, exc: NvmlError, batch: Batch) -> None:
        close_device(self._nvml, dev)
        dev.lost_since, dev.lost_error = now, str(exc)
        dev.backoff_s, dev.retry_at = 1.0, mono + 1.0
        name = dev.info.name if dev.info else "unknown"
        message = f"GPU {dev.gpu} ({name}, {dev.uuid or 'no UUID'}) is lost: {exc}; re-opening with backoff"
        log.error("%s", message)
        batch.errors.append(message)
        batch.events.append(Event(
            id=self._lost_event_id(dev), kind="gpu_lost", start=now, end=now, host=self.host, gpu=dev.gpu,
            severity="critical", summary=f"GPU {dev.gpu} ({name}) is lost",
            evidence={"uuid": dev.uuid, "error": str(exc)}, open=True))

    def _reopen(self, i: int, now: float, mono: float, batch: Batch) -> bool:
        """Try to open a lost GPU again; True when it is back (and in ``self._devices[i]``)."""
        old = self._devices[i]
        try:
            handle = self._nvml.handle_by_uuid(old.uuid) if old.uuid else None
            dev = open_device(self._nvml, old.gpu, self._driver, self.config.gpm, self._problems, handle=handle,
                              fast_graphics_util=self.config.fast_graphics_util)
        except NvmlUnavailable:
            raise
        except NvmlError as exc:
            old.lost_error = str(exc)
            old.backoff_s = min(LOST_BACKOFF_MAX_S, old.backoff_s * 2)
            old.retry_at = mono + old.backoff_s
            return False
        lost_since = old.lost_since or now
        event_id = self._lost_event_id(old)
        self._problems.forget(old.gpu)  # after a reset the GPU may support other things
        self._devices[i] = dev
        batch.gpu_info.extend(d.info for d in [dev, *dev.instances] if d.info)
        message = f"GPU {dev.gpu} is back after {now - lost_since:.0f} s"
        log.warning("%s", message)
        batch.events.append(Event(
            id=event_id, kind="gpu_lost", start=lost_since, end=now, host=self.host, gpu=dev.gpu,
            severity="critical", summary=f"GPU {dev.gpu} ({dev.info.name if dev.info else ''}) was lost for "
                                         f"{now - lost_since:.0f} s", evidence={"uuid": dev.uuid}, open=False))
        return True

    def _lost_event_id(self, dev: Device) -> str:
        return f"gpu_lost:{self.host}:{dev.gpu}:{dev.lost_since:.3f}"

    def _reset(self, mono: float, reason: str, batch: Batch) -> None:
        """NVML as a whole failed: drop everything and look again later."""
        batch.errors.append(reason)
        log.error("%s", reason)
        self._shutdown()
        self._no_data(mono, "no_nvml", reason)

    def _no_data(self, mono: float, state: str, detail: str) -> None:
        if (state, detail) != (self._state, self._detail):
            log.info("GPU collector: %s", detail)
        self._state, self._detail = state, detail
        self._retry_at = mono + self._retry_wait
        self._retry_wait = min(INIT_RETRY_S[1], self._retry_wait * 2)

    def _shutdown(self) -> None:
        if self._events is not None:
            self._events.stop()
            self._events = None
        for dev in self._devices:
            close_device(self._nvml, dev)
        self._devices = []
        if self._open:
            self._open = False
            self._shutdown_nvml()

    def _shutdown_nvml(self) -> None:
        try:
            self._nvml.shutdown()
        except NvmlError:
            pass  # already gone

    # -- events and DCGM -------------------------------------------------------------------
    def _start_events(self) -> None:
        """(Re)start the XID listener on the healthy GPUs' current handles."""
        if not self.config.events:
            return
        if self._events is not None:
            self._events.stop()
        healthy = [(d.gpu, d.handle, d.uuid) for d in self._devices if d.lost_since is None]
        self._events = NvmlEventListener(self._nvml, healthy, self.host)
        self._events.start()  # its problems come out through take_problems() each tick

    def _dcgm_gpus(self) -> set[int]:
        """Ids of healthy GPUs and MIG instances that get no GPM figures from NVML."""
        return {d.gpu for dev in self._devices if dev.lost_since is None
                for d in [dev, *dev.instances] if not d.gpm}

    def _dcgm_gpu(self, r: DcgmReading, wanted: set[int]) -> int | None:
        parent = next((d.gpu for d in self._devices if r.uuid and d.uuid == r.uuid), None)
        if parent is None and not r.uuid:
            parent = r.gpu_label
        if parent is None:
            return None
        gpu = mig_gpu_id(parent, r.gpu_instance) if r.gpu_instance is not None else parent
        return gpu if gpu in wanted else None

    def _source_of(self, d: Device) -> str:
        if d.gpm:
            return "gpm"
        if self._dcgm is not None and self._dcgm.state == "ok" and d.gpu in self._dcgm_fed:
            return "dcgm"
        return "nvml"
