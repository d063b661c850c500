"""Stragglers among the ranks of one multi-GPU engine: the rank the others wait for.

Every step of a tensor-parallel engine ends in collectives (all-reduces), so the engine
runs at the pace of its slowest rank: a rank whose CPU is late (a noisy process on its
cores, extra Python work) or whose GPU is slower (another process's kernels on it) makes
the other ranks wait inside the collective while every GPU reads busy.

**Which GPUs form one engine.** A rank is a ``worker`` process (vLLM's ``VLLM::Worker_TPn``,
``VllmWorker TPn``; daemon/stacks/roles.py) bound to one GPU: the one GPU it holds a context
on or, when NVML lists it on several, the one where it holds the most memory. The engine's
GPUs are those its engine core or API server is bound to (discovery gives a serving process
without a context its deployment's GPUs); ranks no such process claims form one engine
together (all the workers of the host, when no finer map exists). An engine needs two
ranks or more.

**Per second and rank** (the rank's step thread: the thread with the most samples that
are not plain waits), from the thread split of analysis/threads.py: the shares of its
samples (active, and idle where py-spy recorded them) spent on its own work, waiting in
collectives and waiting on the GPU; its GPU's SM activity; NVLink bytes/s where GPM gives
them (evidence only: both sides of an all-reduce move the same bytes). A GPU wait counts as
waiting on the peers too: with CUDA graphs the all-reduce runs inside the graph, and the
CPU of a rank whose GPU waits for a late peer blocks at the step's next sync, not in a
Python collective frame. Shares are pooled over the trailing seconds until each rank has
``MIN_SAMPLES`` (at most ``POOL_MAX_S`` seconds), so low sampling rates still judge.

**The verdict** (a second is a straggler second when either holds, CPU first):

- *cpu*: the rank with the most own work is on its own work for at least ``SLOW_OWN_MIN``
  of its samples and waits for at most ``SLOW_WAIT_MAX``, while every other rank waits
  (collectives or GPU) for at least ``PEER_WAIT_MIN`` and works less by ``Z_MIN`` standard
  errors (sampling noise at low rates: without it, two balanced ranks each 50-70% on their
  own work, sampled at 1-10 Hz, gave 5-31 false findings per simulated hour);
- *gpu*: every rank but one waits for at least ``PEER_WAIT_MIN`` while that one's GPU is
  busier (SM at least ``SM_MARGIN_PTS`` points and ``SM_RATIO`` times above every other):
  extra GPU work on one GPU, the others' GPUs spinning in the collective.

Straggler seconds of one slow rank and cause that last ``analysis.straggler_min_s`` (holes
of up to ``MERGE_S`` merged) become one ``straggler`` event on the slow rank's GPU, naming
the rank (pid, GPU, role, thread), its top own-work frames and hot paths
(attribution.code_of, over the thread's stacks read back from the database) and, as evidence, every rank's shares, SM and NVLink traffic.

The thresholds are first guesses from the shape of the problem, not yet measured on a real
tensor-parallel engine: the balanced case is both ranks waiting (GPU-bound) or both working
(host-bound) alike, and a straggler splits them.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from infersight.daemon.analysis import attribution
from infersight.daemon.analysis.classify import Second
from infersight.daemon.analysis.findings import name_foreign
from infersight.daemon.analysis.runs import RunTracker, Segment
from infersight.daemon.analysis.seconds import FOREIGN_ROLES
from infersight.daemon.analysis.numbers import mean_reported, round_reported
from infersight.daemon.analysis.threads import own_stacks
from infersight.daemon.config.load import AnalysisConfig
from infersight.storage import analysis as q
from infersight.storage import series
from infersight.storage.model import Event
from infersight.storage.store import Store

RANK_ROLE = "worker"
ENGINE_ROLES = ("engine_core", "api_server")   # bound to their deployment's GPUs
SLOW_OWN_MIN = 0.5
SLOW_WAIT_MAX = 0.2
PEER_WAIT_MIN = 0.5
Z_MIN = 3.0           # the slow rank's own-work share above each other's, in standard errors
SM_MARGIN_PTS = 20.0
SM_RATIO = 1.5
MIN_SAMPLES = 10      # per rank, pooled over the trailing seconds
POOL_MAX_S = 10       # the longest pool (1 Hz sampling)
MERGE_S = 2


@dataclass
class RankCounts:
    """One rank's step thread during one second."""

    gpu: int
    pid: int
    role: str
    tid: int
    thread: str
    own: int = 0
    wait: int = 0
    gpu_wait: int = 0
    collective: int = 0
    idle: int = 0
    sm_util: float | None = None
    own_cpu_pct: float | None = None

    @property
    def samples(self) -> int:
        return self.own + self.wait + self.gpu_wait + self.collective + self.idle


@dataclass
class Pooled:
    """A rank's counts summed over the trailing seconds its verdict reads."""

    gpu: int
    pid: int
    samples: int
    own: float
    collective: float
    gpu_wait: float
    sm_util: float | None

    @property
    def peer_wait(self) -> float:
        return self.collective + self.gpu_wait


def rank_counts(gpu: int, s: Second, pid: int, rate_hz: float) -> RankCounts | None:
    """The step thread of rank ``pid`` on ``gpu`` in second ``s`` (None without samples)."""
    p = next((p for p in s.processes if p.pid == pid), None)
    if p is None or p.work is None:
        return None
    step = max(p.work.threads, key=lambda t: (t.own + t.gpu_wait + t.collective, -t.tid), default=None)
    if step is None or step.own + step.wait + step.gpu_wait + step.collective + step.idle == 0:
        return None
    return RankCounts(gpu=gpu, pid=pid, role=RANK_ROLE, tid=step.tid, thread=step.name or str(step.tid), own=step.own,
                      wait=step.wait, gpu_wait=step.gpu_wait, collective=step.collective, idle=step.idle,
                      sm_util=s.sm_util, own_cpu_pct=p.own_cpu_pct(rate_hz))


def engine_ranks(targets: list[dict], memory: dict[int, dict[int, float]], t_from: float) -> list[dict[int, int]]:
    """The engines of the host as ``{gpu: rank pid}`` maps of two ranks or more (module
    docstring). ``memory`` is NVML's GPU memory per GPU and pid (to place a worker listed on
    several GPUs); targets that exited before ``t_from`` are left out."""
    alive = [t for t in targets if t["exited_at"] is None or t["exited_at"] >= t_from]
    rank_of: dict[int, int] = {}
    for t in sorted(alive, key=lambda t: t["last_seen"] or 0.0):
        gpus = tuple(t["gpus"] or ())
        if t["role"] != RANK_ROLE or not gpus:
            continue
        if len(gpus) > 1:
            held = {g: memory.get(g, {}).get(int(t["pid"])) or 0.0 for g in gpus}
            gpus = (max(held, key=held.get),) if any(held.values()) else ()
        if gpus:
            rank_of[gpus[0]] = int(t["pid"])    # the newest worker on a GPU (a restart) wins
    engines: list[dict[int, int]] = []
    claimed: set[int] = set()
    for t in alive:
        if t["role"] in ENGINE_ROLES and len(t["gpus"] or ()) >= 2:
            mine = sorted(set(t["gpus"]) & set(rank_of) - claimed)
            if len(mine) >= 2:
                engines.append({g: rank_of[g] for g in mine})
                claimed |= set(mine)
    rest = sorted(set(rank_of) - claimed)
    if len(rest) >= 2:
        engines.append({g: rank_of[g] for g in rest})
    return engines


def judge(pooled: list[Pooled]) -> tuple[str, Pooled] | None:
    """The cause (``cpu`` or ``gpu``) and the slow rank, or None (module docstring)."""
    if len(pooled) < 2:
        return None
    share = {r.gpu: (r.own / r.samples, r.peer_wait / r.samples) for r in pooled}
    slow = max(pooled, key=lambda r: (share[r.gpu][0], -r.gpu))
    others = [r for r in pooled if r is not slow]
    if (share[slow.gpu][0] >= SLOW_OWN_MIN and share[slow.gpu][1] <= SLOW_WAIT_MAX
            and all(share[r.gpu][1] >= PEER_WAIT_MIN and _z(slow, r) >= Z_MIN for r in others)):
        return "cpu", slow
    if any(r.sm_util is None for r in pooled):
        return None
    hot = max(pooled, key=lambda r: (r.sm_util or 0.0, -r.gpu))
    rest_sm = max(r.sm_util or 0.0 for r in pooled if r is not hot)
    if ((hot.sm_util or 0.0) >= rest_sm + SM_MARGIN_PTS and (hot.sm_util or 0.0) >= SM_RATIO * rest_sm
            and all(share[r.gpu][1] >= PEER_WAIT_MIN for r in pooled if r is not hot)):
        return "gpu", hot
    return None


def _z(a: Pooled, b: Pooled) -> float:
    """How many standard errors ``a``'s own-work share lies above ``b``'s (two-proportion
    z): at a few samples per second, balanced ranks drift apart by chance for seconds on end."""
    pa, pb = a.own / a.samples, b.own / b.samples
    p = (a.own + b.own) / (a.samples + b.samples)
    se = (p * (1 - p) * (1 / a.samples + 1 / b.samples)) ** 0.5
    return (pa - pb) / se if se else (float("inf") if pa > pb else 0.0)


class StragglerDetector:
    """Fed each GPU's analysed seconds (``add``, after the thread split), then asked for the
    events of the piece once every GPU is in (``events``). Keeps across pieces the trailing
    seconds each verdict pools, the open run and its seconds' details."""

    def __init__(self, cfg: AnalysisConfig, rate_hz: float) -> None:
        self.cfg = cfg
        self.rate_hz = rate_hz
        self.pending: dict[int, list[Second]] = {}
        self.trackers: dict[tuple[int, ...], RunTracker] = {}
        self.recent: dict[tuple[int, ...], deque[tuple[int, dict[int, RankCounts]]]] = {}
        self.details: dict[tuple[int, ...], dict[int, dict[int, RankCounts]]] = {}
        self.code = attribution.ThreadCode()    # the slow threads' stacks while their runs are open

    def add(self, gpu: int, seconds: list[Second]) -> None:
        self.pending.setdefault(gpu, []).extend(seconds)

    def events(self, store: Store, host: str, targets: list[dict], t_from: int, t_to: int,
               gpu_waits: Callable[[int, int], frozenset[str]] = lambda gpu, pid: frozenset()) -> list[Event]:
        """The events of the piece [t_from, t_to) once every GPU's seconds are in;
        ``gpu_waits(gpu, pid)`` gives the leaves learned as GPU waits (the thread split's)."""
        pending, self.pending = self.pending, {}
        # NVML's memory per pid places a worker listed on several GPUs; most hosts need no read
        listed = {g for t in targets if t["role"] == RANK_ROLE and len(t["gpus"] or ()) > 1 for g in t["gpus"]}
        memory = {g: {pid: info["used_memory_bytes"] or 0.0 for pid, info in
                      store.read_sync(q.gpu_processes, g, t_from, t_to).items()} for g in sorted(listed)}
        info = {int(t["pid"]): t for t in sorted(targets, key=lambda t: t["last_seen"] or 0.0)}
        out: list[Event] = []
        engines = {tuple(sorted(ranks)): ranks for ranks in engine_ranks(targets, memory, t_from)}
        # an engine that went away (its workers exited) still closes its run
        for key in sorted(set(engines) | set(self.trackers)):
            ranks = engines.get(key, {})
            tracker = self.trackers.setdefault(key, RunTracker(("straggler",), MERGE_S, self.cfg.straggler_min_s))
            by_t: dict[int, dict[int, RankCounts]] = {}
            for gpu, pid in ranks.items():
                for s in pending.get(gpu, ()):
                    c = rank_counts(gpu, s, pid, self.rate_hz)
                    if c is not None:
                        by_t.setdefault(s.t, {})[gpu] = c
            details = self.details.setdefault(key, {})
            recent = self.recent.setdefault(key, deque())
            done: list[Segment] = []
            for t in sorted(by_t):
                recent.append((t, by_t[t]))
                while recent[0][0] <= t - POOL_MAX_S:
                    recent.popleft()
                verdict = judge(_pool(key, [counts for _, counts in recent]))
                if verdict is None:
                    done += tracker.feed(t, "ok")
                    continue
                cause, slow = verdict
                details[t] = by_t[t]
                done += tracker.feed(t, "straggler", f"{cause}:{slow.gpu}:{slow.pid}")
            done += tracker.flush_until(t_to)
            out += [self._event(store, host, key, seg, details, info, gpu_waits, False) for seg in done]
            out += [self._event(store, host, key, seg, details, info, gpu_waits, True)
                    for seg in tracker.open_segments()]
            if not ranks and tracker.open_since() is None:
                for state in (self.trackers, self.details, self.recent):
                    del state[key]
                continue
            first = tracker.open_since()
            for t in [t for t in details if first is None or t < first]:
                del details[t]
        self.code.keep_only_used()
        return out

    def _event(self, store: Store, host: str, key: tuple[int, ...], seg: Segment,
               details: dict[int, dict[int, RankCounts]], info: dict[int, dict],
               gpu_waits: Callable[[int, int], frozenset[str]], open_: bool) -> Event:
        cause, gpu, pid = seg.label.split("|", 1)[1].split(":")
        gpu, pid = int(gpu), int(pid)
        secs = [details[t] for t in seg.seconds if t in details]
        ranks = [_rank_summary(g, [d[g] for d in secs if g in d]) for g in key]
        slow = next(r for r in ranks if r["gpu"] == gpu)
        others = [r for r in ranks if r["gpu"] != gpu]
        for r in ranks:
            r.update(_nvlink(store, r["gpu"], seg.start, seg.end))
        frames, hot = [], []
        if slow["pid"] == pid and slow["tid"] is not None:
            who = {"pid": pid, "tid": slow["tid"], "role": slow["role"], "thread": slow["thread"]}
            active = self.code.stacks(store, pid, slow["tid"], seg.start, seg.end)
            frames, hot = attribution.code_of(own_stacks(active, gpu_waits(gpu, pid)), who, self.cfg.top_frames)
        wait = mean_reported([r["peer_wait_share"] for r in others])
        coll = mean_reported([r["collective_share"] for r in others])
        # a GPU busier than its peers: name what else runs on it (NVML's processes there that
        # no target serves, as the mismatch finding does)
        foreign = [] if cause == "cpu" else _foreign(store, gpu, seg, info)
        evidence = {"cause": cause, "duration_s": seg.duration, "engine_gpus": list(key),
                    "slow_rank": {k: slow[k] for k in ("gpu", "pid", "role", "thread")},
                    "other_ranks_wait_share": round_reported(wait, 3),
                    "other_ranks_collective_share": round_reported(coll, 3),
                    "ranks": ranks, "hot_paths": hot, "foreign_processes": foreign}
        summary = _summary(cause, key, seg, slow, others, frames, hot) + name_foreign(foreign)
        return Event(id=f"straggler:{host}:{gpu}:{seg.start}", kind="straggler", start=float(seg.start),
                     end=float(seg.end), host=host, gpu=gpu, severity="warning", klass=None, summary=summary,
                     evidence=evidence, top_frames=frames, open=open_)


def _summary(cause: str, key: tuple[int, ...], seg: Segment, slow: dict, others: list[dict], frames: list[dict],
             hot: list[dict]) -> str:
    """One line: the slow rank, why it is slow, how long the others waited and, for a rank
    slow on its CPU, its code (a GPU-slow rank's own frames are not the cause: left out)."""
    wait = mean_reported([r["peer_wait_share"] for r in others]) or 0.0
    coll = mean_reported([r["collective_share"] for r in others]) or 0.0
    if cause == "cpu":
        why = (f"its {slow['role']} pid {slow['pid']} thread {slow['thread']} on its own work "
               f"{(slow['own_share'] or 0) * 100:.0f}% of the time")
    else:
        why = (f"its GPU busier (SM {slow['sm_util'] or 0:.0f}% vs "
               + ", ".join(f"{r['sm_util'] or 0:.0f}%" for r in others)
               + f" on GPU {', '.join(str(r['gpu']) for r in others)}), {slow['role']} pid {slow['pid']}")
    code = ""
    if cause == "cpu" and frames:
        code = (f"; top frame {frames[0]['frame']} {frames[0]['share'] * 100:.0f}%"
                + (f"; its time splits under {hot[0]['via']}: " if hot and hot[0]["via"] else
                   "; its time splits: " if hot else "")
                + ", ".join(f"{h['frame']} {h['share'] * 100:.0f}%" for h in hot[:3]))
    return (f"GPU {slow['gpu']} is the straggler of the engine on GPUs {', '.join(map(str, key))} for "
            f"{seg.duration}s: {why}, while the other ranks waited {wait * 100:.0f}% of the time "
            f"({coll * 100:.0f}% in collectives)" + code)


def _foreign(store: Store, gpu: int, seg: Segment, info: dict[int, dict]) -> list[dict]:
    """Processes NVML saw on ``gpu`` during ``seg`` that are no target or a foreign one, with
    their (redacted) command line, GPU memory and SM share where known."""
    seen = store.read_sync(q.gpu_processes, gpu, float(seg.start), float(seg.end))
    out = []
    for pid, nv in sorted(seen.items()):
        target = info.get(pid, {})
        if target.get("role") in (None, *FOREIGN_ROLES):
            out.append({"pid": pid, "role": target.get("role", "unknown"), "cmdline": target.get("cmdline") or None,
                        "sm_util": nv["sm_util"], "used_memory_bytes": nv["used_memory_bytes"]})
    return out


def _pool(key: tuple[int, ...], recent: list[dict[int, RankCounts]]) -> list[Pooled]:
    """Each rank's counts over the newest seconds that reach MIN_SAMPLES (empty when a rank
    never does within the pool: no verdict)."""
    out = []
    for gpu in key:
        own = coll = gw = 0
        n = 0
        sm: list[float] = []
        pid = None
        for second in reversed(recent):
            c = second.get(gpu)
            if c is None:
                continue
            pid = pid if pid is not None else c.pid
            own, coll, gw, n = own + c.own, coll + c.collective, gw + c.gpu_wait, n + c.samples
            if c.sm_util is not None:
                sm.append(c.sm_util)
            if n >= MIN_SAMPLES:
                break
        if n < MIN_SAMPLES or pid is None:
            return []
        out.append(Pooled(gpu, pid, n, own, coll, gw, sum(sm) / len(sm) if sm else None))
    return out


def _rank_summary(gpu: int, counts: list[RankCounts]) -> dict[str, Any]:
    n = sum(c.samples for c in counts)
    tids: dict[int, int] = {}
    for c in counts:
        tids[c.tid] = tids.get(c.tid, 0) + 1
    tid = max(tids, key=tids.get) if tids else None
    last = next((c for c in reversed(counts) if c.tid == tid), None)

    def share(attr: str) -> float | None:
        return round(sum(getattr(c, attr) for c in counts) / n, 3) if n else None

    return {"gpu": gpu, "pid": last.pid if last else None, "role": last.role if last else None,
            "thread": last.thread if last else None, "tid": tid, "samples": n,
            "own_share": share("own"), "collective_share": share("collective"), "gpu_wait_share": share("gpu_wait"),
            "peer_wait_share": (round(sum(c.collective + c.gpu_wait for c in counts) / n, 3) if n else None),
            "own_cpu_pct": round_reported(mean_reported([c.own_cpu_pct for c in counts]), 1),
            "sm_util": round_reported(mean_reported([c.sm_util for c in counts]), 1)}


def _nvlink(store: Store, gpu: int, start: int, end: int) -> dict[str, float | None]:
    """Mean NVLink bytes/s each way over [start, end) (None where GPM/DCGM gave none)."""
    out: dict[str, float | None] = {}
    for signal in ("nvlink_rx_bytes_s", "nvlink_tx_bytes_s"):
        points = store.read_sync(series.gpu_series, signal, gpu, float(start), float(end), float(max(1, end - start)))
        out[signal] = points[0][1] if points else None
    return out
