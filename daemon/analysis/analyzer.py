"""The analysis loop: cut each GPU's seconds into episodes, judge each, and explain it.

Runs every ``analysis.interval_s`` over [last analysed second, now - lag_s): the lag lets
late data (py-spy writes a recording only when it ends) arrive first. Per GPU and tick:

1. **segment** (segment.py): the new seconds join the open episode; a change of workload
   (lifecycle, offered load, token mix, GPU activity, serving processes and their CPU and
   code, a neighbour's activity) closes it where the change happened;
2. **judge** (judge.py): every episode touched gets one class from its pooled figures;
3. **attribute** (throttle.py, attribution.py): a starved episode's throttle, from where the
   requests queue, and the code of the throttle's busiest thread;
4. **explain** (findings.py): at most one finding per cause, updated while the episode is
   open and final when it closes.

The per-second band (``windows``) is derived from the episodes: each second carries its
episode's class, except a second with strong evidence of its own (a truly idle second). An
episode's class can still change while it is open; its windows are rewritten then. In the daemon
the analysis runs on a thread of its own, paced by itself (:meth:`Analyzer.start`): reads go
through the store's reader cursors, writes through the writer thread, and the event loop and
its worker threads stay free for the collectors and the web. Replay drives the same object
with the recording's clock.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Awaitable, Callable, Mapping

from infersight.daemon.analysis.classify import classify
from infersight.daemon.analysis.engine_roof import engine_roof_features, mbu_features
from infersight.daemon.analysis.episode_state import GpuState
from infersight.daemon.analysis.explain import Explainer
from infersight.daemon.analysis.lifecycle import startup_share
from infersight.daemon.analysis.observe import EpisodeSecond, observation
from infersight.daemon.analysis.regression import RegressionDetector
from infersight.daemon.analysis.seconds import (EngineScope, HostSeconds, WaitFrames, build_seconds,
                                                read_host_seconds, serving_pids)
from infersight.daemon.analysis.second_record import NVML_HOLD_S, episode_second, foreign_pids, held_readings
from infersight.daemon.analysis.straggler import StragglerDetector
from infersight.daemon.analysis.threads import is_wait, leaf_key, split_process
from infersight.daemon.config.load import Config
from infersight.daemon.gpu.peaks import peaks_for
from infersight.daemon.logfmt import kv
from infersight.storage import analysis as q
from infersight.storage import events as q_events
from infersight.storage.model import Event, Window
from infersight.storage.store import Store

log = logging.getLogger("infersight.analysis")

MAX_CATCH_UP_S = 3600        # one tick analyses at most this much (a restart after a long stop)
# one analyse() call covers at most this much: the first tick's hour at once read an hour of
# every table into Python at a time, and the heap it grew (about 50 MB) stayed with the process;
# the per-second GROUP BYs of a longer piece grow DuckDB hash tables whose pages stay mapped too
STEP_MAX_S = 60
TICK_MAX_S = 30              # the daemon's step covers at most this much new data (its own thread)
LATE_FACTOR = 2.0            # a step that begins this many intervals after the last one is late
ENGINE_MAP_WAIT_S = 5.0
CLOSE_WAIT_S = 10.0


class Analyzer:
    """A daemon component (``name``, ``interval_s``, ``tick``) and the replay engine."""

    name = "analysis"

    def __init__(self, config: Config, store: Store, *, rate_hz: float | None = None,
                 clock: Callable[[], float] = time.time,
                 endpoint_gpus: Callable[[], Awaitable[Mapping[str, tuple[int, ...]]]] | None = None) -> None:
        """``endpoint_gpus`` (live daemon) gives each engine endpoint URL's GPUs, () when not
        known; it is awaited on the event loop before each tick, and each GPU's seconds then
        read only their own engines' signals (seconds.EngineScope). Without it (replay), every
        GPU reads the host's sum."""
        self.cfg = config.analysis
        self.host = config.host
        self.store = store
        self.clock = clock
        self.rate_hz = float(rate_hz or config.collectors.stacks.rate_hz)
        self.interval_s = self.cfg.interval_s
        self.done_until: int | None = None
        self.gpus: dict[int, GpuState] = {}
        self.regression = RegressionDetector(self.cfg)
        self.straggler = StragglerDetector(self.cfg, self.rate_hz)
        self.ticks = 0
        self.last_error: str | None = None
        self.events_written = 0
        self.windows_written = 0
        self.on_events: list[Callable[[list[Event]], Any]] = []
        self.endpoint_gpus = endpoint_gpus
        self.engine_map: Mapping[str, tuple[int, ...]] | None = None   # the last endpoint_gpus answer
        self._open_ids: set[str] = set()
        self._unwritten: list[Event] = []          # findings whose write failed, written next step
        self._wait_frames = WaitFrames()      # GPU-wait frame ids, scanned incrementally
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_began: float | None = None
        self.late_ticks = 0
        self.last_tick_s = 0.0

    # -- daemon component ---------------------------------------------------------------------
    async def tick(self) -> None:
        """One analysis step on a worker thread (tests and callers that pace it themselves)."""
        await self._refresh_engine_map()
        try:
            events = await asyncio.to_thread(self.step, self.clock())
        except Exception as exc:
            self._failed(exc)
            return
        await self._deliver(events)

    async def start(self) -> None:
        """Run the analysis on a thread of its own, paced by itself (the daemon): it never
        competes for the event loop's worker threads, a slow step delays the next instead of
        being skipped, and a step covers at most ``TICK_MAX_S`` of new seconds, so after a
        stall it catches up over several steps, staying behind rather than dropping seconds."""
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="infersight-analysis", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            await asyncio.to_thread(self._thread.join, CLOSE_WAIT_S)
            self._thread = None

    @property
    def self_paced(self) -> bool:
        """Whether the daemon must leave the scheduling of ``tick`` to the analysis itself."""
        return True

    def _run(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            began = time.monotonic()
            if self._last_began is not None and began - self._last_began > LATE_FACTOR * self.interval_s:
                self.late_ticks += 1
            self._last_began = began
            try:
                fut = asyncio.run_coroutine_threadsafe(self._refresh_engine_map(), self._loop)
                fut.result(timeout=ENGINE_MAP_WAIT_S)
            except Exception as exc:  # a map that does not come keeps the last one
                log.warning("event=engine_gpu_map_failed error=%s", kv(f"{type(exc).__name__}: {exc}"))
            try:
                events = self.step(self.clock(), max_s=TICK_MAX_S)
            except Exception as exc:
                self._failed(exc)
                events = []
            if events or self.on_events:
                asyncio.run_coroutine_threadsafe(self._deliver(events), self._loop)
            self.last_tick_s = time.monotonic() - began
            # behind: go on at once (briefly yielding); else wait for the rest of the interval
            wait = 0.01 if self.behind_s() > self.interval_s else max(0.0, self.interval_s - self.last_tick_s)

    def behind_s(self) -> float:
        """Seconds of data the analysis has not reached yet beyond its lag (0 when in time)."""
        if self.done_until is None:
            return 0.0
        return max(0.0, self.clock() - self.cfg.lag_s - self.done_until)

    async def _refresh_engine_map(self) -> None:
        if self.endpoint_gpus is not None:
            try:
                self.engine_map = dict(await self.endpoint_gpus())
            except Exception as exc:  # the map is a refinement: without it GPUs keep the last one
                log.warning("event=engine_gpu_map_failed error=%s", kv(f"{type(exc).__name__}: {exc}"))

    def _failed(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.error("event=analysis_failed error=%s", kv(self.last_error), exc_info=exc)

    async def _deliver(self, events: list[Event]) -> None:
        for callback in self.on_events:
            res = callback(events)
            if asyncio.iscoroutine(res):
                await res

    def health(self) -> dict[str, Any]:
        return {"ok": self.last_error is None, "last_error": self.last_error, "analysed_until": self.done_until,
                "ticks": self.ticks, "late_ticks": self.late_ticks, "last_tick_s": round(self.last_tick_s, 3),
                "behind_s": round(self.behind_s(), 1), "events_written": self.events_written,
                "windows_written": self.windows_written,
                "open_episodes": {str(g): st.open[0].t for g, st in self.gpus.items() if st.open}}

    # -- the work -------------------------------------------------------------------------------
    def step(self, now: float, max_s: float = MAX_CATCH_UP_S) -> list[Event]:
        """Analyse the whole seconds up to ``now - lag_s`` not analysed yet, at most ``max_s`` of
        them (the rest waits for the next step); returns the events written."""
        t_to = int(now - self.cfg.lag_s)
        if self.done_until is None:
            first = self.store.read_sync(q.first_gpu_second)
            if first is None:
                return []
            self.done_until = max(int(first), t_to - MAX_CATCH_UP_S)
        t_from = max(self.done_until, t_to - MAX_CATCH_UP_S)
        t_to = min(t_to, t_from + int(max_s))
        if t_to <= t_from:
            return []
        events: list[Event] = []
        while t_from < t_to:   # a catch-up in pieces, as if ticks had come in time
            t_end = min(t_to, t_from + STEP_MAX_S)
            events += self.analyse(t_from, t_end)
            self.done_until = t_from = t_end
        self.ticks += 1
        self.last_error = None
        return events

    def analyse(self, t_from: int, t_to: int) -> list[Event]:
        events: list[Event] = []
        # GPUs without new samples still run: their open episodes must close or stay open
        gpus = sorted(set(self.store.read_sync(q.gpus_with_samples, t_from, t_to)) | set(self.gpus))
        host = self.store.read_sync(read_host_seconds, t_from, t_to, self._wait_frames)
        for gpu in gpus:
            events += self._analyse_gpu(gpu, t_from, t_to, host)
        events += self.straggler.events(self.store, self.host, host.targets, t_from, t_to, self._gpu_waits)
        events += self.regression.check(self.store, self.host, t_to)
        # an open finding that later seconds re-segmented or re-judged is replaced: drop the old one
        # findings a failed write left behind go first (a closed episode's final finding is
        # made once); a newer version of the same finding replaces them
        newer = {e.id for e in events}
        events = [e for e in self._unwritten if e.id not in newer] + events
        emitted = {e.id for e in events}
        superseded = sorted(self._open_ids - emitted)
        self._unwritten = events
        if superseded:
            self.store.write_sync(q_events.delete_events, superseded)
        self._open_ids = {e.id for e in events if e.open}
        if events:
            self.store.write_sync(q_events.upsert_events, events)
            self.events_written += len(events)
        self._unwritten = []
        return events

    def _gpu_waits(self, gpu: int, pid: int) -> frozenset[str]:
        """The leaves learned as GPU waits of ``pid`` on ``gpu`` (none before its first second)."""
        st = self.gpus.get(gpu)
        return st.waits.waits(pid) if st is not None else frozenset()

    def _state(self, gpu: int) -> GpuState:
        st = self.gpus.get(gpu)
        if st is None:
            st = self.gpus[gpu] = GpuState.new(self.cfg, self.rate_hz)
        return st

    def _analyse_gpu(self, gpu: int, t_from: int, t_to: int, host: HostSeconds) -> list[Event]:
        st = self._state(gpu)
        targets = host.targets
        seconds = self.store.read_sync(build_seconds, gpu, t_from, t_to, self.cfg,
                                       EngineScope.for_gpu(gpu, self.engine_map), host)
        # a step whose writes failed (a full disk) runs again over the same range: the seconds
        # this GPU's state has taken in already are not taken in twice
        seconds = [s for s in seconds if st.last_t is None or s.t > st.last_t]
        peak_bw = self.store.read_sync(q.peak_dram_bandwidth, gpu)
        peaks = peaks_for(self.store.read_sync(q.gpu_name, gpu))
        serving = serving_pids(targets, gpu)
        # NVML's processes on this GPU in the step: CUDA-context holders and foreign processes
        seen = self.store.read_sync(q.gpu_processes, gpu, t_from, t_to)
        readings = self.store.read_sync(q.gpu_process_seconds, gpu, t_from - NVML_HOLD_S, t_to) if seen else {}
        seen_per_second = held_readings(readings, [s.t for s in seconds])
        self._attach_work(st, gpu, seconds, seen, host)
        self.straggler.add(gpu, seconds)
        info = {int(t["pid"]): t for t in sorted(targets, key=lambda t: t["last_seen"] or 0.0)}
        foreign = foreign_pids(gpu, targets, seen, serving)
        new: list[EpisodeSecond] = []
        for s in seconds:
            procs = [{"pid": p.pid, "role": p.role, "start_time": info.get(p.pid, {}).get("start_time"),
                      "exited_at": info.get(p.pid, {}).get("exited_at"), "own_cpu_pct": p.own_cpu_pct(self.rate_hz),
                      "startup_share": p.startup_share} for p in s.processes]
            state = st.lifecycle.step(s.t, procs, served=s.in_flight is True, answering=s.in_flight is not None,
                                      gpu_busy=(s.sm_util if s.sm_util is not None else s.util_gpu or 0.0)
                                      >= self.cfg.busy_sm_pct)
            klass, features = classify(s, self.cfg, self.rate_hz, state)
            features.update(mbu_features(s, peak_bw, self.cfg.model_weight_bytes))
            features.update(engine_roof_features(s, peaks, peak_bw))
            st.second_class[s.t] = (klass, features)
            record = episode_second(s, state, foreign, seen_per_second.get(s.t, {}), host.cpu.get(s.t, {}))
            st.served.feed(record)
            new.append(record)
        if new:
            st.last_t = new[-1].t
        splits = st.segmenter.feed([observation(r) for r in new])
        events = st.advance(new, splits, self._explainer(gpu, seen, info))
        self._write_windows(gpu, st, t_to)
        st.forget_closed()
        return events

    def _explainer(self, gpu: int, seen: dict[int, dict], info: dict[int, dict]) -> Explainer:
        """What GpuState.advance calls to turn a judged episode into events."""
        return Explainer(self.cfg, self.store, self.host, gpu, self.rate_hz, seen, info)

    def _write_windows(self, gpu: int, st: GpuState, t_to: int) -> None:
        """Write the windows whose class is new or changed since last written (from the first
        such second to ``t_to``: a changed episode class rewrites its seconds)."""
        first = st.first_unwritten()
        if first is None:
            return
        windows = [Window(start=float(t), end=float(t + 1), gpu=gpu, klass=klass, features=features)
                   for t, klass, features in st.band_from(first)]
        self.store.write_sync(q_events.replace_windows, gpu, float(first), float(t_to), windows)
        self.windows_written += len(windows)
        st.mark_written(first)

    def _attach_work(self, st: GpuState, gpu: int, seconds, seen: dict[int, dict], host: HostSeconds) -> None:
        """Split each serving process's samples of each second into own work, waits and GPU
        waits (analysis/threads.py), learning GPU waits in the processes that hold a CUDA
        context on ``gpu`` (``seen``: NVML's processes on it, q.gpu_processes); set what the
        classifier reads (active, gpu_wait) from the split."""
        holders = set(seen)
        holders |= {int(t["pid"]) for t in host.targets
                    if gpu in (t["gpus"] or []) and t["role"] not in ("api_server",)}
        for s in seconds:
            threads = host.threads.get(s.t, [])
            for p in s.processes:
                mine = [ts for ts in threads if ts.pid == p.pid]
                if not mine:
                    continue
                learned = st.waits.waits(p.pid) if p.pid in holders else frozenset()
                work = split_process(p.pid, mine, learned)
                p.work = work
                # a rank in a collective waits on its peers: for the classifier that is
                # waiting, like a GPU wait, never own work that starves its GPU
                p.active = work.own + work.gpu_wait + work.collective
                p.gpu_wait = work.gpu_wait + work.collective
                every: dict = {}
                for ts in mine:
                    for path, n in ts.active.items():
                        every[path] = every.get(path, 0) + n
                p.startup_share = startup_share(every)
                if p.pid in holders and s.sm_util is not None:
                    leaves: dict[str, int] = {}
                    for path, n in every.items():
                        if not is_wait(path):
                            leaves[leaf_key(path)] = leaves.get(leaf_key(path), 0) + n
                    st.waits.feed(p.pid, s.sm_util, leaves)
