"""Judges an episode from its aggregate: one class, with the evidence it was decided on.

Step two of the analysis (segment -> judge -> attribute -> explain). Every quantity is pooled
over the episode's seconds, never decided per second:

- GPU counters and engine signals: their means over the seconds that have them;
- each serving process: its mean CPU (psutil, % of one core) and the split of all its py-spy
  samples in the episode into own work, plain waits, GPU waits and collective waits
  (analysis/threads.py). Its own-work CPU is the mean CPU times the own share of its
  working samples (own + GPU waits + collectives): a thread spinning in a CUDA sync reads
  100 % to the kernel but is waiting. The share comes with its sample count and standard
  error (binomial, doubled for the samples' correlation from one 20 ms tick to the next);
- the pipeline figures (requests the front end holds, requests inside the engine) leave out
  the episode's first ``SETTLE_S`` seconds, where requests cancelled by the previous load
  complete and distort Little's law.

The class then comes from the same rules as a single second (classify.py), applied to these
means: stable inputs, so a steady workload near a threshold gets one answer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from infersight.daemon.analysis.classify import ProcessSecond, Second, classify
from infersight.daemon.analysis.observe import EpisodeSecond
from infersight.daemon.config.load import AnalysisConfig

SETTLE_S = 2
WORK_SHARE = 0.5      # an episode serves when at least this share of its seconds had work
PRESENT_SHARE = 0.5   # a process's CPU is its mean over the episode when it reported in fewer seconds


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    tid: int
    name: str
    own: int
    own_cpu: float            # % of one core spent on its own work, pooled


@dataclass(frozen=True, slots=True)
class ProcessSummary:
    """One serving process pooled over an episode (module docstring)."""

    pid: int
    role: str
    cpu: float | None            # mean psutil CPU, % of one core
    own: int
    wait: int
    gpu_wait: int
    collective: int
    idle: int
    own_share: float | None      # own / (own + GPU waits + collectives)
    own_share_se: float | None
    own_cpu: float | None        # % of one core on its own work
    threads: tuple[ThreadSummary, ...] = ()

    @property
    def working(self) -> int:
        return self.own + self.gpu_wait + self.collective

    def evidence(self) -> dict[str, Any]:
        return {"pid": self.pid, "role": self.role, "cpu_pct": _r(self.cpu, 1), "own_cpu_pct": _r(self.own_cpu, 1),
                "own_share": _r(self.own_share, 3), "own_share_se": _r(self.own_share_se, 3),
                "samples": {"own": self.own, "gpu_wait": self.gpu_wait, "collective": self.collective,
                            "wait": self.wait, "idle": self.idle}}


@dataclass(frozen=True)
class Verdict:
    """An episode's class and the pooled figures it was decided on."""

    klass: str
    start: int
    end: int                     # one past the last second
    means: dict[str, float | None]
    procs: tuple[ProcessSummary, ...]
    foreign: tuple[dict, ...]
    features: dict[str, Any] = field(default_factory=dict)
    aggregate: Second | None = None      # what the classifier read (bench/real_engine/margins.py)

    @property
    def duration(self) -> int:
        return self.end - self.start

    def proc(self, pid: int) -> ProcessSummary | None:
        return next((p for p in self.procs if p.pid == pid), None)


MEAN_FIELDS = ("sm", "tensor", "dram", "util", "occupancy", "running", "waiting", "gen_tps", "prompt_tps",
               "requests_s")
PIPELINE_FIELDS = ("http_in_flight", "engine_held")


def judge(seconds: list[EpisodeSecond], cfg: AnalysisConfig, rate_hz: float) -> Verdict:
    """The class of the episode made of ``seconds`` (time order, at least one)."""
    means = {name: _mean(getattr(s, name) for s in seconds) for name in MEAN_FIELDS}
    settled = seconds[SETTLE_S:] if len(seconds) > 2 * SETTLE_S else seconds
    means.update({name: _mean(getattr(s, name) for s in settled) for name in PIPELINE_FIELDS})
    in_flight = [s.in_flight for s in seconds if s.in_flight is not None]
    means["in_flight"] = sum(in_flight) / len(in_flight) if in_flight else None
    work = [s.has_work for s in seconds if s.has_work is not None]
    # the share of seconds with work: one second of lagging token counters in an idle stretch
    # is not work, a trickle of short requests the gauges never catch is
    means["work_share"] = sum(work) / len(work) if work else None
    procs = tuple(_pool(seconds, rate_hz))
    foreign = _foreign(seconds)
    lifecycle = seconds[0].lifecycle if all(s.lifecycle == seconds[0].lifecycle for s in seconds) else None
    agg = Second(t=seconds[0].t, gpu=0, util_gpu=means["util"], sm_util=means["sm"], sm_occupancy=means["occupancy"],
                 tensor_util=means["tensor"], dram_bw_util=means["dram"], running=means["running"],
                 waiting=means["waiting"], gen_tokens_s=means["gen_tps"], prompt_tokens_s=means["prompt_tps"],
                 serving=None if means["work_share"] is None else means["work_share"] >= WORK_SHARE,
                 processes=[_as_process_second(p, len(seconds), rate_hz) for p in procs])
    klass, features = classify(agg, cfg, rate_hz, lifecycle)
    return Verdict(klass, seconds[0].t, seconds[-1].t + 1, means, procs, foreign, features, agg)


def _as_process_second(p: ProcessSummary, n: int, rate_hz: float) -> ProcessSecond:
    """A pooled process in the form classify reads: its own-work CPU comes out as pooled."""
    cpu = p.cpu
    if cpu is None and p.working and rate_hz:
        cpu = 100.0 * min(1.0, p.working / (n * rate_hz))
    return ProcessSecond(pid=p.pid, role=p.role, cpu_pct=cpu, active=p.working,
                         gpu_wait=p.gpu_wait + p.collective)


def _pool(seconds: list[EpisodeSecond], rate_hz: float) -> list[ProcessSummary]:
    acc: dict[int, dict] = {}
    for s in seconds:
        for p in s.procs:
            a = acc.setdefault(p.pid, {"role": p.role, "cpu": [], "own": 0, "wait": 0, "gpu_wait": 0,
                                       "collective": 0, "idle": 0, "threads": {}})
            if p.cpu is not None:
                a["cpu"].append(p.cpu)
            for k in ("own", "wait", "gpu_wait", "collective", "idle"):
                a[k] += getattr(p, k)
            for t in p.threads:
                name, own = a["threads"].get(t.tid, (t.name, 0))
                a["threads"][t.tid] = (t.name or name, own + t.own)
    out = []
    n = len(seconds)
    for pid, a in sorted(acc.items()):
        working = a["own"] + a["gpu_wait"] + a["collective"]
        cpu = sum(a["cpu"]) / len(a["cpu"]) if a["cpu"] else None
        if cpu is not None and len(a["cpu"]) < PRESENT_SHARE * n:
            # a process seen in a few of the episode's seconds (one that was starting or
            # leaving at its edge) weighs what it did over the whole episode
            cpu = sum(a["cpu"]) / n
        share = a["own"] / working if working else None
        se = 2.0 * math.sqrt(share * (1 - share) / working) if working and share is not None else None
        base = cpu if cpu is not None else (100.0 * min(1.0, working / (n * rate_hz)) if working and rate_hz else None)
        own_cpu = None if base is None else base * (share if share is not None else 1.0)
        threads = tuple(sorted(
            (ThreadSummary(tid, name, own, round((own_cpu or 0.0) * own / a["own"], 1) if a["own"] else 0.0)
             for tid, (name, own) in a["threads"].items()), key=lambda t: (-t.own, t.tid)))
        out.append(ProcessSummary(pid, a["role"], cpu, a["own"], a["wait"], a["gpu_wait"], a["collective"], a["idle"],
                                  share, se, own_cpu, threads))
    return out


def _foreign(seconds: list[EpisodeSecond]) -> tuple[dict, ...]:
    """Foreign processes active in the episode: pid, the share of its seconds they were active
    in, their mean SM share and CPU while active."""
    acc: dict[int, dict] = {}
    for s in seconds:
        for f in s.foreign:
            a = acc.setdefault(f.pid, {"seconds": 0, "sm": [], "cpu": []})
            a["seconds"] += 1
            if f.sm is not None:
                a["sm"].append(f.sm)
            if f.cpu is not None:
                a["cpu"].append(f.cpu)
    return tuple({"pid": pid, "active_share": round(a["seconds"] / len(seconds), 3),
                  "sm_util": _r(_mean(a["sm"]), 1), "cpu_pct": _r(_mean(a["cpu"]), 1)}
                 for pid, a in sorted(acc.items()))


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _r(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)
