"""Handlers of the native upload API: initiate, chunk, status, abort, complete."""

from __future__ import annotations

from aiohttp import web

from mediagate.core.chunk_stream import ExpectedDigests
from mediagate.core.chunking import FileTooLarge as PlanTooLarge
from mediagate.errors import BadRequest, FileTooLarge
from mediagate.models import MediaState
from mediagate.web.auth import authenticated_user
from mediagate.web.chunk_body import chunk_source
from mediagate.web.host import link_origin
from mediagate.web.keys import ENGINE
from mediagate.web.media import media_info
from mediagate.web.schemas import (
    ChunkReceived,
    InitiateRequest,
    MediaCreated,
    MediaFinalizing,
    SessionCreated,
    SessionStatusAnswer,
    parse_json,
)

routes = web.RouteTableDef()

# Any id but `initiate`, so that a GET of /initiate is 405 (Allow: POST), not a session lookup.
SESSION = "/api/v1/media/upload/{session_id:(?!initiate$)[^/]+}"


@routes.post("/api/v1/media/upload/initiate")
async def initiate(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    body = await parse_json(request, InitiateRequest)
    try:
        session = await request.app[ENGINE].initiate(
            user_id,
            filename=body.filename,
            size=body.size,
            content_type=body.resolved_content_type(),
            chunk_size=body.chunk_size,
            sha256=body.sha256,
            caller=request.remote,
        )
    except PlanTooLarge as error:
        raise FileTooLarge(str(error)) from None
    return SessionCreated.of(session).response(201)


@routes.post("/api/v1/media/upload/{session_id}/chunk/{chunk_number}")
async def put_chunk(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    number = _chunk_number(request.match_info["chunk_number"])
    expected = ExpectedDigests.from_headers(
        request.headers.get("Content-MD5"), request.headers.get("X-Chunk-SHA256")
    )
    source, declared_length = await chunk_source(request)
    receipt = await request.app[ENGINE].put_chunk(
        user_id,
        request.match_info["session_id"],
        number,
        source,
        declared_length=declared_length,
        expected=expected,
    )
    return ChunkReceived(
        chunk_number=receipt.chunk.number,
        size=receipt.chunk.size,
        received_chunks=receipt.received_chunks,
    ).response()


@routes.get(SESSION)
async def status(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    found = await request.app[ENGINE].status(user_id, request.match_info["session_id"])
    return SessionStatusAnswer.of(found).response()


@routes.delete(SESSION)
async def abort(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    await request.app[ENGINE].abort(user_id, request.match_info["session_id"])
    return web.Response(status=204)


@routes.post("/api/v1/media/upload/{session_id}/complete")
async def complete(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    # Before complete records the media: nothing may fail once it has.
    origin = link_origin(request)
    media = await request.app[ENGINE].complete(user_id, request.match_info["session_id"])
    info = media_info(request, media, origin)
    url = info.stream_url
    if media.state is MediaState.FINALIZING:
        return MediaFinalizing(
            media_id=media.id, stream_url=url, info=info, state=media.state
        ).response(202)
    return MediaCreated(media_id=media.id, stream_url=url, info=info).response(201)


def _chunk_number(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise BadRequest(f"chunk number {text!r} is not a number 0..9999")
    return int(text)
