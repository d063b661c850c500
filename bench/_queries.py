"""Server-side timings of the API queries on a stored database.

The agent's own app (``web.app.create_app``) runs in this process on an aiohttp test server
with one extra, innermost middleware that times each handler: parameter parsing, the
storage query on a reader thread, rendering and JSON encoding, not the HTTP transport. Each
query runs once cold (first after opening: caches empty), then ``repeats`` times; p50 and
p95 are over the repeats.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from infersight.daemon.config.load import Config, store_options
from infersight.storage.store import Store
from infersight.web.app import create_app


@dataclass
class Timing:
    name: str
    path: str
    cold_ms: float
    p50_ms: float
    p95_ms: float
    runs: int
    response_bytes: int


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def query_set(t_from: float, t_to: float) -> list[tuple[str, str, dict]]:
    """(name, path, params) of every timed query over a store holding [t_from, t_to)."""
    h = 3600.0
    return [
        ("flame graph, last 1 h", "/api/flamegraph", {"from": t_to - h, "to": t_to}),
        ("flame graph, 1 h 20 h ago (rolled up)", "/api/flamegraph", {"from": t_to - 20 * h, "to": t_to - 19 * h}),
        ("flame graph, 24 h", "/api/flamegraph", {"from": t_from, "to": t_to}),
        ("flame graph, 24 h, gpu_idle weight", "/api/flamegraph", {"from": t_from, "to": t_to, "weight": "gpu_idle"}),
        ("diff, last 1 h vs the hour before", "/api/diff",
         {"a_from": t_to - 2 * h, "a_to": t_to - h, "b_from": t_to - h, "b_to": t_to}),
        ("diff, last 1 h vs 1 h 23 h ago", "/api/diff",
         {"a_from": t_from, "a_to": t_from + h, "b_from": t_to - h, "b_to": t_to}),
        ("series sm_util, 24 h at 1 s", "/api/series",
         {"signal": "sm_util", "gpu": 0, "from": t_from, "to": t_to, "step": 1}),
        ("series generation tokens/s, 24 h at 1 s", "/api/series",
         {"signal": "generation_tokens_per_s", "from": t_from, "to": t_to, "step": 1}),
        ("UI timeline, 24 h", "/api/ui/timeline", {"from": t_from, "to": t_to}),
    ]


async def _run(config: Config, store: Store, queries, repeats: int) -> list[Timing]:
    handler_s: list[float] = []

    @web.middleware
    async def timed(request, handler):
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            handler_s.append(time.perf_counter() - started)

    app = create_app(config, store)
    app.middlewares.append(timed)
    out = []
    async with TestClient(TestServer(app)) as client:
        for name, path, params in queries:
            url = f"{path}?{urlencode(params)}"
            samples, size = [], 0
            for i in range(repeats + 1):
                handler_s.clear()
                async with client.get(url) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{url}: HTTP {resp.status}: {body[:200]!r}")
                size = len(body)
                samples.append(handler_s[-1] * 1000)
            out.append(Timing(name, url, samples[0], percentile(samples[1:], 50), percentile(samples[1:], 95),
                              repeats, size))
    return out


def time_queries(config: Config, path: str, t_from: float, t_to: float, repeats: int = 20) -> list[Timing]:
    """Open ``path`` as the daemon does and time :func:`query_set` (see the module docstring)."""
    store = Store.open(path, host=config.host, **store_options(config.storage))
    try:
        return asyncio.run(_run(config, store, query_set(t_from, t_to), repeats))
    finally:
        store.close()


def summary(timings: list[Timing]) -> str:
    lines = [f"  {'query':44s} {'cold ms':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'bytes':>10s}"]
    for t in timings:
        lines.append(f"  {t.name:44s} {t.cold_ms:8.1f} {t.p50_ms:8.1f} {t.p95_ms:8.1f} {t.response_bytes:10,d}")
    return "\n".join(lines)
