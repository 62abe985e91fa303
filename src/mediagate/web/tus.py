"""tus 1.0 (https://tus.io/protocols/resumable-upload) at /api/v1/tus, on the upload engine.

One handler per verb; `X-HTTP-Method-Override` picks the verb for clients
whose network allows only GET and POST. Every answer but OPTIONS carries
`Tus-Resumable`, errors included (they stay problem+json).
"""

from __future__ import annotations

from email.utils import format_datetime

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from mediagate.core.tus import CHECKSUM_ALGORITHMS, TusState
from mediagate.errors import (
    BadRequest,
    OffsetMismatch,
    Problem,
    ProtocolVersionUnsupported,
    UnsupportedMediaType,
)
from mediagate.web.auth import authenticated_user
from mediagate.web.body_reads import request_body
from mediagate.web.cors import NATIVE_API
from mediagate.web.host import link_origin
from mediagate.web.keys import SERVICES
from mediagate.web.media import serve_media
from mediagate.web.problems import from_problem, problem_response
from mediagate.web.tus_headers import (
    media_name,
    parse_checksum,
    parse_concat,
    parse_metadata,
    parse_number,
    refuse_checksum_trailer,
)

log = structlog.get_logger("mediagate.tus")

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "expiration",
    "checksum",
    "concatenation",
    "concatenation-unfinished",
)
OFFSET_OCTET_STREAM = "application/offset+octet-stream"
COLLECTION = "/api/v1/tus"
# For the CORS middleware: what a browser's tus client sends, and must be able to read.
TUS_ALLOW_HEADERS = (
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Offset",
    "Upload-Checksum",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Content-Type",
    "Authorization",
    "X-HTTP-Method-Override",
    "X-Requested-With",
)
TUS_EXPOSE_HEADERS = (
    "Location",
    "Upload-Media-Id",
    "Link",
    "Upload-Offset",
    "Upload-Length",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "Upload-Metadata",
    "Upload-Expires",
)
# And the methods, for Access-Control-Allow-Methods.
TUS_METHODS = ("POST", "GET", "HEAD", "PATCH", "DELETE", "OPTIONS")
# Verbs outside tus's protocol: no Tus-Resumable asked or sent (a player's GET has none).
NOT_TUS = ("OPTIONS", "GET")
# The relation of the `Link` to a finished upload's media info (RFC 8288, IANA registered).
MEDIA_INFO_RELATION = "describedby"
# What a browser on another origin may send to and read from the tus paths.
CORS_PATHS = NATIVE_API.extended(
    COLLECTION,
    methods=TUS_METHODS,
    request_headers=TUS_ALLOW_HEADERS,
    exposed_headers=TUS_EXPOSE_HEADERS,
)

routes = web.RouteTableDef()


def _method(request: web.Request) -> str:
    return request.headers.get("X-HTTP-Method-Override", request.method).strip().upper()


def _tus_answer(verbs: dict[str, Handler]) -> Handler:
    """Dispatch on the (overridable) verb, and put the tus headers on every answer."""

    async def dispatch(request: web.Request) -> web.StreamResponse:
        method = _method(request)
        try:
            handler = verbs.get(method)
            if handler is None:
                allowed = ", ".join(verbs)
                response: web.StreamResponse = problem_response(
                    405,
                    "method-not-allowed",
                    "Method not allowed",
                    f"{method} is not one of {allowed}",
                    headers={"Allow": allowed},
                )
            else:
                if method not in NOT_TUS:
                    _check_version(request)
                response = await handler(request)
        except Problem as problem:
            response = from_problem(problem)
            if isinstance(problem, OffsetMismatch):
                # The upload's offset, so that the client can resume without a HEAD.
                response.headers["Upload-Offset"] = str(problem.extra["offset"])
        if method not in NOT_TUS:
            response.headers["Tus-Resumable"] = TUS_VERSION
        return response

    return dispatch


def _check_version(request: web.Request) -> None:
    version = request.headers.get("Tus-Resumable")
    if version != TUS_VERSION:
        raise ProtocolVersionUnsupported(
            f"Tus-Resumable {version!r} is not supported; this server speaks {TUS_VERSION}"
        )


async def options(request: web.Request) -> web.Response:
    return web.Response(
        status=204,
        headers={
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": ",".join(TUS_EXTENSIONS),
            "Tus-Max-Size": str(request.app[SERVICES].tus.max_size),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        },
    )


async def create(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    length = parse_number("Upload-Length", request.headers.get("Upload-Length"))
    deferred = request.headers.get("Upload-Defer-Length")
    concat = parse_concat(request.headers.get("Upload-Concat"))
    raw_metadata = request.headers.get("Upload-Metadata", "").strip()
    fields = parse_metadata(raw_metadata)
    filename, content_type = media_name(fields)
    tus = request.app[SERVICES].tus
    if concat is not None and concat[0] == "final":
        if length is not None or deferred is not None:
            raise BadRequest("a final upload's length is its partial uploads' sum: send none")
        state = await tus.concatenate(
            user_id,
            concat[1],
            # Echoed by HEAD as received, as tus asks (its URLs are ASCII: parse_concat).
            concat=request.headers["Upload-Concat"].strip(),
            metadata=raw_metadata,
            filename=filename,
            content_type=content_type,
        )
        headers = {"Location": _upload_url(request, state.session.id), **_progress(request, state)}
        return web.Response(status=201, headers=headers)
    if deferred is not None and deferred.strip() != "1":
        raise BadRequest("Upload-Defer-Length must be 1")
    if (length is None) == (deferred is None):
        raise BadRequest("send either Upload-Length or Upload-Defer-Length: 1")
    with_body = request.content_type == OFFSET_OCTET_STREAM
    if request.body_exists and not with_body:
        raise UnsupportedMediaType(f"a creation's body must be {OFFSET_OCTET_STREAM}")
    if with_body:
        refuse_checksum_trailer(request.headers.get("Trailer"))
    checksum = parse_checksum(request.headers.get("Upload-Checksum")) if with_body else None
    state = await tus.create(
        user_id,
        length=length,
        metadata=raw_metadata,
        filename=filename,
        content_type=content_type,
        partial=concat is not None,
        fields=fields,
        caller=request.remote,
    )
    upload_id = state.session.id
    if with_body and request.content_length != 0:
        # creation-with-upload: the body is the first bytes. If they fail, the
        # upload exists all the same; the answer says how far it got.
        try:
            state = await tus.write(
                user_id,
                upload_id,
                offset=0,
                read=request_body(request),
                body_length=request.content_length,
                checksum=checksum,
                upload_length=None,
            )
        except Problem as problem:
            log.warning("tus.creation_body_failed", session_id=upload_id, error=problem.detail)
            state = await tus.state(user_id, upload_id)
    headers = {"Location": _upload_url(request, upload_id), **_progress(request, state)}
    return web.Response(status=201, headers=headers)


async def head(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    state = await request.app[SERVICES].tus.state(user_id, request.match_info["upload_id"])
    headers = {**_progress(request, state), "Cache-Control": "no-store"}
    if state.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(state.length)
    if state.upload.metadata:
        headers["Upload-Metadata"] = state.upload.metadata
    if state.upload.concat:
        headers["Upload-Concat"] = state.upload.concat
    return web.Response(status=200, headers=headers)


async def patch(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    if request.content_type != OFFSET_OCTET_STREAM:
        raise UnsupportedMediaType(f"a PATCH body must be {OFFSET_OCTET_STREAM}")
    offset = parse_number("Upload-Offset", request.headers.get("Upload-Offset"))
    if offset is None:
        raise BadRequest("a PATCH needs Upload-Offset")
    refuse_checksum_trailer(request.headers.get("Trailer"))
    state = await request.app[SERVICES].tus.write(
        user_id,
        request.match_info["upload_id"],
        offset=offset,
        read=request_body(request),
        body_length=request.content_length,
        checksum=parse_checksum(request.headers.get("Upload-Checksum")),
        upload_length=parse_number("Upload-Length", request.headers.get("Upload-Length")),
    )
    return web.Response(status=204, headers=_progress(request, state))


async def download(request: web.Request) -> web.StreamResponse:
    """A finished upload's file, as the stream endpoint serves its media (as tusd does)."""
    user_id = authenticated_user(request)
    media = await request.app[SERVICES].tus.media(user_id, request.match_info["upload_id"])
    return await serve_media(request, media)


async def delete(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    await request.app[SERVICES].tus.terminate(user_id, request.match_info["upload_id"])
    return web.Response(status=204)


def _progress(request: web.Request, state: TusState) -> dict[str, str]:
    """Where the upload is: its offset, and until it is finished its expiry; then its media."""
    headers = {"Upload-Offset": str(state.offset)}
    if not state.finished:
        headers["Upload-Expires"] = format_datetime(state.session.expires_at, usegmt=True)
        return headers
    media_id = state.session.media_id
    info = link_origin(request).joinpath("api/v1/media/info", media_id)
    headers["Upload-Media-Id"] = media_id
    headers["Link"] = f'<{info}>; rel="{MEDIA_INFO_RELATION}"'
    return headers


def _upload_url(request: web.Request, upload_id: str) -> str:
    """Absolute, on MEDIAGATE_PUBLIC_URL or else the request's (validated) Host."""
    return f"{link_origin(request)}{COLLECTION}/{upload_id}"


UPLOAD = COLLECTION + "/{upload_id}"
# The verbs each path's one route dispatches; tests/test_openapi.py holds the
# OpenAPI document to exactly these.
DISPATCHED: dict[str, dict[str, Handler]] = {
    COLLECTION: {"POST": create, "OPTIONS": options},
    UPLOAD: {
        "GET": download,
        "HEAD": head,
        "PATCH": patch,
        "DELETE": delete,
        "OPTIONS": options,
    },
}
for path, verbs in DISPATCHED.items():
    routes.route("*", path)(_tus_answer(verbs))
