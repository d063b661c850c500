"""Which GPUs each engine endpoint serves: endpoint -> its process -> that target's GPUs.

An endpoint autodiscovered on a process's listening port names that process (the engine
collector keeps its pids). An endpoint from the config or ``--scrape`` whose host is this
machine is tied to the target listening on its port. A process's GPUs are discovery's
``Target.gpus``: the contexts it holds or, for a serving process holding none (an API
server), those of its deployment (API server -> engine core -> workers). So with two
engines on two GPUs each endpoint maps to its own GPU.

An endpoint left unmapped (a remote host, a port no target listens on, a deployment that
holds no GPU yet) maps to ``()``; the analysis then counts it for every GPU that no mapped
endpoint serves (analysis/seconds.py ``EngineScope``), which keeps a single-engine host
working whatever the endpoint's spelling.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import psutil

from infersight.daemon.engines.discovery import listening_endpoints
from infersight.storage.model import Target

PORTS_TTL_S = 30.0   # listening ports of the targets are re-read at most this often (seconds)


class EndpointGpus:
    """Awaitable mapping ``{endpoint URL: GPU ids}``; call it on the event loop (it reads the
    collectors' state there, and procfs and interface addresses in a worker thread)."""

    def __init__(self, endpoint_status: Callable[[], list[dict[str, Any]]],
                 targets: Callable[[], Iterable[Target]]) -> None:
        self._endpoint_status = endpoint_status
        self._targets = targets
        self._ports: dict[int, int] = {}          # listening port -> pid
        self._ports_key: frozenset | None = None
        self._ports_at = 0.0

    async def __call__(self) -> dict[str, tuple[int, ...]]:
        status = self._endpoint_status()
        targets = {t.pid: t for t in self._targets() if t.exited_at is None}
        out: dict[str, tuple[int, ...]] = {}
        unmatched = []
        for ep in status:
            pids = [pid for pid in ep.get("pids") or () if pid in targets]
            if pids:
                out[ep["url"]] = _gpus_of(targets[pid] for pid in pids)
            else:
                out[ep["url"]] = ()
                unmatched.append(ep["url"])
        if unmatched and targets:
            key = frozenset(t.key for t in targets.values())
            refresh = key != self._ports_key or time.monotonic() - self._ports_at >= PORTS_TTL_S
            owners = await asyncio.to_thread(self._owners, unmatched, list(targets), refresh)
            if refresh:
                self._ports_key, self._ports_at = key, time.monotonic()
            for url, pid in owners.items():
                if pid in targets:
                    out[url] = _gpus_of([targets[pid]])
        return out

    def _owners(self, urls: list[str], pids: list[int], refresh: bool) -> dict[str, int]:
        """URL -> pid of the target listening on its port, for URLs on this machine (blocking)."""
        if refresh:
            self._ports = {port: pid for pid, _, port, _ in listening_endpoints(pids)}
        out = {}
        for url in urls:
            port = _local_port(url)
            if port is not None and port in self._ports:
                out[url] = self._ports[port]
        return out


def _gpus_of(targets: Iterable[Target]) -> tuple[int, ...]:
    return tuple(sorted({g for t in targets for g in t.gpus}))


def _local_port(url: str) -> int | None:
    """The port of ``url`` when its host is this machine, else None."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if not host or port is None:
        return None
    return port if _is_local(host) else None


def _is_local(host: str) -> bool:
    if host in ("localhost", socket.gethostname()):
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if addr.is_loopback or addr.is_unspecified:
        return True
    local = {a.address.split("%", 1)[0] for addrs in psutil.net_if_addrs().values() for a in addrs}
    return str(addr) in local
