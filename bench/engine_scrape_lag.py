"""Scrapes kept from a slow-but-alive engine API server: a 0.8 s deadline against the default.

A local aiohttp endpoint answers /metrics after a lag that swings like a saturated vLLM API
server's (0.05-2.5 s, seeded), while the engine collector runs at its 1 s interval for
``--seconds``. Printed side by side for a 0.8 s scrape deadline (the old default) and the
current one: scrapes asked, samples the agent kept, scrapes lost, the lag the agent
recorded (``scrape_latency_seconds``) and the longest collector run.

usage: python bench/engine_scrape_lag.py [--seconds 20] [--seed 7]
"""
from __future__ import annotations

import argparse
import asyncio
import random
import time

from aiohttp import web

from infersight.daemon.collectors.engines import EngineCollector
from infersight.daemon.config.load import EnginesCollectorConfig

LAGS = (0.05, 0.1, 0.3, 0.9, 1.2, 1.8, 2.5)


async def measure(timeout_s: float, seconds: float, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    start = time.time()
    answered = [0]

    async def metrics(request: web.Request) -> web.Response:
        await asyncio.sleep(rng.choice(LAGS))
        answered[0] += 1
        tokens = 300.0 * (time.time() - start)
        return web.Response(text=f'vllm:generation_tokens_total{{engine="0",model_name="m"}} {tokens}\n',
                            content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    collector = EngineCollector(EnginesCollectorConfig(interval_s=1.0, timeout_s=timeout_s, autodiscover=False,
                                                       endpoints=(f"http://127.0.0.1:{port}/metrics",)), "bench")
    kept, latencies, runs = 0, [], []
    try:
        while time.time() - start < seconds:
            t0 = time.monotonic()
            batch = await collector.collect(time.time())
            runs.append(time.monotonic() - t0)
            kept += sum(s.signal == "scrape_latency_seconds" for s in batch.engine_samples)
            latencies += [s.value for s in batch.engine_samples if s.signal == "scrape_latency_seconds"]
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
        [status] = collector.endpoint_status()
    finally:
        await collector.close()
        await runner.cleanup()
    return {"asked": status["scrapes_ok"] + status["scrapes_failed"], "kept": kept,
            "lost": status["scrapes_failed"], "late_kept": status["scrapes_late"],
            "lag_max_s": max(latencies, default=0.0), "run_max_s": max(runs, default=0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    default = EnginesCollectorConfig().timeout_s
    rows = [(f"deadline {t:g} s", asyncio.run(measure(t, args.seconds, args.seed))) for t in (0.8, default)]
    keys = list(rows[0][1])
    print(f"{'':18s}" + "".join(f"{k:>17s}" for k in keys))
    for name, figures in rows:
        print(f"{name:18s}" + "".join(f"{figures[k]:17.3g}" for k in keys))


if __name__ == "__main__":
    main()
