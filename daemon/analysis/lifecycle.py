"""Start-up and shutdown of serving processes: a state of the GPU, not a CPU–GPU gap.

An engine that imports, compiles, loads weights or captures CUDA graphs keeps a CPU busy
while its GPU idles for a minute or more (vLLM 0.24: 60-100 s on an H200); that is not a
starved GPU and must never page anyone. Per serving process:

- it **enters** start-up while young (started less than ``startup_max_s`` ago) when most of
  its active samples run start-up code: imports, torch.compile (dynamo, inductor), Triton
  compilation, CUDA-graph capture, model construction and weight loading -- library code
  every engine shares, and the conventional names of loading and capture steps;
- it **leaves** start-up when it serves (requests in flight or tokens flowing), when it goes
  quiet (own CPU under ``QUIET_CPU_PCT`` for ``QUIET_S`` seconds: ready, no traffic) while its
  engine's metrics answer, when it is no longer young, or -- for a process that belongs to no
  known engine, which has no health signal to wait for -- after ``NO_ENGINE_EXIT_S`` seconds
  without start-up code. An engine process whose metrics never answer leaves after
  ``QUIET_LONG_S`` quiet seconds, or ``BUSY_EXIT_S`` seconds of a busy GPU without start-up
  code (serving, unseen). A pause during start-up (vLLM's engine core idles a few seconds
  between compiling and capturing graphs) is not readiness;
- it is **stopping** in the ``STOP_WINDOW_S`` seconds before it exits, unless it serves then.

A GPU second is ``starting`` (``stopping``) while any of its serving processes is.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from infersight.storage.thread_stacks import Frame

STARTUP_FILE = re.compile("|".join((
    r"<frozen importlib\._bootstrap", r"(^|/)importlib/", r"(^|/)torch/_dynamo/", r"(^|/)torch/_inductor/",
    r"(^|/)triton/compiler/", r"(^|/)triton/backends/.*compiler", r"(^|/)torch/cuda/graphs\.py",
    r"(^|/)safetensors/", r"(^|/)torch/serialization\.py", r"(^|/)huggingface_hub/", r"(^|/)torch/_subclasses/",
    r"(^|/)torch/fx/", r"(^|/)torch/utils/cpp_extension\.py",
)))
# model construction and loading: (file, function) pairs; a constructor counts only in model
# code, since serving code builds request objects all the time
STARTUP_FUNCTION = re.compile("|".join((
    r"(^|/)torch/nn/init\.py:", r"(^|/)torch/nn/modules/.*:(.*\.)?(__init__|reset_parameters|_apply|to|cuda)$",
    r"(^|/)transformers/models/.*:(.*\.)?__init__$",
    r"(^|/)transformers/.*:(.*\.)?(from_pretrained|_init_weights|init_weights|post_init|_load_pretrained_model|"
    r"tie_weights|load_state_dict)$",
    r":(.*\.)?(load_model|load_weights|_load_from_state_dict|capture_model|compile_or_warm_up_model)$",
)))
# roles only discovery's engine patterns give: such a process has a health signal (its
# engine's metrics) to wait for before it counts as ready
ENGINE_ROLES = ("api_server", "engine_core", "worker")
QUIET_CPU_PCT = 10.0
QUIET_S = 3
QUIET_LONG_S = 30
BUSY_EXIT_S = 5
NO_ENGINE_EXIT_S = 5
STOP_WINDOW_S = 15.0


def startup_share(stacks: dict[tuple[Frame, ...], int]) -> float:
    """Share of samples whose stack runs start-up code (any frame)."""
    total = sum(stacks.values())
    if not total:
        return 0.0
    hit = sum(n for path, n in stacks.items() if _runs_startup(path))
    return hit / total


_PATHS_SEEN: dict[int, tuple[tuple, bool]] = {}   # id(path) -> (path, answer): storage shares one tuple per stack


def _runs_startup(path: tuple[Frame, ...]) -> bool:
    # by identity: a 5,000-frame stack is scanned once, not in every second that sampled it
    seen = _PATHS_SEEN.get(id(path))
    if seen is not None and seen[0] is path:
        return seen[1]
    answer = any(_is_startup(frame) for frame in path)
    if len(_PATHS_SEEN) >= 4096:
        _PATHS_SEEN.clear()
    _PATHS_SEEN[id(path)] = (path, answer)
    return answer


def _is_startup(frame: Frame) -> bool:
    return _startup_code(frame[1], frame[0])


@functools.lru_cache(maxsize=65536)
def _startup_code(file: str, function: str) -> bool:
    # memoized: a 5,000-frame stack ran these regexes on every frame of every second
    return bool(STARTUP_FILE.search(file) or STARTUP_FUNCTION.search(f"{file}:{function}"))


@dataclass
class _ProcState:
    starting: bool = False
    done: bool = False         # left start-up for good
    quiet_s: int = 0
    plain_s: int = 0
    busy_s: int = 0


class Lifecycle:
    """Start-up/shutdown state of the serving processes of one GPU, fed second by second."""

    def __init__(self, startup_max_s: float) -> None:
        self.startup_max_s = startup_max_s
        self.procs: dict[tuple[int, float], _ProcState] = {}

    def step(self, t: int, procs: list[dict], served: bool, answering: bool = False, gpu_busy: bool = False) -> str | None:
        """``procs``: per serving process ``pid, start_time, exited_at, role, own_cpu_pct,
        startup_share`` (None where unknown); ``served``: work in flight; ``answering``: the
        GPU's engine metrics answered this second; ``gpu_busy``: SM at the busy threshold.
        Returns ``starting``, ``stopping`` or None."""
        state = None
        for p in procs:
            key = (p["pid"], p["start_time"] or 0.0)
            st = self.procs.setdefault(key, _ProcState())
            young = p["start_time"] is not None and 0 <= t - p["start_time"] < self.startup_max_s
            share = p.get("startup_share") or 0.0
            if not st.starting and not st.done and young and share >= 0.5:
                st.starting = True
            if st.starting:
                cpu = p.get("own_cpu_pct")
                st.quiet_s = st.quiet_s + 1 if cpu is not None and cpu < QUIET_CPU_PCT else 0
                st.plain_s = st.plain_s + 1 if share < 0.5 else 0
                st.busy_s = st.busy_s + 1 if gpu_busy and share < 0.5 else 0
                if p["role"] in ENGINE_ROLES:
                    ready = ((answering and st.quiet_s >= QUIET_S) or st.quiet_s >= QUIET_LONG_S
                             or st.busy_s >= BUSY_EXIT_S)
                else:
                    ready = st.quiet_s >= QUIET_S or st.plain_s >= NO_ENGINE_EXIT_S
                if served or not young or ready:
                    st.starting, st.done = False, True
            if st.starting:
                state = "starting"
            exited = p.get("exited_at")
            if state is None and not served and exited is not None and 0 <= exited - t <= STOP_WINDOW_S:
                state = "stopping"
        return state
