"""The explicit collector registry: which collectors run, built from the config.

Nothing runs at import time; ``build_collectors`` constructs each enabled collector.
"""
from __future__ import annotations

from ..config import Config
from ..targets import explicit_targets
from .base import Collector


def build_collectors(config: Config) -> list[Collector]:
    """Every enabled collector for ``config``, each isolated from the others."""
    from .host import HostCollector

    host = config.host
    collectors: list[Collector] = []
    if config.collectors.host.enabled:
        collectors.append(HostCollector(config.collectors.host, host,
                                        lambda: explicit_targets(config.targets.pids, host)))
    if config.collectors.gpu.enabled:
        from .gpu import GpuCollector

        collectors.append(GpuCollector(config.collectors.gpu, host))
    if config.collectors.engines.enabled:
        from .engines import EngineCollector

        collectors.append(EngineCollector(config.collectors.engines, host))
    return collectors
