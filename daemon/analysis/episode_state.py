"""What the analysis keeps of one GPU between ticks: the open episode and the band to write.

The open episode's seconds stay in memory (at most the segmenter's ``max_len``) with the
per-second window features; closed episodes are judged, explained and forgotten once their
windows are written. Each second's band class is its episode's class, except the idle
seconds at an episode's edges (idle on their own evidence: a change is confirmed only a few
seconds after it happened, so the last idle seconds before a load join its episode): they
stay idle, and the episode is judged without them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from infersight.daemon.analysis.attribution import ThreadCode
from infersight.daemon.analysis.baselines import Baselines
from infersight.daemon.analysis.classify import LIFECYCLE_CLASSES
from infersight.daemon.analysis.judge import Verdict, judge
from infersight.daemon.analysis.lifecycle import Lifecycle
from infersight.daemon.analysis.observe import EpisodeSecond, feature_specs
from infersight.daemon.analysis.segment import Segmenter, Split
from infersight.daemon.analysis.threads import GpuWaitLearner
from infersight.daemon.config.load import AnalysisConfig
from infersight.storage.model import Event


class Explains(Protocol):
    def explain(self, v: Verdict, seconds: list[EpisodeSecond], st: "GpuState", open_: bool) -> list[Event]: ...


SERVED_MEMORY_S = 3600      # a process unseen this long has exited: its threads are forgotten


class ServedThreads:
    """Per serving process, which thread serves: the one with the most samples of own work
    or GPU waits so far (a thread that only ever sleeps in a selector serves nothing)."""

    def __init__(self) -> None:
        self.counts: dict[int, dict[int, list]] = {}
        self.seen: dict[int, int] = {}

    def feed(self, record: EpisodeSecond) -> None:
        for p in record.procs:
            self.seen[p.pid] = record.t
            mine = self.counts.setdefault(p.pid, {})
            for t in p.threads:
                entry = mine.setdefault(t.tid, [t.name, 0])
                entry[0] = t.name or entry[0]
                entry[1] += t.own + t.gpu_wait

    def thread(self, pid: int) -> tuple[int, str] | None:
        """(tid, name) of ``pid``'s serving thread, None when it never served."""
        mine = self.counts.get(pid)
        if not mine:
            return None
        tid, (name, n) = max(mine.items(), key=lambda kv: (kv[1][1], -kv[0]))
        return (tid, name) if n else None

    def forget(self, before: int) -> None:
        """Drop the processes last seen before ``before`` (exited ones)."""
        for pid in [pid for pid, t in self.seen.items() if t < before]:
            self.seen.pop(pid)
            self.counts.pop(pid, None)


def band_class(episode: str, second: str) -> str:
    """The class a second shows in the band: its episode's, or idle where it was idle itself."""
    if second == "idle" and episode not in LIFECYCLE_CLASSES:
        return "idle"
    return episode


@dataclass
class GpuState:
    cfg: AnalysisConfig
    rate_hz: float
    segmenter: Segmenter
    lifecycle: Lifecycle
    waits: GpuWaitLearner
    baselines: Baselines
    code: ThreadCode = field(default_factory=ThreadCode)
    served: ServedThreads = field(default_factory=ServedThreads)
    open: list[EpisodeSecond] = field(default_factory=list)
    second_class: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    band: dict[int, str] = field(default_factory=dict)
    written: dict[int, str] = field(default_factory=dict)
    closed: list[int] = field(default_factory=list)
    # where each kind of finding began when the open episode continues one the segmenter cut
    # for length (a workload longer than it keeps open): the finding goes on, one id
    carry: dict[str, int] = field(default_factory=dict)
    last_verdict: Verdict | None = None
    engine_known: bool = False       # the engine has reported its requests on this GPU
    last_t: int | None = None        # the newest second taken in

    @classmethod
    def new(cls, cfg: AnalysisConfig, rate_hz: float) -> "GpuState":
        return cls(cfg=cfg, rate_hz=rate_hz,
                   segmenter=Segmenter(feature_specs(cfg), min_len=cfg.episode_min_s, max_len=cfg.episode_max_s),
                   lifecycle=Lifecycle(cfg.startup_max_s), waits=GpuWaitLearner(cfg.busy_sm_pct),
                   baselines=Baselines(cfg.baseline_s))

    def advance(self, new: list[EpisodeSecond], splits: list[Split], explainer: Explains) -> list[Event]:
        """Add a tick's seconds, close the episodes ``splits`` end, judge and explain every
        episode touched (the open one last); returns their events."""
        self.open += new
        self.engine_known = self.engine_known or any(s.in_flight is not None for s in new)
        events: list[Event] = []
        for split in splits:
            closed = [s for s in self.open if s.t < split.t]
            self.open = [s for s in self.open if s.t >= split.t]
            if closed:
                events += self._episode(closed, explainer, open_=False)
                self.carry = self._carried(events, closed[0].t) if split.reason == "length" else {}
        if self.open:
            events += self._episode(self.open, explainer, open_=True)
        self.code.keep_only_used()
        return events

    def _carried(self, events: list[Event], start: int) -> dict[str, int]:
        """The start of each finding of the episode just cut for length."""
        out = {}
        for e in events:
            if not e.open and e.end >= start:
                out[e.kind] = int(e.start)
        return out

    def _episode(self, seconds: list[EpisodeSecond], explainer: Explains, open_: bool) -> list[Event]:
        core = self._core(seconds)
        v = judge(core, self.cfg, self.rate_hz)
        for s in seconds:
            # inside the core a second shows the episode's class; an episode the classifier could
            # not place (unknown: activity with nothing in flight) lets its idle seconds show
            inside = core[0].t <= s.t <= core[-1].t and v.klass != "unknown"
            self.band[s.t] = v.klass if inside else band_class(v.klass, self.second_class.get(s.t, ("", {}))[0])
        events = explainer.explain(v, seconds, self, open_)
        if not open_:
            self.baselines.add(v)
            self.closed.extend(s.t for s in seconds)
        self.last_verdict = v
        return events

    def _core(self, seconds: list[EpisodeSecond]) -> list[EpisodeSecond]:
        """``seconds`` without the idle seconds at its edges (idle on their own evidence: the
        GPU still, nothing in flight): a boundary is confirmed only ``episode_min_s`` after a
        change, so the few idle seconds before a load starts or after it ends join the load's
        episode, and neither its figures nor its findings' span should count them."""
        def idle(s: EpisodeSecond) -> bool:
            return self.second_class.get(s.t, ("", {}))[0] == "idle"

        lo, hi = 0, len(seconds)
        while lo < hi and idle(seconds[lo]):
            lo += 1
        while hi > lo and idle(seconds[hi - 1]):
            hi -= 1
        return seconds[lo:hi] or seconds

    # -- the band -------------------------------------------------------------------------------
    def first_unwritten(self) -> int | None:
        changed = [t for t, k in self.band.items() if self.written.get(t) != k]
        return min(changed) if changed else None

    def band_from(self, first: int) -> list[tuple[int, str, dict[str, Any]]]:
        return [(t, self.band[t], self.second_class.get(t, ("", {}))[1]) for t in sorted(self.band) if t >= first]

    def mark_written(self, first: int) -> None:
        for t, k in self.band.items():
            if t >= first:
                self.written[t] = k

    def forget_closed(self) -> None:
        """Drop what closed episodes kept (their windows are written)."""
        for t in self.closed:
            self.band.pop(t, None)
            self.written.pop(t, None)
            self.second_class.pop(t, None)
        self.closed = []
        if self.open:
            self.served.forget(self.open[-1].t - SERVED_MEMORY_S)

