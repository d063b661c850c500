"""Attribute and explain one judged episode of one GPU: its findings, with their code.

The glue between the pure steps and the store: the throttle (throttle.py) picks the process,
its busiest thread's stacks are read back from the database (attribution.ThreadCode, only
the seconds not read yet while the episode is open), split with what the GPU-wait learner
knows now, and findings.py writes the events. A stall names the serving thread
(episode_state.ServedThreads) and what it waits in, its idle samples included.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from infersight.daemon.analysis import attribution
from infersight.daemon.analysis.baselines import is_mismatch
from infersight.daemon.analysis.classify import BUSY_CLASSES
from infersight.daemon.analysis.findings import (WORK_SHARE, Code, gap_event, mismatch_event, neighbour_event, saturation,
                                                 saturation_event, wants_gap)
from infersight.daemon.analysis.judge import Verdict
from infersight.daemon.analysis.observe import EpisodeSecond
from infersight.daemon.analysis.seconds import serving_pids
from infersight.daemon.analysis.throttle import Throttle, find_throttle
from infersight.daemon.analysis.threads import own_stacks
from infersight.daemon.config.load import AnalysisConfig
from infersight.storage import thread_stacks
from infersight.storage.model import Event
from infersight.storage.store import Store

if TYPE_CHECKING:
    from infersight.daemon.analysis.episode_state import GpuState

GPU_HOLDER_ROLES = ("engine_core", "engine", "worker")
# a neighbour counts for an episode when active in at least this share of its seconds
NEIGHBOUR_SHARE = 0.5


class Explainer:
    def __init__(self, cfg: AnalysisConfig, store: Store, host: str, gpu: int, rate_hz: float,
                 seen: dict[int, dict], info: dict[int, dict]) -> None:
        self.cfg, self.store, self.host, self.gpu, self.rate_hz = cfg, store, host, gpu, rate_hz
        self.seen, self.info = seen, info

    def explain(self, v: Verdict, seconds: list[EpisodeSecond], st: "GpuState", open_: bool) -> list[Event]:
        events: list[Event] = []
        if wants_gap(v, st.engine_known) and v.duration >= self.cfg.gap_min_s:
            throttle = find_throttle(v, self.cfg) if v.klass != "stall" else None
            code = self._stall_code(v, st) if v.klass == "stall" else self._code(v, throttle, st)
            events.append(gap_event(self.host, self.gpu, v, throttle, code, open_, st.carry.get("cpu_gpu_gap")))
        neighbours = [f for f in v.foreign if f["active_share"] >= NEIGHBOUR_SHARE]
        if neighbours and _serving(v) and v.duration >= self.cfg.gap_min_s:
            events.append(neighbour_event(self.host, self.gpu, v, self._describe(neighbours), st.baselines.compare(v),
                                          open_, st.carry.get("noisy_neighbor")))
        elif v.klass in BUSY_CLASSES and v.duration >= self.cfg.mismatch_min_s:
            comparison = st.baselines.compare(v, BUSY_CLASSES)
            if comparison is not None and is_mismatch(comparison, self.cfg):
                events.append(mismatch_event(self.host, self.gpu, v, comparison, self._present(), open_,
                                             st.carry.get("util_throughput_mismatch")))
        if v.klass in BUSY_CLASSES and v.duration >= self.cfg.saturation_min_s:
            grown = saturation([(s.t, s.waiting) for s in seconds], self.cfg)
            if grown is not None:
                events.append(saturation_event(self.host, self.gpu, v, grown[0], grown[1], open_,
                                               st.carry.get("saturation")))
        return events

    # -- the culprit's code ---------------------------------------------------------------------
    def _code(self, v: Verdict, throttle: Throttle | None, st: "GpuState") -> Code:
        if throttle is None:
            serving = serving_pids(list(self.info.values()), self.gpu)
            return Code(None, attribution.top_frames(self.store, v.start, v.end, serving, self.cfg.top_frames))
        proc = throttle.first
        thread = proc.threads[0] if proc.threads else None
        if thread is None:
            return Code(None)
        who = {"pid": proc.pid, "tid": thread.tid, "role": proc.role, "thread": thread.name or str(thread.tid),
               "cpu_pct": thread.own_cpu, "process_own_cpu_pct": round(proc.own_cpu or 0.0, 1),
               "own_share": None if proc.own_share is None else round(proc.own_share, 3),
               "samples": proc.working, "decided_by": throttle.decided_by}
        active = st.code.stacks(self.store, proc.pid, thread.tid, v.start, v.end)
        frames, hot = attribution.code_of(own_stacks(active, st.waits.waits(proc.pid)), who, self.cfg.top_frames)
        return Code(who, frames, hot)

    def _stall_code(self, v: Verdict, st: "GpuState") -> Code:
        """What the serving thread of the GPU-holding process waits in (idle samples too)."""
        procs = sorted(v.procs, key=lambda p: (p.role not in GPU_HOLDER_ROLES, -(p.working + p.idle), p.pid))
        for proc in procs:
            thread = st.served.thread(proc.pid)
            if thread is None:
                continue
            tid, name = thread
            who = {"pid": proc.pid, "tid": tid, "role": proc.role, "thread": name or str(tid),
                   "cpu_pct": round(proc.own_cpu or 0.0, 1), "decided_by": "serving_thread"}
            stacks = self.store.read_sync(thread_stacks.thread_profile, v.start, v.end, proc.pid, tid, False)
            frames, hot = attribution.code_of(stacks, who, self.cfg.top_frames)
            return Code(who, frames, hot)
        return Code(None)

    # -- neighbours and mismatch ----------------------------------------------------------------
    def _describe(self, foreign: list[dict]) -> list[dict[str, Any]]:
        out = []
        for f in foreign:
            t = self.info.get(f["pid"], {})
            out.append({"pid": f["pid"], "role": t.get("role", "unknown"), "cmdline": t.get("cmdline") or None,
                        "sm_util": f.get("sm_util"), "cpu_pct": f.get("cpu_pct"),
                        "used_memory_bytes": self.seen.get(f["pid"], {}).get("used_memory_bytes"),
                        "active_share": f["active_share"]})
        return out

    def _present(self) -> list[dict[str, Any]]:
        """Processes holding this GPU that are not serving it (their activity unknown)."""
        serving = serving_pids(list(self.info.values()), self.gpu)
        out = []
        for pid, s in sorted(self.seen.items()):
            t = self.info.get(pid, {})
            if pid in serving or t.get("role") == "helper":
                continue
            out.append({"pid": pid, "role": t.get("role", "unknown"), "cmdline": t.get("cmdline") or None,
                        "sm_util": s.get("sm_util"), "used_memory_bytes": s.get("used_memory_bytes")})
        return out


def _serving(v: Verdict) -> bool:
    share = v.means.get("work_share")
    return share is not None and share >= WORK_SHARE
