"""The analysis loop: classify each new second of every GPU and turn runs into events.

Runs every ``analysis.interval_s`` over [last analysed second, now - lag_s): the lag lets
late data (py-spy writes a recording only when it ends) arrive first. Work happens on a
worker thread (reads through the store's reader cursors, writes through the writer thread)
so the event loop stays free. State between ticks (open runs, baselines) lives here, so a
gap that spans ticks is one event, updated while open and closed when it ends. Replay
drives the same object with the recording's clock.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

from infersight.daemon.analysis import attribution
from infersight.daemon.analysis.classify import BUSY_CLASSES, Second, classify
from infersight.daemon.analysis.detectors import MismatchDetector, SaturationDetector, mbu_features
from infersight.daemon.analysis.engine_roof import engine_roof_features
from infersight.daemon.analysis.regression import RegressionDetector
from infersight.daemon.analysis.episodes import EpisodeTracker
from infersight.daemon.analysis.lifecycle import Lifecycle, startup_share
from infersight.daemon.analysis.numbers import mean_reported, round_reported
from infersight.daemon.analysis.runs import RunTracker, Segment
from infersight.daemon.analysis.seconds import (EngineScope, HostSeconds, WaitFrames, build_seconds,
                                                read_host_seconds, serving_pids)
from infersight.daemon.analysis.straggler import StragglerDetector
from infersight.daemon.analysis.threads import GpuWaitLearner, is_wait, leaf_key, own_stacks, split_process
from infersight.daemon.config.load import Config
from infersight.daemon.gpu.peaks import peaks_for
from infersight.daemon.logfmt import kv
from infersight.storage import analysis as q
from infersight.storage import events as q_events
from infersight.storage.model import GAP_CLASSES, Event, Window
from infersight.storage.store import Store

log = logging.getLogger("infersight.analysis")

MAX_CATCH_UP_S = 3600        # one tick analyses at most this much (a restart after a long stop)
# one analyse() call covers at most this much: the first tick's hour at once read an hour of
# every table into Python at a time, and the heap it grew (about 50 MB) stayed with the process;
# the per-second GROUP BYs of a longer piece grow DuckDB hash tables whose pages stay mapped too
STEP_MAX_S = 60
KEEP_SECONDS_S = 3 * 3600    # at most this much of an open gap run's seconds is kept in memory
BRIDGE_MAX_S = 5             # busy seconds that can join two starved stretches of one culprit


@dataclass
class GpuState:
    gaps: RunTracker
    mismatch: MismatchDetector
    saturation: SaturationDetector
    lifecycle: Lifecycle
    waits: GpuWaitLearner
    episodes: EpisodeTracker = field(default_factory=EpisodeTracker)
    bridge: list[int] = field(default_factory=list)   # busy seconds held back (_feed_gap)
    # the seconds of the gap run still open: the evidence of its events, re-made every tick.
    # Seconds outside a run are never needed again once the tick that saw them is done.
    seconds: dict[int, RunSecond] = field(default_factory=dict)
    # the culprit thread's stacks of each open run, read from the database (never kept per
    # second: forty threads' stacks per second of a long run were hundreds of MB)
    code: attribution.ThreadCode = field(default_factory=attribution.ThreadCode)


@dataclass(frozen=True, slots=True)
class RunSecond:
    """What a gap event reads of one second of its run: GPU and engine figures, the thread
    that led the second's own work, and each serving process's own-work CPU (% of a core)."""

    sm_util: float | None
    util_gpu: float | None
    running: float | None
    waiting: float | None
    gen_tokens_s: float | None
    leader: attribution.Leader | None
    own_cpu: tuple[tuple[int, float], ...]

    @classmethod
    def of(cls, s: Second, rate_hz: float) -> "RunSecond":
        own = tuple((p.pid, cpu) for p in s.processes if (cpu := p.own_cpu_pct(rate_hz)) is not None)
        return cls(s.sm_util, s.util_gpu, s.running, s.waiting, s.gen_tokens_s,
                   attribution.second_leader(s, rate_hz), own)


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
        self._wait_frames = WaitFrames()      # GPU-wait frame ids, scanned incrementally

    # -- daemon component ---------------------------------------------------------------------
    async def tick(self) -> None:
        if self.endpoint_gpus is not None:
            try:
                self.engine_map = dict(await self.endpoint_gpus())
            except Exception as exc:  # the map is a refinement: without it GPUs keep the last one
                log.warning("event=engine_gpu_map_failed error=%s", kv(f"{type(exc).__name__}: {exc}"))
        try:
            events = await asyncio.to_thread(self.step, self.clock())
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("event=analysis_failed error=%s", kv(self.last_error), exc_info=exc)
            return
        for callback in self.on_events:
            res = callback(events)
            if asyncio.iscoroutine(res):
                await res

    def health(self) -> dict[str, Any]:
        return {"ok": self.last_error is None, "last_error": self.last_error, "analysed_until": self.done_until,
                "ticks": self.ticks, "events_written": self.events_written, "windows_written": self.windows_written}

    # -- the work -------------------------------------------------------------------------------
    def step(self, now: float) -> list[Event]:
        """Analyse every whole second up to ``now - lag_s`` not analysed yet; returns events written."""
        t_to = int(now - self.cfg.lag_s)
        if self.done_until is None:
            first = self.store.read_sync(q.first_gpu_second)
            if first is None:
                return []
            self.done_until = max(int(first), t_to - MAX_CATCH_UP_S)
        t_from = max(self.done_until, t_to - MAX_CATCH_UP_S)
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
        # GPUs without new samples still run: their open runs must close or stay open
        gpus = sorted(set(self.store.read_sync(q.gpus_with_samples, t_from, t_to)) | set(self.gpus))
        host = self.store.read_sync(read_host_seconds, t_from, t_to, self._wait_frames)
        targets = host.targets
        for gpu in gpus:
            events += self._analyse_gpu(gpu, t_from, t_to, host)
        events += self.straggler.events(self.store, self.host, targets, t_from, t_to, self._gpu_waits)
        events += self.regression.check(self.store, self.host, t_to)
        # an open finding that later seconds re-segmented (a transition second joined the next
        # phase) is replaced by the new segmentation: drop the old one
        emitted = {e.id for e in events}
        superseded = sorted(self._open_ids - emitted)
        self._open_ids = {e.id for e in events if e.open}
        if superseded:
            self.store.write_sync(q_events.delete_events, superseded)
        if events:
            self.store.write_sync(q_events.upsert_events, events)
            self.events_written += len(events)
        return events

    def _gpu_waits(self, gpu: int, pid: int) -> frozenset[str]:
        """The leaves learned as GPU waits of ``pid`` on ``gpu`` (none before its first second)."""
        st = self.gpus.get(gpu)
        return st.waits.waits(pid) if st is not None else frozenset()

    def _state(self, gpu: int) -> GpuState:
        st = self.gpus.get(gpu)
        if st is None:
            st = self.gpus[gpu] = GpuState(
                gaps=RunTracker(GAP_CLASSES, self.cfg.gap_merge_s, self.cfg.gap_min_s),
                mismatch=MismatchDetector(self.cfg), saturation=SaturationDetector(self.cfg),
                lifecycle=Lifecycle(self.cfg.startup_max_s), waits=GpuWaitLearner(self.cfg.busy_sm_pct))
        return st

    def _analyse_gpu(self, gpu: int, t_from: int, t_to: int, host: HostSeconds) -> list[Event]:
        st = self._state(gpu)
        targets = host.targets
        seconds = self.store.read_sync(build_seconds, gpu, t_from, t_to, self.cfg,
                                       EngineScope.for_gpu(gpu, self.engine_map), host)
        peak_bw = self.store.read_sync(q.peak_dram_bandwidth, gpu)
        peaks = peaks_for(self.store.read_sync(q.gpu_name, gpu))
        serving = serving_pids(targets, gpu)
        # NVML's processes on this GPU in the step: CUDA-context holders and foreign processes
        seen = self.store.read_sync(q.gpu_processes, gpu, t_from, t_to)
        self._attach_work(st, gpu, seconds, seen, host)
        self.straggler.add(gpu, seconds)
        info = {int(t["pid"]): t for t in sorted(targets, key=lambda t: t["last_seen"] or 0.0)}
        windows = []
        finished: list[Segment] = []
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
            if klass in GAP_CLASSES and s.in_flight is False and klass != "stall":
                feed_class = "none"  # a busy process with no work in flight is not starving the GPU
            else:
                feed_class = klass
            culprit = None
            if feed_class in ("host_bound", "launch_bound") and features.get("busiest_pid") is not None:
                busiest = next(p for p in s.processes if p.pid == features["busiest_pid"])
                thread = busiest.work.busiest_thread() if busiest.work is not None else None
                if thread is not None:
                    features["busiest_thread"] = thread.name or str(thread.tid)
                    leaves = {leaf_key(path): n for path, n in thread.own_stacks.items()}
                    culprit = st.episodes.label(busiest.pid, thread.tid, leaves, s.running)
                else:
                    culprit = f"{busiest.pid}:{busiest.top_leaf}"
            finished += self._feed_gap(st, s.t, feed_class, culprit, features)
            st.seconds[s.t] = RunSecond.of(s, self.rate_hz)
            st.mismatch.feed(s, klass)
            st.saturation.feed(s, klass)
            windows.append(Window(start=float(s.t), end=float(s.t + 1), gpu=gpu, klass=klass, features=features))
        finished += st.gaps.flush_until(t_to)
        self.store.write_sync(q_events.replace_windows, gpu, float(t_from), float(t_to), windows)
        self.windows_written += len(windows)
        events = [self._gap_event(gpu, seg, st, serving, open_=False) for seg in finished]
        events += [self._gap_event(gpu, seg, st, serving, open_=True) for seg in st.gaps.open_segments()]
        foreign = self._foreign(gpu, targets, t_from, seen, serving)
        events += st.mismatch.events(self.host, gpu, foreign)
        events += st.saturation.events(self.host, gpu, foreign)
        keep_from = max(st.gaps.open_since() or t_to, t_to - KEEP_SECONDS_S)
        for t in [t for t in st.seconds if t < keep_from]:
            del st.seconds[t]
        st.code.keep_only_used()
        return events

    def _feed_gap(self, st: GpuState, t: int, feed_class: str, culprit: str | None, features: dict) -> list[Segment]:
        """Feed one second to the gap tracker. A busy second right after starved ones, with
        the starving process still saturated, is held back: it joins the run when starved
        seconds of the same culprit follow within ``BRIDGE_MAX_S`` (a saturated API server
        feeds its GPU in bursts: one episode), and is dropped otherwise."""
        last = st.gaps.last_label()
        own = features.get("busiest_own_cpu_pct")
        if (feed_class in BUSY_CLASSES and last is not None and "|" in last and own is not None
                and own >= self.cfg.host_saturated_pct and len(st.bridge) < BRIDGE_MAX_S
                and last.split("|", 1)[1].split(":", 1)[0] == str(features.get("busiest_pid"))):
            st.bridge.append(t)
            return []
        done: list[Segment] = []
        label = f"{feed_class}|{culprit}" if culprit else feed_class
        if st.bridge and label == last:
            for b in st.bridge:
                done += st.gaps.feed(b, feed_class, culprit)
        st.bridge = []
        return done + st.gaps.feed(t, feed_class, culprit)

    def _attach_work(self, st: GpuState, gpu: int, seconds: list[Second], seen: dict[int, dict],
                     host: HostSeconds) -> None:
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

    def _foreign(self, gpu: int, targets: list[dict], t_from: int, seen: dict[int, dict],
                 serving: dict[int, str]) -> list[dict]:
        """Processes on the GPU that are not the engine's (NVML's ``seen``, and targets
        discovery found there), with their command line (as discovery stored it, redacted),
        GPU memory and SM share where known."""
        by_pid = {int(t["pid"]): t for t in sorted(targets, key=lambda t: t["last_seen"] or 0.0)}
        out = []
        for pid, info in seen.items():
            if pid not in serving and by_pid.get(pid, {}).get("role") != "helper":
                out.append({"pid": pid, "role": by_pid.get(pid, {}).get("role", "unknown"),
                            "cmdline": by_pid.get(pid, {}).get("cmdline") or None, "sm_util": info["sm_util"],
                            "used_memory_bytes": info["used_memory_bytes"]})
        for t in targets:
            if (t["role"] == "other_gpu_process" and int(t["pid"]) not in seen and gpu in (t["gpus"] or [gpu])
                    and (t["exited_at"] is None or t["exited_at"] >= t_from)):
                out.append({"pid": int(t["pid"]), "role": t["role"], "cmdline": t["cmdline"] or None,
                            "sm_util": None, "used_memory_bytes": None})
        return out

    def _gap_event(self, gpu: int, seg: Segment, st: GpuState, serving: dict[int, str], open_: bool) -> Event:
        secs = [st.seconds[t] for t in seg.seconds if t in st.seconds]
        sm = [s.sm_util if s.sm_util is not None else (s.util_gpu or 0.0) for s in secs]
        lost = sum(max(0.0, 1.0 - v / 100.0) for v in sm)
        running = mean_reported([s.running for s in secs])
        waiting = mean_reported([s.waiting for s in secs])
        tokens = mean_reported([s.gen_tokens_s for s in secs])
        # a stall is time spent waiting: its waits (idle samples where recorded) are the evidence;
        # a starved GPU's evidence is the culprit thread's own work (never its waits)
        culprit = attribution.culprit([s.leader for s in secs])
        if seg.klass == "stall" or culprit is None:
            frames = attribution.top_frames(self.store, seg.start, seg.end, serving, self.cfg.top_frames,
                                            active=None if seg.klass == "stall" else True)
            hot_paths: list[dict] = []
        else:
            # split with what the GPU-wait learner knows now (as each second was split)
            active = st.code.stacks(self.store, culprit["pid"], culprit["tid"], seg.start, seg.end)
            own = own_stacks(active, st.waits.waits(culprit["pid"]))
            frames, hot_paths = attribution.code_of(own, culprit, self.cfg.top_frames)
        busiest: dict[int, list[float]] = {}
        for s in secs:
            for pid, own_cpu in s.own_cpu:
                busiest.setdefault(pid, []).append(own_cpu)
        cpu = {f"{pid}": round(sum(v) / len(v), 1) for pid, v in busiest.items()}
        idle_pct = 100.0 * lost / max(1, len(secs))
        in_flight = (running or 0) + (waiting or 0)
        top = frames[0] if frames else None
        who = ""
        if culprit is not None:
            who = (f"; {culprit['role']} pid {culprit['pid']} thread {culprit['thread']} busy "
                   f"{culprit['cpu_pct']:.0f}% of a core on its own work")
        summary = (f"GPU {gpu} {seg.klass.replace('_', '-')}: {idle_pct:.0f}% idle for {_duration(seg.duration)}"
                   + (f" while {in_flight:.0f} requests were in flight" if in_flight >= 1 else
                      f" while {tokens:.0f} tokens/s flowed" if tokens else "")
                   + who
                   + (f"; top frame {top['frame']} {top['share'] * 100:.0f}%"
                      + ("" if culprit else f" ({top['role']} pid {top['pid']})") if top else "")
                   + (f"; its time splits under {hot_paths[0]['via']}: " if hot_paths and hot_paths[0]["via"] else
                      "; its time splits: " if hot_paths else "")
                   + ", ".join(f"{h['frame']} {h['share'] * 100:.0f}%" for h in hot_paths[:3]))
        evidence = {
            "duration_s": seg.duration, "lost_gpu_s": round(lost, 2), "gpu_idle_pct": round(idle_pct, 1),
            "sm_util_mean": round_reported(mean_reported([s.sm_util for s in secs]), 2),
            "util_gpu_mean": round_reported(mean_reported([s.util_gpu for s in secs]), 2),
            "requests_running_mean": round_reported(running, 2),
            "requests_waiting_mean": round_reported(waiting, 2),
            "generation_tokens_per_s_mean": round_reported(tokens, 2), "own_cpu_pct_by_pid": cpu,
            "class_seconds": {seg.klass: len(seg.seconds)},
            "culprit": culprit, "hot_paths": hot_paths,
        }
        severity = "critical" if seg.duration >= 60 and idle_pct >= 50 else "warning"
        return Event(id=f"cpu_gpu_gap:{self.host}:{gpu}:{seg.start}", kind="cpu_gpu_gap", start=float(seg.start),
                     end=float(seg.end), host=self.host, gpu=gpu, severity=severity, klass=seg.klass,
                     summary=summary, evidence=evidence, top_frames=frames, open=open_)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
