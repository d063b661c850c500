"""The explicit collector registry: which collectors run, built from the config.

Nothing runs at import time; ``build_collectors`` constructs each enabled collector and the
few links between them, all read-only: the GPU collector tells the stacks collector's
discovery which processes hold a CUDA context; the stacks collector's discovered targets
are the processes the host collector samples and the engine collector probes for /metrics.
"""
from __future__ import annotations

from typing import Callable

from infersight.daemon.collectors.base import Collector
from infersight.daemon.config.load import Config
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
                                          engine_pids=lambda: [t.pid for t in current_targets()],
                                          discover_every_s=config.targets.discovery_interval_s))
    return collectors
