"""``infersight serve --db FILE``: the UI and API over a stored database, read-only.

For looking at a replayed recording or a copy of a host's file without running collectors.
"""
from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from infersight.daemon.config.listen import split_listen
from infersight.daemon.config.load import Config
from infersight.storage.store import Store, StoreError


async def serve(config: Config, db: str, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None) -> int:
    try:
        store = Store.open(db, read_only=True, threads=config.storage.duckdb_threads,
                           memory_limit_mb=config.storage.duckdb_memory_limit_mb)
    except StoreError as exc:
        print(f"infersight: serve: {exc}", file=sys.stderr)
        return 1
    from infersight.web.app import create_app

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    runner = web.AppRunner(create_app(config, store), access_log=None)
    await runner.setup()
    host, port = split_listen(config.web.listen)
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:  # a name that does not resolve, an address not on this host, a port in use
            print(f"infersight: serve: cannot listen on {config.web.listen}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        bound = runner.addresses[0]
        print(f"infersight: serving {db} read-only at http://{bound[0]}:{bound[1]}/", file=sys.stderr, flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await runner.cleanup()
        store.close()
    return 0
