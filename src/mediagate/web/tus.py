"""tus 1.0 (https://tus.io/protocols/resumable-upload) at /api/v1/tus, on the upload engine.

One handler per verb; `X-HTTP-Method-Override` picks the verb for clients
whose network allows only GET and POST. Every answer but OPTIONS carries
`Tus-Resumable`, errors included (they stay problem+json).
"""

from __future__ import annotations

from email.utils import format_datetime
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from mediagate import errors
from mediagate.core.tus import CHECKSUM_ALGORITHMS, TusState
from mediagate.errors import (
    BadRequest,
    MethodNotAllowed,
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
from mediagate.web.media import READ_CONDITIONS, STREAM_REPLIES, serve_media
from mediagate.web.operations import (
    BINARY,
    HOOKS,
    MAX_UPLOAD_SIZE,
    STORAGE,
    Operations,
    Reply,
    parameter,
)
from mediagate.web.problems import from_problem
from mediagate.web.tus_headers import (
    METADATA,
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
UPLOAD = COLLECTION + "/{upload_id}"
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
                response: web.StreamResponse = from_problem(
                    MethodNotAllowed(f"{method} is not one of {allowed}"),
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


# The response headers of tus, as the document describes them.
HEADERS: dict[str, dict[str, Any]] = {
    "Tus-Resumable": {"description": "The tus version", "schema": {"const": TUS_VERSION}},
    "Tus-Version": {"description": "The tus versions spoken", "schema": {"const": TUS_VERSION}},
    "Tus-Extension": {
        "description": "The tus extensions offered",
        "schema": {"const": ",".join(TUS_EXTENSIONS)},
    },
    "Tus-Max-Size": {
        "description": "The largest upload, `MEDIAGATE_MAX_UPLOAD_SIZE`",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "Tus-Checksum-Algorithm": {
        "description": "The algorithms `Upload-Checksum` may use",
        "schema": {"const": ",".join(CHECKSUM_ALGORITHMS)},
    },
    "Upload-Defer-Length": {
        "description": "`1` while the length is not known",
        "schema": {"const": "1"},
    },
    "Upload-Metadata": {"description": "As the creation sent it", "schema": {"type": "string"}},
    "Upload-Concat": {
        "description": "`partial`, or `final;` and the partial uploads' URLs",
        "schema": {"type": "string", "pattern": "^(partial|final;.*)$"},
    },
    "Upload-Expires": {
        "description": "When an unfinished upload expires (HTTP-date)",
        "schema": {"type": "string"},
    },
    "Upload-Media-Id": {
        "description": "The media a finished upload made",
        "schema": {"type": "string"},
    },
    "Link": {
        "description": '`</api/v1/media/info/{media_id}>; rel="describedby"`: a finished '
        "upload's media info (absolute, as `Location`)",
        "schema": {"type": "string"},
    },
}
OPERATIONS = Operations(
    "tus",
    "tus 1.0 resumable uploads, on the same engine",
    headers=HEADERS,
    dispatch=_tus_answer,
    cors=CORS_PATHS,
)

UPLOAD_ID = parameter("path", "upload_id", "The tus upload: the last segment of its `Location`")
TUS_RESUMABLE = parameter(
    "header",
    "Tus-Resumable",
    "The client's tus version; another is 412",
    {"type": "string", "enum": [TUS_VERSION]},
    required=True,
)
UPLOAD_LENGTH = parameter(
    "header",
    "Upload-Length",
    "The upload's length in bytes",
    {"type": "integer", "minimum": 0, "maximum": MAX_UPLOAD_SIZE},
)
CHECKSUM = r"md5 \s*[A-Za-z0-9+/]{22}==|sha1 \s*[A-Za-z0-9+/]{27}=|sha256 \s*[A-Za-z0-9+/]{43}="
UPLOAD_CHECKSUM = parameter(
    "header",
    "Upload-Checksum",
    "`algorithm base64(digest)` of this request's body, verified (460 if it differs)",
    {"type": "string", "pattern": rf"^\s*(?:{CHECKSUM})\s*$"},
)
# A tus body: the upload's bytes from the offset on.
OFFSET_OCTET_STREAM_BODY = {OFFSET_OCTET_STREAM: {"schema": BINARY}}
TUS_ANSWER = ("Tus-Resumable",)
TUS_PROGRESS = ("Upload-Expires", "Upload-Media-Id", "Link")
TUS_LINKS = {
    name: {
        "operationId": operation,
        "parameters": {
            "upload_id": f"$response.header.Location#regex:{COLLECTION}/([^/]+)$",
            **extra,
        },
    }
    for name, operation, extra in [
        ("Status", "tus_status", {}),
        ("Send", "tus_patch", {"header.Upload-Offset": "$response.header.Upload-Offset"}),
        ("Terminate", "tus_terminate", {}),
        ("File", "tus_download", {}),
    ]
}
OPTIONS_REPLY = Reply(
    204,
    "What this server speaks",
    required=("Tus-Version", "Tus-Extension", "Tus-Max-Size", "Tus-Checksum-Algorithm"),
)
OPTIONS_DESCRIPTION = (
    "No token needed. A CORS preflight (with `Access-Control-Request-Method`) is "
    "answered by the CORS rules instead (`MEDIAGATE_CORS_ORIGINS`)."
)
OVERRIDE = " `X-HTTP-Method-Override: {verb}` on a POST does the same."


@OPERATIONS(
    "OPTIONS",
    COLLECTION,
    "tus_options",
    "The tus versions, extensions, largest size and checksum algorithms",
    description=OPTIONS_DESCRIPTION,
    auth=None,
    replies=(OPTIONS_REPLY,),
    problems=(errors.CorsOriginNotAllowed,),
)
@OPERATIONS(
    "OPTIONS",
    UPLOAD,
    "tus_upload_options",
    "As OPTIONS on the collection",
    description=OPTIONS_DESCRIPTION,
    auth=None,
    parameters=(UPLOAD_ID,),
    replies=(OPTIONS_REPLY,),
    problems=(errors.CorsOriginNotAllowed,),
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


@OPERATIONS(
    "POST",
    COLLECTION,
    "tus_create",
    "Create a tus upload (creation, creation-with-upload, concatenation)",
    description="A body (`application/offset+octet-stream`) is the upload's first bytes; "
    "if they fail, the upload is made all the same and `Upload-Offset` says what was kept.",
    parameters=(
        TUS_RESUMABLE,
        UPLOAD_LENGTH,
        parameter(
            "header",
            "Upload-Defer-Length",
            "`1`: the length comes with a later PATCH (instead of `Upload-Length`)",
            {"type": "string", "enum": ["1"]},
        ),
        parameter(
            "header",
            "Upload-Metadata",
            "Comma-separated `key base64(value)` pairs, keys distinct; `filename` (or `name`) "
            "and `filetype` (or `type`) name the media",
            {"type": "string", "pattern": f"^{METADATA}$"},
        ),
        parameter(
            "header",
            "Upload-Concat",
            "`partial`, or `final;` and the finished partial uploads' URLs, space-separated "
            "(then no `Upload-Length`)",
            {
                "type": "string",
                "pattern": rf"^\s*(?:partial|final;(?:\s*\S*{COLLECTION}/[^/\s]+/*)+)\s*$",
            },
        ),
        UPLOAD_CHECKSUM,
    ),
    request_content=OFFSET_OCTET_STREAM_BODY,
    body_required=False,
    answer_headers=TUS_ANSWER,
    replies=(
        Reply(
            201,
            "The upload, at `Location`",
            headers=TUS_PROGRESS,
            required=("Location", "Upload-Offset"),
            links=TUS_LINKS,
        ),
    ),
    problems=(
        errors.BadRequest,
        errors.MalformedBody,
        errors.NotFound,
        errors.SessionExpired,
        errors.ProtocolVersionUnsupported,
        errors.FileTooLarge,
        errors.TooManySessions,
        *HOOKS,
        errors.NotMedia,
        errors.PartialTaken,
        errors.UnsupportedMediaType,
        errors.ChecksumAlgorithmUnsupported,
        errors.ChecksumMismatch,
        *STORAGE,
    ),
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


@OPERATIONS(
    "HEAD",
    UPLOAD,
    "tus_status",
    "The upload's offset, length and metadata",
    description="Completes an upload whose every byte is in but whose completion failed."
    + OVERRIDE.format(verb="HEAD"),
    parameters=(UPLOAD_ID, TUS_RESUMABLE),
    answer_headers=TUS_ANSWER,
    replies=(
        Reply(
            200,
            "The upload",
            headers=(
                "Upload-Length",
                "Upload-Defer-Length",
                "Upload-Metadata",
                "Upload-Concat",
                *TUS_PROGRESS,
            ),
            required=("Upload-Offset", "Cache-Control"),
        ),
    ),
    problems=(
        errors.NotFound,
        errors.SessionExpired,
        errors.UploadFailed,
        errors.ProtocolVersionUnsupported,
        *STORAGE,
    ),
)
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


@OPERATIONS(
    "PATCH",
    UPLOAD,
    "tus_patch",
    "Send bytes at the upload's offset",
    description="Cut at part boundaries as it streams; with `Upload-Checksum`, nothing of a "
    "PATCH that fails is kept. The last byte completes the upload into a media."
    + OVERRIDE.format(verb="PATCH"),
    parameters=(
        UPLOAD_ID,
        TUS_RESUMABLE,
        parameter(
            "header",
            "Upload-Offset",
            "Where the body starts: the offset HEAD answers",
            {"type": "integer", "minimum": 0},
            required=True,
        ),
        UPLOAD_CHECKSUM,
        {**UPLOAD_LENGTH, "description": "A deferred length, once"},
    ),
    request_content=OFFSET_OCTET_STREAM_BODY,
    answer_headers=TUS_ANSWER,
    replies=(Reply(204, "Kept", headers=TUS_PROGRESS, required=("Upload-Offset",)),),
    problems=(
        errors.BadRequest,
        errors.MalformedBody,
        errors.ChunkIncomplete,
        errors.Forbidden,
        errors.NotFound,
        errors.BodyReadTimeout,
        errors.OffsetMismatch,
        errors.ChunkSuperseded,
        errors.UploadSuperseded,
        errors.UploadLocked,
        errors.SessionNotOpen,
        errors.UploadFailed,
        errors.SessionExpired,
        errors.ProtocolVersionUnsupported,
        errors.FileTooLarge,
        errors.UnsupportedMediaType,
        errors.ChecksumAlgorithmUnsupported,
        errors.ChecksumMismatch,
        errors.TooMuchHeld,
        *HOOKS,
        errors.NotMedia,
        *STORAGE,
    ),
)
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


@OPERATIONS(
    "GET",
    UPLOAD,
    "tus_download",
    "A finished upload's file, as `stream_media` serves its media",
    description="Ranges, conditionals, a redirect to S3 or the CDN, as `stream_media`; "
    "with the owner's bearer token (no `Tus-Resumable` needed). An unfinished upload is "
    "`409 upload-incomplete`. A page's `<video>` cannot send the token: give it the "
    "media info's signed `stream_url` instead.",
    # HEAD on this path is tus's offset retrieval.
    head=False,
    parameters=(UPLOAD_ID, *READ_CONDITIONS),
    replies=STREAM_REPLIES,
    problems=(
        errors.NotFound,
        errors.UploadIncomplete,
        errors.SessionExpired,
        errors.UploadFailed,
        errors.PreconditionFailed,
        errors.RangeNotSatisfiable,
        errors.MediaFailed,
        errors.MediaNotReady,
        *STORAGE,
    ),
)
async def download(request: web.Request) -> web.StreamResponse:
    """A finished upload's file, as the stream endpoint serves its media (as tusd does)."""
    user_id = authenticated_user(request)
    media = await request.app[SERVICES].tus.media(user_id, request.match_info["upload_id"])
    return await serve_media(request, media)


@OPERATIONS(
    "DELETE",
    UPLOAD,
    "tus_terminate",
    "Terminate an upload: its bytes are removed",
    description="A finished upload is its media: that is deleted as by `delete_media` "
    "(a finalizing one with its parts)." + OVERRIDE.format(verb="DELETE"),
    parameters=(UPLOAD_ID, TUS_RESUMABLE),
    answer_headers=TUS_ANSWER,
    replies=(Reply(204, "Terminated"),),
    problems=(
        errors.NotFound,
        errors.UploadSuperseded,
        errors.UploadLocked,
        errors.SessionNotOpen,
        errors.SessionExpired,
        errors.ProtocolVersionUnsupported,
        *STORAGE,
    ),
)
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


# The verbs each path's one route dispatches; tests/test_openapi.py holds the
# OpenAPI document to exactly these.
DISPATCHED = OPERATIONS.verbs()
