"""JSON responses: one serializer (orjson, numpy-aware, non-string keys) for every route."""
from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(data: Any, status: int = 200) -> web.Response:
    """``data`` as an ``application/json`` response with ``status``."""
    return web.Response(body=orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS),
                        status=status, content_type="application/json")
