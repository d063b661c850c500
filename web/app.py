"""The aiohttp app factory: ``create_app(config, store, agent=None)``.

Serves the UI (static files, no build step), the JSON API and /metrics in the daemon's
process. Middlewares add security headers to every response, enforce the bearer token
when one is configured (constant-time compare) or else the Host check against DNS rebinding
(web/hosts.py), and turn unexpected errors into a JSON 500 that reveals nothing of the
internals.
"""
from __future__ import annotations

import hmac
import logging
from typing import Any

from aiohttp import web

from infersight.daemon.config.load import Config
from infersight.storage.store import Store
from infersight.web import api, metrics, ui
from infersight.web.heavy import GATE_KEY, QueryGate
from infersight.web.hosts import host_check_middleware
from infersight.web.keys import AGENT_KEY, CONFIG_KEY, STORE_KEY
from infersight.web.responses import json_response

log = logging.getLogger("infersight.web")


CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


@web.middleware
async def security_headers(request: web.Request, handler):
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = _as_response(exc)
    except Exception as exc:  # never leak a traceback to the client
        log.error("event=request_failed path=%s error=%r", request.path, str(exc)[:200], exc_info=exc)
        response = json_response({"error": "internal error; see the agent's log"}, status=500)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


def _as_response(exc: web.HTTPException) -> web.Response:
    """A raised HTTP status as a plain response (aiohttp deprecates returning the exception
    from a middleware); errors get a JSON body unless they already carry one."""
    headers = {k: v for k, v in exc.headers.items() if k.lower() != "content-length"}
    if exc.status >= 400 and exc.content_type != "application/json":
        response = json_response({"error": exc.reason}, status=exc.status)
        for k, v in headers.items():
            if k.lower() != "content-type":
                response.headers[k] = v
        return response
    return web.Response(status=exc.status, reason=exc.reason, body=exc.body, headers=headers)


def auth_middleware(token: str):
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check_token(request: web.Request, handler):
        # the page and its static code hold no data; every API call and /metrics needs the token
        if request.method in ("GET", "HEAD") and (request.path == "/" or request.path.startswith("/static/")):
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="infersight"'})
        return await handler(request)

    return check_token


def create_app(config: Config, store: Store, *, agent: Any = None) -> web.Application:
    """The web application; ``agent`` (daemon.runtime.Agent) adds health and live state."""
    middlewares = [security_headers]
    if config.web.auth_token:
        middlewares.append(auth_middleware(config.web.auth_token))
    else:  # with a token, a rebinding page has no way in; without one, the Host must be ours
        middlewares.append(host_check_middleware(config))
    app = web.Application(middlewares=middlewares, client_max_size=64 * 1024)
    app[CONFIG_KEY] = config
    app[STORE_KEY] = store
    app[AGENT_KEY] = agent
    app[GATE_KEY] = QueryGate(config.web.heavy_queries, config.web.heavy_queue)
    api.add_routes(app)
    ui.add_routes(app)
    metrics.add_routes(app)
    return app
