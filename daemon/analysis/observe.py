"""What the episode pipeline keeps of one second of one GPU, and what the segmenter reads.

:class:`EpisodeSecond` is the compact, immutable record of a second (GPU counters, engine
signals, each serving process's CPU and its samples split into own work and waits, the
foreign processes active on the GPU). Episodes are judged from lists of them; they are kept
only while their episode is open.

:func:`observation` turns one into the segmenter's input: the hard key (the lifecycle state:
starting, stopping or serving) and the soft features with the units their thresholds use
(:data:`FEATURES`, whose margins against the real recordings AnalysisConfig documents).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from infersight.daemon.analysis.profiles import by_file
from infersight.daemon.analysis.segment import FeatureSpec, Observation
from infersight.daemon.analysis.threads import leaf_key
from infersight.daemon.config.load import AnalysisConfig

# a foreign process counts as active in a second when NVML gives it this SM share (%), or,
# where NVML gives none for it, when it uses this much of a core: a process that drives a
# GPU keeps a core busy launching and waiting (neighbor GEMMs: 100 %; idle holders: 0-2 %)
FOREIGN_SM_PCT = 5.0
FOREIGN_CPU_PCT = 30.0
# tokens/s under which the prompt share of the token flow is not read (a trickle has no mix)
MIX_MIN_TOKENS_S = 20.0
# a process's code profile is read only in seconds it works this hard (% of a core): what a
# mostly idle process runs in between does not make a new workload
PROFILE_MIN_CPU_PCT = 50.0


@dataclass(frozen=True, slots=True)
class ThreadSecond:
    tid: int
    name: str
    own: int            # own-work samples
    gpu_wait: int = 0   # samples waiting on the GPU: the thread serves, it is not idle


@dataclass(frozen=True, slots=True)
class ProcSecond:
    """One serving process in one second: psutil CPU (% of a core, None: not read) and its
    py-spy samples split (analysis/threads.py)."""

    pid: int
    role: str
    cpu: float | None
    own: int = 0
    wait: int = 0
    gpu_wait: int = 0
    collective: int = 0
    idle: int = 0
    threads: tuple[ThreadSecond, ...] = ()
    modules: tuple[tuple[str, int], ...] = ()      # own-work samples by file


@dataclass(frozen=True, slots=True)
class ForeignSecond:
    """A process on the GPU that does not serve it, active this second."""

    pid: int
    sm: float | None        # NVML SM share, % (None: not given)
    cpu: float | None       # % of a core


@dataclass(frozen=True, slots=True)
class EpisodeSecond:
    t: int
    lifecycle: str | None
    sm: float | None = None
    tensor: float | None = None
    dram: float | None = None
    util: float | None = None
    occupancy: float | None = None
    running: float | None = None
    waiting: float | None = None
    gen_tps: float | None = None
    prompt_tps: float | None = None
    http_in_flight: float | None = None
    engine_held: float | None = None       # requests inside the engine by its own clocks
    requests_s: float | None = None
    procs: tuple[ProcSecond, ...] = ()
    foreign: tuple[ForeignSecond, ...] = ()

    @property
    def in_flight(self) -> float | None:
        """Requests running plus waiting in the engine (None: the engine said nothing)."""
        if self.running is None and self.waiting is None:
            return None
        return (self.running or 0.0) + (self.waiting or 0.0)

    @property
    def has_work(self) -> bool | None:
        """The classifier's test of one second (classify.Second.in_flight): requests running or
        waiting, or tokens flowing; None without engine data."""
        values = [v for v in (self.running, self.waiting, self.gen_tps, self.prompt_tps) if v is not None]
        if not values:
            return None
        return any(v > 0.5 for v in values[:2]) or any(v > 0 for v in values[2:])

    @property
    def tokens_s(self) -> float | None:
        if self.gen_tps is None and self.prompt_tps is None:
            return None
        return (self.gen_tps or 0.0) + (self.prompt_tps or 0.0)


def feature_specs(cfg: AnalysisConfig) -> dict[str, FeatureSpec]:
    """The segmenter's features and their thresholds (AnalysisConfig documents each margin)."""
    return {
        "load": FeatureSpec(cfg.episode_load_log2),
        "front": FeatureSpec(cfg.episode_load_log2),
        "mix": FeatureSpec(cfg.episode_mix, min_count=3),
        "sm": FeatureSpec(cfg.episode_gpu_pct),
        "tensor": FeatureSpec(cfg.episode_gpu_pct),
        "dram": FeatureSpec(cfg.episode_gpu_pct),
        "foreign": FeatureSpec(cfg.episode_foreign),
        "cpu": FeatureSpec(cfg.episode_cpu_pct),
        "prof": FeatureSpec(cfg.episode_profile_novel, min_count=cfg.episode_profile_samples),
        # a serving process appears or goes (a restart, a new rank): 1 while it reports, else 0
        "proc": FeatureSpec(0.75, absent=0.0),
    }


def observation(s: EpisodeSecond) -> Observation:
    """The segmenter's view of a second (module docstring). Load is read on a log2 scale
    (requests in flight + 1): a change from 1 to 48 streams is large, 120 to 128 nothing."""
    key = (s.lifecycle or "serving",)
    if s.lifecycle:
        # start-up and shutdown are one episode each, whatever their code does meanwhile
        return Observation(s.t, key)
    num: dict[str, float] = {}
    if s.in_flight is not None:
        num["load"] = math.log2(1.0 + s.in_flight)
    if s.http_in_flight is not None:
        num["front"] = math.log2(1.0 + s.http_in_flight)
    tokens = s.tokens_s
    if tokens is not None and tokens >= MIX_MIN_TOKENS_S:
        num["mix"] = (s.prompt_tps or 0.0) / tokens
    for name, v in (("sm", s.sm if s.sm is not None else s.util), ("tensor", s.tensor), ("dram", s.dram)):
        if v is not None:
            num[name] = v
    num["foreign"] = 1.0 if s.foreign else 0.0
    profiles: dict[str, dict[str, int]] = {}
    for p in s.procs:
        num[f"proc:{p.pid}"] = 1.0
        if p.cpu is not None:
            num[f"cpu:{p.pid}"] = p.cpu
        if p.modules and p.cpu is not None and p.cpu >= PROFILE_MIN_CPU_PCT:
            profiles[f"prof:{p.pid}"] = dict(p.modules)
    return Observation(s.t, key, num, profiles)


def modules_of(own_stacks: dict[tuple, int]) -> tuple[tuple[str, int], ...]:
    """Own-work samples by the file of their leaf frame, largest first."""
    leaves: dict[str, float] = {}
    for path, n in own_stacks.items():
        k = leaf_key(path)
        leaves[k] = leaves.get(k, 0) + n
    files = by_file(leaves)
    return tuple(sorted(((f, int(v)) for f, v in files.items()), key=lambda kv: (-kv[1], kv[0])))
