"""The explicit collector registry: which collectors run, built from the config.

Nothing runs at import time; ``build_collectors`` constructs each enabled collector and the
few links between them, all read-only: the GPU collector tells the stacks collector's
discovery which processes hold a CUDA context (and on which GPUs); the stacks collector's
discovered targets are the processes the host collector samples and the engine collector
probes for /metrics; :func:`engine_gpu_map` ties the engine collector's endpoints to those
targets' GPUs, for the analysis.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from infersight.daemon.collectors.base import Collector
from infersight.daemon.collectors.engine_gpus import EndpointGpus
from infersight.daemon.config.load import Config
from infersight.daemon.stacks.roles import FOREIGN
from infersight.daemon.stacks.targets import explicit_targets
from infersight.storage.model import Target


def build_collectors(config: Config) -> list[Collector]:
    """Every enabled collector for ``config``, each isolated from the others."""
    from infersight.daemon.collectors.host import HostCollector

    host = config.host
    collectors: list[Collector] = []
    gpu = None
    if config.collectors.gpu.enabled:
        from infersight.daemon.collectors.gpu import GpuCollector

        gpu = GpuCollector(config.collectors.gpu, host)
        collectors.append(gpu)
    current_targets: Callable[[], list[Target]] = lambda: explicit_targets(config.targets.pids, host)
    if config.collectors.stacks.enabled:
        from infersight.daemon.collectors.stacks import StacksCollector

        stacks = StacksCollector(config.collectors.stacks, config.targets, host,
                                 nvml_pids=gpu.pid_gpus if gpu is not None else None)
        collectors.append(stacks)
        def current_targets() -> list[Target]:
            # explicit --pid targets count from the first run, before discovery has scanned
            found = stacks.targets()
            seen = {t.pid for t in found}
            return found + [t for t in explicit_targets(config.targets.pids, host) if t.pid not in seen]
    if config.collectors.host.enabled:
        collectors.append(HostCollector(config.collectors.host, host, current_targets))
    if config.collectors.engines.enabled:
        from infersight.daemon.collectors.engines import EngineCollector

        collectors.append(EngineCollector(config.collectors.engines, host,
                                          # a neighbour may be another user's process: its ports are not probed
                                          engine_pids=lambda: [t.pid for t in current_targets() if t.role != FOREIGN],
                                          discover_every_s=config.targets.discovery_interval_s))
    return collectors


def engine_gpu_map(collectors: Iterable[Any]) -> EndpointGpus | None:
    """The ``{endpoint URL: GPUs}`` source the analysis awaits each tick (engine_gpus.py), or
    None without an engine collector. Targets come from the stacks collector's discovery (the
    only source of GPU lists); without it every endpoint is unmapped."""
    by_name = {getattr(c, "name", None): c for c in collectors}
    engines, stacks = by_name.get("engines"), by_name.get("stacks")
    if engines is None or not hasattr(engines, "endpoint_status"):
        return None
    targets = stacks.targets if stacks is not None and hasattr(stacks, "targets") else list
    return EndpointGpus(engines.endpoint_status, targets)
