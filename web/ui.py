"""The UI: static files (no build step, no CDN: what is in web/static/ is what is served)
and the UI's own JSON routes (web/api_ui.py)."""
from __future__ import annotations

from aiohttp import web

from infersight.web import api_ui
from infersight.web.keys import STATIC_DIR


async def index(request: web.Request) -> web.StreamResponse:
    """The single page; its state lives in the query string, so any URL of it is a deep link."""
    page = STATIC_DIR / "index.html"
    if not page.exists():
        return web.Response(text="infersight agent: the UI is not installed; see /api/health", content_type="text/plain")
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    api_ui.add_routes(app)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False, show_index=False)
