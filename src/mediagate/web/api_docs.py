"""GET /api/v1/docs: the OpenAPI document rendered by Swagger UI.

Swagger UI comes from npm (swagger-ui-dist), vendored in web/docs_ui/ by its
update.sh: the page makes no request to any other host.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from mediagate.errors import NotFound
from mediagate.web.operations import Operations, Reply, parameter

OPERATIONS = Operations("documentation", "This document")

UI = Path(__file__).parent / "docs_ui"
PAGE = "/api/v1/docs"
# The files the page loads, and nothing else of the folder.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "start.js": "text/javascript",
}
# The page shares its origin with the web page that keeps a token in
# localStorage: it gets the same guard. Swagger UI needs no inline script and no
# eval (its bundle and start.js are files) and no inline style (its stylesheet
# is a file; what it styles at run time goes through the CSSOM, which style-src
# does not govern); only its icons are `data:` SVGs. "Try it out" calls this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # The page's requests carry no secret in their URL, but nothing is gained by a Referer.
    "Referrer-Policy": "no-referrer",
    # Revalidated each time (a 304 by ETag when unchanged): never kept by a shared cache,
    # and a new release's files are seen at once.
    "Cache-Control": "no-cache",
}


@OPERATIONS(
    "GET",
    PAGE,
    "docs_page",
    "This document, rendered (Swagger UI)",
    auth=None,
    replies=(Reply(200, "An HTML page", content={"text/html": {"schema": {}}}),),
)
async def page(request: web.Request) -> web.FileResponse:
    return _file("index.html", "text/html")


@OPERATIONS(
    "GET",
    PAGE + "/{asset}",
    "docs_asset",
    "A script or stylesheet of the rendered document",
    auth=None,
    parameters=(parameter("path", "asset", "File name", {"enum": sorted(ASSETS)}),),
    replies=(
        Reply(
            200,
            "The file",
            content={"text/javascript": {"schema": {}}, "text/css": {"schema": {}}},
        ),
    ),
    problems=(NotFound,),
)
async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["asset"]
    if name not in ASSETS:
        raise NotFound(f"no asset {name!r} of the documentation page")
    return _file(name, ASSETS[name])


def _file(name: str, content_type: str) -> web.FileResponse:
    return web.FileResponse(
        UI / name, headers={"Content-Type": f"{content_type}; charset=utf-8", **HEADERS}
    )
