"""Turns a judged episode into findings: at most one per cause, each with its evidence.

Step four of the analysis (segment -> judge -> attribute -> explain). Pure: the verdict, the
throttle and the culprit's code come in, storage.model.Event records go out.

- ``cpu_gpu_gap``: a starved episode (host_bound, launch_bound, stall) with work in flight.
  It names the throttle first (throttle.py: decided from where the requests queue), its
  busiest thread and that thread's own code, then the other busy processes. A stall names
  what the serving thread waits in.
- ``noisy_neighbor``: another process was active on the GPU while the engine served; with
  the engine's throughput per request against the nearest episode at the same offered load,
  where one exists (baselines.py), and without one otherwise.
- ``util_throughput_mismatch``: the GPU as busy as (or busier than) at the same offered load
  before, while each request got slower; foreign processes holding the GPU are named.
- ``saturation``: the GPU busy with useful work while the engine's queue grows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infersight.daemon.analysis.baselines import Comparison
from infersight.daemon.analysis.judge import Verdict
from infersight.daemon.analysis.throttle import FRONT_END_ROLES, Throttle
from infersight.daemon.config.load import AnalysisConfig
from infersight.storage.model import Event

STARVED = ("host_bound", "launch_bound", "stall")
# the share of an episode's seconds with work for it to count as serving (judge.py)
WORK_SHARE = 0.5


@dataclass(frozen=True)
class Code:
    """What the culprit ran: its thread, top frames and hot paths (attribution.code_of)."""

    culprit: dict[str, Any] | None
    frames: list[dict] = field(default_factory=list)
    hot_paths: list[dict] = field(default_factory=list)


def lost_gpu_seconds(v: Verdict) -> float:
    sm = v.means.get("sm")
    if sm is None:
        sm = v.means.get("util") or 0.0
    return max(0.0, 1.0 - sm / 100.0) * v.duration


def gap_event(host: str, gpu: int, v: Verdict, throttle: Throttle | None, code: Code, open_: bool,
              event_start: int | None = None) -> Event:
    """The CPU-GPU gap finding of a starved episode. ``event_start``: where the finding began
    when the episode continues an earlier one (a stretch longer than the segmenter keeps)."""
    start = v.start if event_start is None else event_start
    lost = lost_gpu_seconds(v)
    idle_pct = 100.0 * lost / max(1, v.duration)
    in_flight = v.means.get("in_flight") or 0.0
    tokens = v.means.get("gen_tps")
    who = ""
    culprit = code.culprit
    if culprit is not None and v.klass != "stall":
        who = (f"; {culprit['role']} pid {culprit['pid']} thread {culprit['thread']} busy "
               f"{culprit['cpu_pct']:.0f}% of a core on its own work")
    elif culprit is not None:
        who = f"; no serving process busy: {culprit['role']} pid {culprit['pid']} thread {culprit['thread']} waits"
    why = ""
    if throttle is not None and throttle.decided_by == "queueing" and throttle.front_share is not None:
        where = "front end" if throttle.first.role in FRONT_END_ROLES else "engine"
        held = throttle.front_share if where == "front end" else 1.0 - throttle.front_share
        why = f" (the {where} holds {held * 100:.0f}% of the requests in flight)"
    others = ""
    if throttle is not None and len(throttle.order) > 1:
        others = "; also busy: " + ", ".join(f"{p.role} pid {p.pid} {p.own_cpu or 0:.0f}%" for p in throttle.order[1:3])
    top = code.frames[0] if code.frames else None
    hot = code.hot_paths
    summary = (f"GPU {gpu} {v.klass.replace('_', '-')}: {idle_pct:.0f}% idle for {duration_text(v.end - start)}"
               + (f" while {in_flight:.0f} requests were in flight" if in_flight >= 1 else
                  f" while {tokens:.0f} tokens/s flowed" if tokens else "")
               + who + why + others
               + (f"; top frame {top['frame']} {top['share'] * 100:.0f}%" if top else "")
               + (f"; its time splits under {hot[0]['via']}: " if hot and hot[0]["via"] else
                  "; its time splits: " if hot else "")
               + ", ".join(f"{h['frame']} {h['share'] * 100:.0f}%" for h in hot[:3]))
    evidence = {
        **episode_evidence(v, start), "lost_gpu_s": round(lost, 2), "gpu_idle_pct": round(idle_pct, 1),
        "sm_util_mean": _r(v.means.get("sm")), "util_gpu_mean": _r(v.means.get("util")),
        "requests_running_mean": _r(v.means.get("running")), "requests_waiting_mean": _r(v.means.get("waiting")),
        "generation_tokens_per_s_mean": _r(tokens),
        "own_cpu_pct_by_pid": {str(p.pid): _r(p.own_cpu, 1) for p in v.procs if p.own_cpu is not None},
        "class_seconds": {v.klass: v.duration}, "culprit": culprit, "hot_paths": hot,
        "throttle": throttle.evidence() if throttle is not None else None,
    }
    severity = "critical" if v.end - start >= 60 and idle_pct >= 50 else "warning"
    return Event(id=f"cpu_gpu_gap:{host}:{gpu}:{start}", kind="cpu_gpu_gap", start=float(start), end=float(v.end),
                 host=host, gpu=gpu, severity=severity, klass=v.klass, summary=summary, evidence=evidence,
                 top_frames=code.frames, open=open_)


def neighbour_event(host: str, gpu: int, v: Verdict, foreign: list[dict], comparison: Comparison | None,
                    open_: bool, event_start: int | None = None) -> Event:
    """Another process worked on the GPU while the engine served (``foreign``: the active
    ones with their command line, memory and SM share where known)."""
    start = v.start if event_start is None else event_start
    in_flight = v.means.get("in_flight")
    served = f" while the engine served {in_flight:.0f} requests" if in_flight and in_flight >= 1 else ""
    effect = comparison.text() if comparison is not None else "; no earlier episode at the same load to compare"
    summary = (f"GPU {gpu} shared for {duration_text(v.end - start)}: " + name_processes(foreign) + served + effect)
    evidence = {**episode_evidence(v, start), "foreign_processes": foreign,
                "comparison": comparison.evidence() if comparison is not None else None,
                "activity_rises": comparison.rises() if comparison is not None else {},
                "sm_util_mean": _r(v.means.get("sm")), "tensor_util_mean": _r(v.means.get("tensor"))}
    return Event(id=f"noisy_neighbor:{host}:{gpu}:{start}", kind="noisy_neighbor", start=float(start),
                 end=float(v.end), host=host, gpu=gpu, severity="warning", klass=v.klass, summary=summary,
                 evidence=evidence, open=open_)


def mismatch_event(host: str, gpu: int, v: Verdict, comparison: Comparison, present: list[dict], open_: bool,
                   event_start: int | None = None) -> Event:
    """Busy without more throughput against ``comparison`` (the same offered load earlier)."""
    start = v.start if event_start is None else event_start
    summary = (f"GPU {gpu} busy without more throughput for {duration_text(v.end - start)}" + comparison.text()
               + name_foreign(present))
    evidence = {**episode_evidence(v, start), "comparison": comparison.evidence(), "foreign_processes": present,
                "activity_rises": comparison.rises(),
                "tokens_per_s": _r(comparison.now.get("tokens_s")),
                "baseline_tokens_per_s": _r(comparison.base.get("tokens_s"))}
    return Event(id=f"util_throughput_mismatch:{host}:{gpu}:{start}", kind="util_throughput_mismatch",
                 start=float(start), end=float(v.end), host=host, gpu=gpu, severity="warning", klass=v.klass,
                 summary=summary, evidence=evidence, open=open_)


def saturation_event(host: str, gpu: int, v: Verdict, slope_per_s: float, last_waiting: float, open_: bool,
                     event_start: int | None = None) -> Event:
    start = v.start if event_start is None else event_start
    summary = (f"GPU {gpu} saturated for {duration_text(v.end - start)}: busy with useful work "
               f"({v.klass.replace('_', '-')}) while the queue grows ({last_waiting:.0f} waiting, "
               f"+{slope_per_s * 60:.0f}/min); add capacity or change the batch policy")
    evidence = {**episode_evidence(v, start), "requests_waiting_last": round(last_waiting, 1),
                "waiting_growth_per_s": round(slope_per_s, 3)}
    return Event(id=f"saturation:{host}:{gpu}:{start}", kind="saturation", start=float(start), end=float(v.end),
                 host=host, gpu=gpu, severity="warning", klass=v.klass, summary=summary, evidence=evidence,
                 open=open_)


def episode_evidence(v: Verdict, start: int) -> dict[str, Any]:
    """What every finding of an episode carries: its span, class and pooled figures."""
    return {"duration_s": v.end - start,
            "episode": {"start": v.start, "end": v.end, "class": v.klass,
                        "means": {k: _r(x) for k, x in v.means.items() if x is not None},
                        "processes": [p.evidence() for p in v.procs]}}


def name_foreign(foreign: list[dict]) -> str:
    """``; other processes on the GPU: pid 647 neighbor.py (12.0 GiB, 45% SM)``, or "" for none."""
    return "; other processes on the GPU: " + name_processes(foreign) if foreign else ""


def name_processes(procs: list[dict]) -> str:
    """``pid 647 neighbor.py (12.0 GiB, 45% SM)`` for the first three, ``and N more``."""
    names = []
    for f in procs[:3]:
        facts = []
        if f.get("used_memory_bytes"):
            facts.append(f"{f['used_memory_bytes'] / 2**30:.1f} GiB")
        if f.get("sm_util") is not None:
            facts.append(f"{f['sm_util']:.0f}% SM")
        elif f.get("cpu_pct") is not None:
            facts.append(f"{f['cpu_pct']:.0f}% CPU")
        program = program_of(f.get("cmdline"))
        names.append(f"pid {f['pid']}" + (f" {program}" if program else "") + (f" ({', '.join(facts)})" if facts else ""))
    more = f" and {len(procs) - 3} more" if len(procs) > 3 else ""
    return ", ".join(names) + more


def program_of(cmdline: str | None) -> str:
    """The program a command line runs, short: ``python3 train.py --x`` -> ``train.py``."""
    words = (cmdline or "").split()
    for w in words:
        base = w.rsplit("/", 1)[-1]
        if not base.startswith("-") and not base.startswith("python"):
            return base[:40]
    return words[0].rsplit("/", 1)[-1][:40] if words else ""


def duration_text(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _r(v: float | None, digits: int = 2) -> float | None:
    return None if v is None else round(v, digits)


def wants_gap(v: Verdict, engine_known: bool) -> bool:
    """A starved episode with work in flight (a busy process serving nobody starves nobody).
    ``engine_known``: the GPU's engine has reported before; where it never has (plain
    PyTorch code, no metrics), a starved episode counts without it."""
    if v.klass not in STARVED:
        return False
    share = v.means.get("work_share")
    if share is None:
        return not engine_known and v.klass != "stall"
    return share >= WORK_SHARE


def saturation(seconds_waiting: list[tuple[int, float]], cfg: AnalysisConfig) -> tuple[float, float] | None:
    """(growth per second, last value) of the engine's waiting requests when the queue keeps
    growing: the slope over the episode's second half above 0.05 requests/s and at least one
    waiting at the end. The first half is left out: a queue filling once as clients arrive
    and then holding steady is a full engine, not a growing backlog."""
    pts = [(t, w) for t, w in seconds_waiting if w is not None]
    if len(pts) < max(3, int(cfg.saturation_min_s)):
        return None
    pts = pts[len(pts) // 2:]
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    den = sum((t - mt) ** 2 for t, _ in pts)
    slope = sum((t - mt) * (v - mv) for t, v in pts) / den if den else 0.0
    if slope > 0.05 and pts[-1][1] >= 1:
        return slope, pts[-1][1]
    return None
