"""GET /api/v1/docs: the OpenAPI document rendered by Swagger UI.

Swagger UI comes from npm (swagger-ui-dist), vendored in web/docs_ui/ by its
update.sh: the page makes no request to any other host.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from mediagate.errors import NotFound

routes = web.RouteTableDef()

UI = Path(__file__).parent / "docs_ui"
PAGE = "/api/v1/docs"
# The files the page loads, and nothing else of the folder.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "start.js": "text/javascript",
}
# The vendored files change only with a new release of mediagate.
CACHE_CONTROL = "public, max-age=3600"


@routes.get(PAGE)
async def page(request: web.Request) -> web.FileResponse:
    return _file("index.html", "text/html")


@routes.get(PAGE + "/{asset}")
async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["asset"]
    if name not in ASSETS:
        raise NotFound(f"no asset {name!r} of the documentation page")
    return _file(name, ASSETS[name])


def _file(name: str, content_type: str) -> web.FileResponse:
    return web.FileResponse(
        UI / name,
        headers={"Content-Type": f"{content_type}; charset=utf-8", "Cache-Control": CACHE_CONTROL},
    )
