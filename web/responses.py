"""JSON responses: one serializer (orjson, numpy-aware, non-string keys) for every route.

Large answers are encoded off the event loop (``dumps`` on the store's reader threads, then
:func:`bytes_response`); small ones with :func:`json_response`.
"""
from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(data: Any) -> bytes:
    """``data`` as JSON bytes (safe to call on any thread)."""
    return orjson.dumps(data, option=OPTIONS)


def json_response(data: Any, status: int = 200) -> web.Response:
    """``data`` as an ``application/json`` response with ``status``."""
    return bytes_response(dumps(data), status)


def bytes_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Already-encoded JSON as an ``application/json`` response."""
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)
