"""The UI's static files. No build step, no CDN: what is in web/static/ is what is served."""
from __future__ import annotations

from aiohttp import web

from .app import STATIC_DIR


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.exists():
        return web.Response(text="infersight agent: the UI is not installed; see /api/health", content_type="text/plain")
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False, show_index=False)
