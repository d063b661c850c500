"""The typed application keys every route reads, in a module of their own so that the app
factory and the route modules import them from below instead of from each other."""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from infersight.daemon.config.load import Config
from infersight.storage.store import Store

CONFIG_KEY = web.AppKey("config", Config)
STORE_KEY = web.AppKey("store", Store)
AGENT_KEY = web.AppKey("agent", object)   # daemon.runtime.Agent, or None outside the daemon
STATIC_DIR = Path(__file__).parent / "static"
