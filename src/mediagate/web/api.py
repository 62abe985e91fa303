"""The HTTP API: its handler modules, listed once.

Each module declares its operations beside its handlers (web/operations.py);
web/app.py adds their routes, and GET /api/v1/openapi.json (below) documents them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mediagate.web import api_docs, direct, ietf, media, openapi, tus, uploads
from mediagate.web.keys import SETTINGS
from mediagate.web.operations import Operations, Reply

OPERATIONS = Operations("documentation")


@OPERATIONS(
    "GET",
    "/api/v1/openapi.json",
    "openapi",
    "This document",
    auth=None,
    replies=(
        Reply(200, "OpenAPI 3.1", content={"application/json": {"schema": {"type": "object"}}}),
    ),
)
async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(document(request.app[SETTINGS].max_upload_size))


# In the document's order; a new module of operations goes here.
API = (
    uploads.OPERATIONS,
    media.OPERATIONS,
    tus.OPERATIONS,
    direct.OPERATIONS,
    ietf.OPERATIONS,
    OPERATIONS,
    api_docs.OPERATIONS,
)


def document(max_upload_size: int) -> dict[str, Any]:
    """The OpenAPI document of this server, taking files of up to `max_upload_size` bytes."""
    return openapi.document(API, max_upload_size)
