"""What each thread of a serving process did in one second: its own work, waiting, waiting
on the GPU, or waiting in a collective.

- **Waiting** threads (an event loop polling, a selector, a condition or queue wait, an idle
  pool worker) are recognised by their leaf frame in the standard library and the common
  I/O libraries: py-spy counts some of them as active (uvloop's poll, zmq's recv), yet they
  use no CPU for the process's work and are never culprits.
- **Waiting on the GPU** is learned from the data (:class:`GpuWaitLearner`): in a process
  that holds a CUDA context, a leaf frame whose share of the process's samples rises with
  the GPU's SM activity is the CPU blocking on the GPU (an implicit sync: ``.item()``,
  ``.tolist()``, ``bool(tensor)``, a copy to the host), whatever its name. The explicit
  syncs of torch, CuPy and JAX are known from the start.
- **Waiting in a collective** (a rank of a tensor-parallel engine in an all-reduce, a
  broadcast, a barrier, or reading the engine's step broadcast) is recognised by library
  code, stable across models: the deepest frame of the stack that is not plumbing (context
  managers, decorators, torch's op dispatch, ctypes) lies in ``torch/distributed/``, vLLM's
  or SGLang's ``distributed/`` communicators and collectives, an NCCL binding, ``mpi4py`` or
  DeepSpeed's ``comm``. It waits on the other ranks (their CPU or their GPU), so it is never
  own work; a collective's caller above it (``GroupCoordinator.graph_capture`` around a
  model's forward) does not make its callees waits.
- Everything else is the thread's **own work**, which is what can starve a GPU.
"""
from __future__ import annotations

import re
import statistics
from collections import deque
from dataclasses import dataclass, field

from infersight.storage.thread_stacks import Frame, ThreadSecond
from infersight.storage.waits import WAIT_LEAF

# WAIT_LEAF (leaf ``file:function`` of frames where a thread waits for something other than the GPU)
# lives with the flame graph's waits filter, which hides the same stacks
# ``file:function`` of explicit GPU synchronisation (library code, stable names)
GPU_WAIT_LEAF = re.compile("|".join((
    r"torch/cuda/__init__\.py:synchronize$", r"torch/cuda/streams\.py:(Stream|Event)\.(synchronize|wait)",
    r"torch/cuda/(streams|__init__)\.py:.*synchronize$", r"cupy/.*:.*[sS]ynchronize$", r"jax/.*:block_until_ready$",
)))

# ``file:function`` of frames that do collective communication (module docstring)
COLLECTIVE_FRAME = re.compile("|".join((
    r"(^|/)torch/distributed/", r"(^|/)(vllm|sglang/srt)/distributed/device_communicators/",
    r"(^|/)(vllm|sglang/srt)/distributed/communication_op\.py:",
    (r"(^|/)(vllm|sglang/srt)/distributed/parallel_state\.py:(\w+\.)?_?(all_reduce|all_gather|reduce_scatter"
     r"|gather|broadcast|send|recv|isend|irecv|barrier|all_to_all|dispatch|combine)"),
    r"(^|/)(vllm|sglang/srt)/distributed/utils\.py:(sched_yield|StatelessProcessGroup\.)",
    r"(^|/)[\w.]*nccl[\w.]*(/|\.py:)", r"(^|/)mpi4py/", r"(^|/)deepspeed/comm/",
)))
# frames a collective may call without the thread leaving it: context managers, decorators,
# torch's op dispatch (custom ops registered in Python), ctypes, yielding and polling
PLUMBING_FRAME = re.compile("|".join((
    r"(^|/)contextlib\.py:", r"(^|/)functools\.py:", r"(^|/)torch/_ops\.py:", r"(^|/)torch/_library/",
    r"(^|/)torch/utils/_contextlib\.py:", r"(^|/)torch/_compile\.py:", r"(^|/)torch/_dynamo/eval_frame\.py:",
    r"(^|/)ctypes/", r"(^|/)threading\.py:", r"(^|/)zmq/", r"(^|/)selectors\.py:", r"^time:sleep$",
)))


def leaf_key(path: tuple[Frame, ...]) -> str:
    """``file:function`` of a stack's leaf ('' for an empty stack)."""
    return f"{path[-1][1]}:{path[-1][0]}" if path else ""


def is_wait(path: tuple[Frame, ...]) -> bool:
    return bool(path) and bool(WAIT_LEAF.search(leaf_key(path)))


def is_collective(path: tuple[Frame, ...]) -> bool:
    """Whether the stack waits in collective communication: walking up from the leaf past
    plumbing frames, the first other frame is collective code (module docstring)."""
    for fn, file, _ in reversed(path):
        key = f"{file}:{fn}"
        if COLLECTIVE_FRAME.search(key):
            return True
        if not PLUMBING_FRAME.search(key):
            return False
    return False


class GpuWaitLearner:
    """Learns which leaf frames of GPU-holding processes are waits on the GPU.

    Each second it is fed the GPU's SM activity and, per process that holds a CUDA context
    on the GPU, the share of its own (non-waiting) samples per leaf. A leaf is a GPU wait
    when, over the last ``horizon_s`` seconds with samples, its share correlates with SM
    activity (Pearson r >= ``min_r``) and its mean share where the GPU was busy is at least
    ``rise`` times, and ``min_gap`` above, its mean share where the GPU was not. Needs
    ``min_each`` seconds on each side: until then only the explicit syncs count.
    """

    def __init__(self, busy_sm_pct: float, horizon_s: int = 300, min_r: float = 0.5, rise: float = 2.0,
                 min_gap: float = 0.05, min_each: int = 5) -> None:
        self.busy = busy_sm_pct
        self.min_r, self.rise, self.min_gap, self.min_each = min_r, rise, min_gap, min_each
        self.history: dict[int, deque[tuple[float, dict[str, float]]]] = {}
        self.horizon = horizon_s
        self._learned: dict[int, frozenset[str]] = {}

    def feed(self, pid: int, sm_util: float, leaf_counts: dict[str, int]) -> None:
        total = sum(leaf_counts.values())
        if total < 5:
            return
        hist = self.history.setdefault(pid, deque(maxlen=self.horizon))
        # a leaf under min_gap of the samples can never be learned: keep only the others
        hist.append((sm_util, {k: v / total for k, v in leaf_counts.items() if v / total >= self.min_gap}))
        self._learned.pop(pid, None)

    def waits(self, pid: int) -> frozenset[str]:
        """Leaf keys learned as GPU waits for ``pid`` (explicit syncs are matched apart)."""
        cached = self._learned.get(pid)
        if cached is not None:
            return cached
        hist = self.history.get(pid) or ()
        busy = [h for h in hist if h[0] >= self.busy]
        calm = [h for h in hist if h[0] < self.busy]
        learned = set()
        if len(busy) >= self.min_each and len(calm) >= self.min_each:
            xs = [h[0] for h in hist]
            leaves = {k for _, shares in busy for k, v in shares.items() if v >= self.min_gap}
            for leaf in leaves:
                ys = [shares.get(leaf, 0.0) for _, shares in hist]
                if len(set(ys)) < 2 or len(set(xs)) < 2:
                    continue
                hi = statistics.fmean(s.get(leaf, 0.0) for _, s in busy)
                lo = statistics.fmean(s.get(leaf, 0.0) for _, s in calm)
                if hi >= self.rise * lo and hi - lo >= self.min_gap and statistics.correlation(xs, ys) >= self.min_r:
                    learned.add(leaf)
        result = self._learned[pid] = frozenset(learned)
        return result


@dataclass
class ThreadWork:
    """One thread's second, split: own work, waits, GPU waits, collective waits (active
    samples), and the samples that found it idle (recorded with py-spy's ``--idle`` only)."""

    tid: int
    name: str
    own: int = 0
    wait: int = 0
    gpu_wait: int = 0
    collective: int = 0
    idle: int = 0
    own_stacks: dict[tuple[Frame, ...], int] = field(default_factory=dict)


@dataclass
class ProcessWork:
    """One process's second by thread; ``active`` is every active sample."""

    pid: int
    threads: list[ThreadWork] = field(default_factory=list)

    @property
    def active(self) -> int:
        return sum(t.own + t.wait + t.gpu_wait + t.collective for t in self.threads)

    @property
    def own(self) -> int:
        return sum(t.own for t in self.threads)

    @property
    def gpu_wait(self) -> int:
        return sum(t.gpu_wait for t in self.threads)

    @property
    def collective(self) -> int:
        return sum(t.collective for t in self.threads)

    def busiest_thread(self) -> ThreadWork | None:
        best = max(self.threads, key=lambda t: (t.own, -t.tid), default=None)   # a tie: the lower tid
        return best if best is not None and best.own > 0 else None

    def own_leaf_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.threads:
            for path, n in t.own_stacks.items():
                k = leaf_key(path)
                out[k] = out.get(k, 0) + n
        return out


def split_process(pid: int, threads: list[ThreadSecond], gpu_waits: frozenset[str]) -> ProcessWork:
    """Sort each active sample of ``pid``'s threads into own work, wait, GPU wait or
    collective wait. An explicit GPU sync wins; a collective comes before the learned GPU
    waits (its leaf rises with the GPU's activity too, but what it waits for is the peers)."""
    work = ProcessWork(pid)
    for ts in threads:
        tw = ThreadWork(ts.tid, ts.name, idle=ts.idle)
        for path, n in ts.active.items():
            kind = sample_kind(path, gpu_waits)
            setattr(tw, kind, getattr(tw, kind) + n)
            if kind == "own":
                tw.own_stacks[path] = tw.own_stacks.get(path, 0) + n
        work.threads.append(tw)
    return work


def sample_kind(path: tuple[Frame, ...], gpu_waits: frozenset[str]) -> str:
    """What an active sample with stack ``path`` was doing: ``own`` work, ``wait``,
    ``gpu_wait`` or ``collective`` (the order of the tests is split_process's contract)."""
    kind, key = _static_kind(path)
    if kind == "collective" or kind == "gpu_wait":
        return kind
    if key in gpu_waits:
        return "gpu_wait"
    return kind


# what the patterns say of a stack never changes: remembered per stack (a serving thread runs
# a few hundred distinct stacks, each seen every second); cleared when it holds this many
_KIND_CACHE_MAX = 4096
# by identity (storage shares one tuple per stack): hashing a 5,000-frame tuple costs its depth
_kind_cache: dict[int, tuple[tuple[Frame, ...], str, str]] = {}


def _static_kind(path: tuple[Frame, ...]) -> tuple[str, str]:
    """(kind by the patterns alone: gpu_wait, collective, wait or own; the leaf key)."""
    hit = _kind_cache.get(id(path))
    if hit is not None and hit[0] is path:
        return hit[1], hit[2]
    key = leaf_key(path)
    if GPU_WAIT_LEAF.search(key):
        kind = "gpu_wait"
    elif is_collective(path):
        kind = "collective"
    elif is_wait(path):
        kind = "wait"
    else:
        kind = "own"
    if len(_kind_cache) >= _KIND_CACHE_MAX:
        _kind_cache.clear()
    _kind_cache[id(path)] = (path, kind, key)
    return kind, key


def own_stacks(stacks: dict[tuple[Frame, ...], int], gpu_waits: frozenset[str]) -> dict[tuple[Frame, ...], int]:
    """The stacks of ``stacks`` (active samples of one thread) that are its own work."""
    return {path: n for path, n in stacks.items() if sample_kind(path, gpu_waits) == "own"}
