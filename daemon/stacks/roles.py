"""Process roles from command lines, on the process layouts of the engines we know.

Roles (``Target.role``):

- ``api_server``: the HTTP front end, usually where ``/metrics`` is served;
- ``engine_core``: the scheduler loop (vLLM's ``EngineCore``, SGLang's scheduler);
- ``worker``: a model-executing process per rank, bound to its GPU;
- ``engine``: a serving process of no known layout (a pattern match, or a CUDA process that
  no recognised engine shares a GPU with);
- ``other``: a descendant of a serving process with no role of its own (a multiprocessing
  child before it renames itself, a pool worker);
- ``helper``: a process started by the engine that never serves requests (trackers,
  short-lived probes, compile pools): kept as a target, never sampled with py-spy, never
  a culprit;
- ``other_gpu_process``: a process with a CUDA context outside every serving process tree
  (decided by discovery, not from the command line).

Layouts (process titles as ``/proc/PID/cmdline`` reads them; vLLM sets them with
setproctitle, so the title is the whole command line):

- vLLM 0.24: API server ``python -m vllm.entrypoints.cli.main serve ...`` or ``vllm serve``
  (console script); with ``--api-server-count`` > 1 ``VLLM::APIServer_N`` (``_DPn`` under the
  DP supervisor); ``VLLM::EngineCore`` (``_DPn`` with data parallelism), which holds the CUDA
  context at TP=1; workers ``VLLM::Worker`` then ``VLLM::Worker_TP0``, ``..._DP0_PP1_TP2``
  (older releases: ``VllmWorker TP0``); ``VLLM::DPCoordinator`` (load statistics only: a
  helper); ``python -c from multiprocessing.resource_tracker import main;main(N)``; at start
  ``python -m vllm.model_executor.models.registry`` (the model-registry probe, a few seconds)
  and ``.../device_communicators/all_reduce_utils.py`` (the P2P probe, which briefly opens
  CUDA contexts); ``torch._inductor.compile_worker`` pools during ``torch.compile``.
- SGLang: ``python -m sglang.launch_server`` (API server and tokenizer), ``sglang::scheduler``
  (``_TPn``; each holds its GPU), ``sglang::detokenizer``.
- TGI: the Rust launcher and router (not Python), ``text-generation-server serve`` shards.
- TensorRT-LLM: ``trtllm-serve``, MPI workers through ``mpi4py``.
- Triton: ``tritonserver`` and ``triton_python_backend_stub`` per model instance.
"""
from __future__ import annotations

import re

HELPER = "helper"
FOREIGN = "other_gpu_process"
# roles a command line names: a CUDA process with one of them is serving wherever it runs
NAMED_SERVING = frozenset({"api_server", "engine_core", "worker"})
# never sampled with py-spy and never attributed a GPU's time
NOT_SERVING = frozenset({HELPER, FOREIGN})

_ROLES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # helpers first: the registry probe's command line also says "vllm"
    (HELPER, re.compile(r"multiprocessing[./](?:resource_tracker|semaphore_tracker|forkserver)"
                        r"|vllm[./]model_executor[./]models[./]registry"
                        r"|device_communicators[./]all_reduce_utils"
                        r"|torch[./]_inductor[./]compile_worker"
                        r"|^VLLM::DPCoordinator")),
    ("engine_core", re.compile(r"EngineCore|sglang::scheduler|sglang\.srt\.managers\.scheduler")),
    ("api_server", re.compile(r"vllm serve|vllm[./]entrypoints|APIServer|sglang[./ ]launch_server|trtllm-serve"
                              r"|(?:^|/)tritonserver(?: |$)")),
    # "::Worker": vLLM titles carry VLLM_PROCESS_NAME_PREFIX, "VLLM" unless the operator set another
    ("worker", re.compile(r"VllmWorker|::Worker(?![a-z])|RayWorkerWrapper|text[-_]generation[-_]server"
                          r"|triton_python_backend_stub|sglang::.*worker|mpi4py")),
)


def infer_role(cmdline: str, *, gpu: bool, matched: bool) -> str:
    """The role a command line names (module docstring); else ``engine`` for a CUDA holder or
    a pattern match, ``other`` for the rest. ``other_gpu_process`` is never returned here:
    only the process tree can tell a neighbour from an engine."""
    for role, pattern in _ROLES:
        if pattern.search(cmdline):
            return role
    return "engine" if gpu or matched else "other"
