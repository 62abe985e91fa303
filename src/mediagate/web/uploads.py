"""Handlers of the native upload API: initiate, chunk, status, abort, complete."""

from __future__ import annotations

from aiohttp import web

from mediagate import errors
from mediagate.core.chunking import FileTooLarge as PlanTooLarge
from mediagate.errors import BadRequest, FileTooLarge
from mediagate.models import MediaState
from mediagate.web.auth import authenticated_user
from mediagate.web.chunk_body import chunk_source
from mediagate.web.chunk_digests import chunk_digests
from mediagate.web.host import link_origin
from mediagate.web.keys import SERVICES
from mediagate.web.media import MEDIA_LINKS, media_info
from mediagate.web.operations import BINARY, HOOKS, STORAGE, Operations, Reply, parameter
from mediagate.web.schemas import (
    ChunkReceived,
    InitiateRequest,
    MediaCreated,
    MediaFinalizing,
    SessionCreated,
    SessionStatusAnswer,
    parse_json,
)

OPERATIONS = Operations("uploads", "Chunked, resumable uploads (native API)")

# Any id but `initiate`, so that a GET of /initiate is 405 (Allow: POST), not a session lookup.
SESSION = "/api/v1/media/upload/{session_id:(?!initiate$)[^/]+}"

SESSION_ID = parameter("path", "session_id", "The upload session, as initiate answered it")
SESSION_LINKS = {
    name: {"operationId": operation, "parameters": {"session_id": "$response.body#/session_id"}}
    for name, operation in {
        "SendChunk": "put_chunk",
        "SessionStatus": "upload_status",
        "Complete": "complete_upload",
        "Abort": "abort_upload",
    }.items()
}


@OPERATIONS(
    "POST",
    "/api/v1/media/upload/initiate",
    "initiate_upload",
    "Start an upload session",
    replies=(
        Reply(201, "The session, with the chunk size chosen", SessionCreated, links=SESSION_LINKS),
    ),
    problems=(
        errors.BadRequest,
        errors.MalformedBody,
        errors.BodyReadTimeout,
        errors.BodyTooLarge,
        errors.FileTooLarge,
        errors.TooManySessions,
        *HOOKS,
        *STORAGE,
    ),
    request_model=InitiateRequest,
)
async def initiate(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    body = await parse_json(request, InitiateRequest)
    try:
        session = await request.app[SERVICES].engine.initiate(
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


@OPERATIONS(
    "POST",
    SESSION + "/chunk/{chunk_number}",
    "put_chunk",
    "Send one chunk (again: it replaces the one stored)",
    description="All chunks but the last are exactly `chunk_size` bytes. `Content-Length`, "
    "when sent, must equal the chunk's length. A digest mismatch keeps nothing of the chunk.",
    parameters=(
        SESSION_ID,
        parameter(
            "path",
            "chunk_number",
            "0-based chunk number",
            {"type": "integer", "minimum": 0, "maximum": 9999},
        ),
        parameter(
            "header",
            "Content-MD5",
            "Base64 MD5 of the chunk, verified",
            {"type": "string", "pattern": "^[A-Za-z0-9+/]{22}==$"},
        ),
        parameter(
            "header",
            "X-Chunk-SHA256",
            "Hex SHA-256 of the chunk, verified",
            {"type": "string", "pattern": "^[0-9A-Fa-f]{64}$"},
        ),
    ),
    request_content={
        "application/octet-stream": {"schema": BINARY},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": BINARY},
                "required": ["file"],
            },
            "encoding": {"file": {"contentType": "application/octet-stream"}},
        },
    },
    replies=(Reply(200, "The chunk is stored", ChunkReceived),),
    problems=(
        errors.BadRequest,
        errors.MalformedBody,
        errors.ChunkOutOfRange,
        errors.ChunkLengthMismatch,
        errors.ChunkIncomplete,
        errors.NotFound,
        errors.BodyReadTimeout,
        errors.SessionNotOpen,
        errors.ChunkSuperseded,
        errors.WrongProtocol,
        errors.ChunkInFlight,
        errors.SessionExpired,
        errors.DigestMismatch,
        *STORAGE,
    ),
)
async def put_chunk(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    number = _chunk_number(request.match_info["chunk_number"])
    expected = chunk_digests(
        request.headers.get("Content-MD5"), request.headers.get("X-Chunk-SHA256")
    )
    source, declared_length = await chunk_source(request)
    receipt = await request.app[SERVICES].engine.put_chunk(
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


@OPERATIONS(
    "GET",
    SESSION,
    "upload_status",
    "What a client needs to resume: the chunks stored",
    parameters=(SESSION_ID,),
    replies=(Reply(200, "The session", SessionStatusAnswer),),
    problems=(errors.NotFound,),
)
async def status(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    found = await request.app[SERVICES].engine.status(user_id, request.match_info["session_id"])
    return SessionStatusAnswer.of(found).response()


@OPERATIONS(
    "DELETE",
    SESSION,
    "abort_upload",
    "Abort a session: its chunks are removed",
    parameters=(SESSION_ID,),
    replies=(Reply(204, "Aborted"),),
    problems=(errors.NotFound, errors.SessionNotOpen, errors.WrongProtocol, *STORAGE),
)
async def abort(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    await request.app[SERVICES].engine.abort(user_id, request.match_info["session_id"])
    return web.Response(status=204)


@OPERATIONS(
    "POST",
    SESSION + "/complete",
    "complete_upload",
    "Assemble the chunks into a media (again: the same media)",
    parameters=(SESSION_ID,),
    replies=(
        Reply(201, "The media", MediaCreated, links=MEDIA_LINKS),
        Reply(
            202,
            "Every chunk is safe; some move to S3 once it is back",
            MediaFinalizing,
            links=MEDIA_LINKS,
        ),
    ),
    problems=(
        errors.NotFound,
        errors.MissingChunks,
        errors.ChunkInFlight,
        errors.SessionNotOpen,
        errors.WrongProtocol,
        errors.UploadFailed,
        errors.SessionExpired,
        errors.FileDigestMismatch,
        *HOOKS,
        errors.NotMedia,
        *STORAGE,
    ),
)
async def complete(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    # Before complete records the media: nothing may fail once it has.
    origin = link_origin(request)
    media = await request.app[SERVICES].engine.complete(user_id, request.match_info["session_id"])
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
