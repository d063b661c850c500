"""Builds the per-second inputs of the classifier for one GPU from the store.

Which processes serve a GPU: every target that is neither a foreign GPU process nor a
helper and either lists that GPU or lists none. Live discovery gives a serving process
without a context of its own (an API server) its deployment's GPUs, so only processes whose
deployment holds no GPU yet (start-up), explicit ``--pid`` targets and replayed recordings
count for every GPU.

Which engine signals belong to a GPU: :class:`EngineScope` (the endpoints of the engines
that serve it); without one, the host's sum.

What every GPU reads alike (targets, process CPU, per-second stack counts, the serving
threads' stacks) is read once per range into :class:`HostSeconds` and shared by the GPUs: on
an eight-GPU host these per-second GROUP BYs ran eight times a step, and the hash tables
DuckDB grew for them stayed with the process.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from infersight.daemon.analysis.classify import ProcessSecond, Second
from infersight.daemon.config.load import AnalysisConfig
from infersight.storage import analysis as q
from infersight.storage import engine_scope, thread_stacks
from infersight.storage.thread_stacks import ThreadSecond

FOREIGN_ROLES = ("other_gpu_process", "foreign")
# never attributed a GPU's time: neighbours, and the engine's trackers and probes
NOT_SERVING_ROLES = (*FOREIGN_ROLES, "helper")


@dataclass(frozen=True)
class EngineScope:
    """The engine endpoints whose signals one GPU's seconds read: ``include`` (None: all)
    minus ``exclude`` (URLs)."""

    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()

    @staticmethod
    def for_gpu(gpu: int, endpoint_gpus: Mapping[str, tuple[int, ...]] | None) -> "EngineScope":
        """A GPU reads the endpoints mapped to it; a GPU no endpoint maps to reads every
        endpoint not mapped to another GPU (an engine whose endpoint could not be tied to a
        process still counts where no known engine runs: the single-engine host works as
        before); without a mapping, every endpoint (replay, no engine collector)."""
        if not endpoint_gpus:
            return EngineScope()
        mine = tuple(sorted(url for url, gpus in endpoint_gpus.items() if gpu in gpus))
        if mine:
            return EngineScope(include=mine)
        return EngineScope(exclude=tuple(sorted(url for url, gpus in endpoint_gpus.items() if gpus)))

# ``file:function`` of frames where a thread waits for the GPU (library code, stable names)
GPU_WAIT_PATTERNS = (
    r"torch/cuda/__init__\.py:synchronize$",
    r"torch/cuda/streams\.py:(Stream|Event)\.(synchronize|wait)",
    r"torch/cuda/(streams|__init__)\.py:.*synchronize$",
    r"cupy/.*:.*[sS]ynchronize$",
    r"jax/.*:block_until_ready$",
)


def serving_pids(targets: list[dict], gpu: int) -> dict[int, str]:
    """pid -> role of the processes that serve ``gpu`` (see module docstring)."""
    out = {}
    for t in targets:
        if t["role"] in NOT_SERVING_ROLES:
            continue
        gpus = t["gpus"] or []
        if not gpus or gpu in gpus:
            out[int(t["pid"])] = t["role"]
    return out


class WaitFrames:
    """The ids of the frames that are GPU waits (``GPU_WAIT_PATTERNS``), kept between reads:
    each read scans only the frames added since the last (ids are never reused). Ids of
    frames pruned since stay in the set; they match no sample."""

    def __init__(self) -> None:
        self._ids: set[int] = set()
        self._after = 0

    def read(self, cur) -> list[int]:
        new, self._after = q.wait_frames_since(cur, GPU_WAIT_PATTERNS, self._after)
        self._ids.update(new)
        return sorted(self._ids)


@dataclass
class HostSeconds:
    """What the seconds of every GPU in [t_from, t_to) read alike, read once: the targets,
    per second and pid the CPU % and stack counts (``storage.analysis.stack_seconds``), per
    second the threads of every process that may serve a GPU, and the engine signals per
    :class:`EngineScope` (read on first use). Read-only once built: the GPUs share it."""

    t_from: int
    t_to: int
    targets: list[dict]
    cpu: dict[int, dict[int, float]]
    stacks: dict[int, dict[int, dict]]
    threads: dict[int, list[ThreadSecond]]
    _engine: dict[EngineScope, dict[int, dict[str, float]]] = field(default_factory=dict)

    def engine(self, cur, scope: EngineScope) -> dict[int, dict[str, float]]:
        """Unix second -> engine signal -> value, summed over ``scope``'s endpoints."""
        if scope not in self._engine:
            self._engine[scope] = engine_scope.engine_seconds(cur, self.t_from, self.t_to,
                                                              scope.include, scope.exclude)
        return self._engine[scope]


def read_host_seconds(cur, t_from: int, t_to: int, waits: WaitFrames | None = None) -> HostSeconds:
    """The shared reads of [t_from, t_to); ``waits`` carries the GPU-wait frames between
    ranges (a new one scans every frame)."""
    targets = q.targets(cur)
    wait_ids = (waits or WaitFrames()).read(cur)
    may_serve = sorted({int(t["pid"]) for t in targets if t["role"] not in NOT_SERVING_ROLES})
    return HostSeconds(t_from=t_from, t_to=t_to, targets=targets, cpu=q.process_cpu_seconds(cur, t_from, t_to),
                       stacks=q.stack_seconds(cur, t_from, t_to, wait_ids),
                       threads=thread_stacks.thread_seconds(cur, t_from, t_to, may_serve))


def build_seconds(cur, gpu: int, t_from: int, t_to: int, cfg: AnalysisConfig,
                  scope: EngineScope | None = None, host: HostSeconds | None = None) -> list[Second]:
    """One Second per Unix second in [t_from, t_to) that has GPU samples; engine signals
    from the endpoints in ``scope`` (default: all). ``host``: the shared reads of the same
    range (read here when not given)."""
    gpu_rows = q.gpu_seconds(cur, gpu, t_from, t_to)
    if not gpu_rows:
        return []
    if host is None:
        host = read_host_seconds(cur, t_from, t_to)
    elif (host.t_from, host.t_to) != (t_from, t_to):
        raise ValueError(f"host reads cover [{host.t_from}, {host.t_to}), not [{t_from}, {t_to})")
    engine = host.engine(cur, scope or EngineScope())
    cpu, stacks = host.cpu, host.stacks
    serving = serving_pids(host.targets, gpu)
    out = []
    for t in sorted(gpu_rows):
        g = gpu_rows[t]
        e = engine.get(t, {})
        procs = []
        for pid, role in serving.items():
            st = stacks.get(t, {}).get(pid)
            c = cpu.get(t, {}).get(pid)
            if st is None and c is None:
                continue
            procs.append(ProcessSecond(pid=pid, role=role, cpu_pct=c,
                                       active=st["active"] if st else 0, gpu_wait=st["gpu_wait"] if st else 0,
                                       idle=st["idle"] if st else 0, top_leaf=st["top_leaf"] if st else None))
        out.append(Second(
            t=t, gpu=gpu, util_gpu=g["util_gpu"], sm_util=g["sm_util"], sm_occupancy=g["sm_occupancy"],
            tensor_util=g["tensor_util"], dram_bw_util=g["dram_bw_util"],
            running=e.get("requests_running"), waiting=e.get("requests_waiting"),
            gen_tokens_s=e.get("generation_tokens_per_s"), prompt_tokens_s=e.get("prompt_tokens_per_s"),
            flops_per_gpu_s=e.get("flops_per_gpu_per_s"), dram_bytes_per_gpu_s=_bytes_moved(e),
            http_in_flight=e.get("http_in_flight"), engine_held=_engine_held(e), requests_s=e.get("requests_per_s"),
            processes=procs))
    return out


def _engine_held(engine: dict[str, float]) -> float | None:
    """Requests inside the engine by its own clocks (queue + inference time sums' rates)."""
    parts = [engine[k] for k in ("engine_queued", "engine_running_lt") if k in engine]
    return sum(parts) if parts else None


def _bytes_moved(engine: dict[str, float]) -> float | None:
    """Bytes read plus written per GPU and second, by the engine's estimate (None: not exported)."""
    parts = [engine[k] for k in ("read_bytes_per_gpu_per_s", "write_bytes_per_gpu_per_s") if k in engine]
    return sum(parts) if parts else None
