"""The OpenAPI 3.1 document of the API, built from the code: a registry of the
routes (below) plus the pydantic models of bodies and answers (web/schemas.py)
and the problem types of errors.py. Nothing of it is written by hand as JSON.

tests/test_openapi.py checks that every route the application registers under
/api/v1 is in the registry, and tests/test_fuzz.py fuzzes a live server with
schemathesis against the served document.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from mediagate import errors
from mediagate.core.tus import CHECKSUM_ALGORITHMS
from mediagate.web import api_docs, ietf, tus
from mediagate.web.keys import SETTINGS
from mediagate.web.problems import PROBLEM_TYPE_BASE
from mediagate.web.request_context import REQUEST_ID_HEADER
from mediagate.web.schemas import (
    ChunkReceived,
    InitiateRequest,
    MediaCreated,
    MediaFinalizing,
    MediaInfo,
    MediaPage,
    ProblemDetails,
    SessionCreated,
    SessionStatusAnswer,
)

routes = web.RouteTableDef()

SCHEMA_REF = "#/components/schemas/{model}"
OPENAPI_PATH = "/api/v1/openapi.json"


@dataclass(frozen=True)
class ProblemType:
    """One `type` of problem+json answer: its status, code and title."""

    status: int
    code: str
    title: str
    # Its `type`, when not mediagate's own (the IETF draft's IANA-registered ones).
    type_uri: str = ""

    @classmethod
    def of(cls, problem: type[errors.Problem]) -> ProblemType:
        return cls(problem.status, problem.code, problem.title, getattr(problem, "type_uri", ""))


# Problems the web layer answers itself, not raised as errors.py classes.
SHUTTING_DOWN = ProblemType(503, "shutting-down", "Shutting down")  # web/request_gate.py
BODY_TOO_LARGE = ProblemType(413, "request-entity-too-large", "Request Entity Too Large")
PRECONDITION_FAILED = ProblemType(412, "precondition-failed", "Precondition Failed")
RANGE_NOT_SATISFIABLE = ProblemType(416, "range-not-satisfiable", "Range Not Satisfiable")
MALFORMED_BODY = ProblemType(400, "malformed-body", "Malformed body")  # web/problems.py
CORS_ORIGIN_NOT_ALLOWED = ProblemType(403, "cors-origin-not-allowed", "Origin not allowed")

# Any request may meet these: a malformed Host (web/host.py), a server going
# down, or a failure of its own.
ALWAYS = (errors.BadRequest, SHUTTING_DOWN, ProblemType.of(errors.Problem))
# Every operation that takes a token reads or writes the catalog, which may be away,
# and may need the identity provider's keys to check the token.
AUTHENTICATED = (
    errors.Unauthorized,
    errors.CatalogUnavailable,
    errors.IdentityProviderUnavailable,
)
STORAGE = (
    errors.StorageUnavailable,
    errors.StorageRejected,
    errors.StorageFull,
    errors.FileTooLargeForStorage,
)

# The pre-create and pre-finish hooks' answers (core/hooks.py): a refusal is listed at its default
# status, 403; the application may choose any other 4xx.
HOOKS = (errors.UploadRefused, errors.HookUnavailable)

# Headers each problem type's answer carries (errors.py `headers`).
PROBLEM_HEADERS = {
    SHUTTING_DOWN.code: ("Retry-After",),
    RANGE_NOT_SATISFIABLE.code: ("Content-Range",),
    **{
        problem.code: tuple(problem.headers)
        for problem in vars(errors).values()
        if isinstance(problem, type) and issubclass(problem, errors.Problem)
    },
    errors.OffsetMismatch.code: ("Upload-Offset",),  # web/tus.py puts the upload's offset on it
}


@dataclass(frozen=True)
class Reply:
    """A success answer: JSON of `model`, or `content` as written, or no body;
    `required` headers are always on it, `headers` may be."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    content: dict[str, Any] | None = None
    headers: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    links: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    operation_id: str
    summary: str
    replies: tuple[Reply, ...]
    problems: tuple[type[errors.Problem] | ProblemType, ...] = ()
    parameters: tuple[dict[str, Any], ...] = ()
    # A JSON body of `request_model`, or `request_content` as written.
    request_model: type[BaseModel] | None = None
    request_content: dict[str, Any] | None = None
    body_required: bool = True
    # A signed stream link (`expires`, `signature`) may stand in for the bearer token.
    auth: Literal["bearer", "bearer-or-link"] | None = "bearer"
    description: str = ""
    # aiohttp answers HEAD on a GET route with the GET's status and headers.
    head: bool = True
    tag: str = "media"
    # On every answer of the handler: required on its replies, documented on its
    # problems (the web layer's own refusals, before the handler runs, lack them).
    answer_headers: tuple[str, ...] = ()


def _parameter(
    where: Literal["path", "query", "header"],
    name: str,
    description: str,
    schema: dict[str, Any] | None = None,
    *,
    required: bool = False,
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


SESSION_ID = _parameter("path", "session_id", "The upload session, as initiate answered it")
MEDIA_ID = _parameter("path", "media_id", "The media, as complete answered it")
CHUNK_NUMBER = _parameter(
    "path",
    "chunk_number",
    "0-based chunk number",
    {"type": "integer", "minimum": 0, "maximum": 9999},
)

SESSION_LINKS = {
    name: {"operationId": operation, "parameters": {"session_id": "$response.body#/session_id"}}
    for name, operation in {
        "SendChunk": "put_chunk",
        "SessionStatus": "upload_status",
        "Complete": "complete_upload",
        "Abort": "abort_upload",
    }.items()
}
MEDIA_LINKS = {
    name: {"operationId": operation, "parameters": {"media_id": "$response.body#/media_id"}}
    for name, operation in {
        "MediaInfo": "media_info",
        "Stream": "stream_media",
        "Delete": "delete_media",
    }.items()
}

BINARY = {"type": "string", "contentMediaType": "application/octet-stream"}
ANY_BYTES: dict[str, Any] = {"*/*": {"schema": {}}}

REQUEST_ID = {
    "description": "The request's id, also in a problem's `request_id` (a client may send one)",
    "schema": {"type": "string"},
}
RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "WWW-Authenticate": {
        "description": '`Bearer realm="mediagate"`',
        "required": True,
        "schema": {"type": "string"},
    },
    "Location": {
        "description": "A presigned S3 GET or the CDN URL (stream); the new upload's URL (tus)",
        "required": True,
        "schema": {"type": "string"},
    },
    "Content-Range": {
        "description": "`bytes first-last/size` (206), `bytes */size` (416)",
        "schema": {"type": "string", "pattern": "^bytes ([0-9]+-[0-9]+|\\*)/[0-9]+$"},
    },
    "ETag": {"description": "Strong validator: the media id, quoted", "schema": {"type": "string"}},
    "Last-Modified": {"description": "The media's creation", "schema": {"type": "string"}},
    "Accept-Ranges": {"description": "`bytes`", "schema": {"type": "string"}},
    "Content-Disposition": {
        "description": "How to present the file, with its original filename",
        "schema": {"type": "string"},
    },
    "Cache-Control": {
        "description": "`MEDIAGATE_CACHE_CONTROL` for bytes, `no-store` for a redirect or tus HEAD",
        "schema": {"type": "string"},
    },
    "Tus-Resumable": {"description": "The tus version", "schema": {"const": tus.TUS_VERSION}},
    "Tus-Version": {"description": "The tus versions spoken", "schema": {"const": tus.TUS_VERSION}},
    "Tus-Extension": {
        "description": "The tus extensions offered",
        "schema": {"const": ",".join(tus.TUS_EXTENSIONS)},
    },
    "Tus-Max-Size": {
        "description": "The largest upload, `MEDIAGATE_MAX_UPLOAD_SIZE`",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "Tus-Checksum-Algorithm": {
        "description": "The algorithms `Upload-Checksum` may use",
        "schema": {"const": ",".join(CHECKSUM_ALGORITHMS)},
    },
    "Upload-Offset": {
        "description": "The bytes of the upload kept so far",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "Upload-Length": {
        "description": "The upload's length, once known",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
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
    "Upload-Complete": {
        "description": "`?1` once the upload is complete (IETF draft)",
        "schema": {"enum": ["?0", "?1"]},
    },
    "Upload-Limit": {
        "description": "`max-size=…`, with `max-age=…` for an upload (IETF draft)",
        "schema": {"type": "string"},
    },
    "Repr-Digest": {
        "description": "RFC 9530: the file's `sha-256`, as the creation declared and the "
        "server verified",
        "schema": {"type": "string"},
    },
    "Accept-Patch": {"description": "`application/partial-upload`", "schema": {"type": "string"}},
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
STREAM_HEADERS = ("ETag", "Last-Modified", "Accept-Ranges", "Content-Disposition", "Cache-Control")

# What a read of a media's bytes takes and answers (stream, and tus's GET).
READ_CONDITIONS = (
    _parameter(
        "header",
        "Range",
        "`bytes=first-last`, `bytes=first-`, `bytes=-suffix`, or several",
        {"type": "string"},
    ),
    _parameter("header", "If-Range", "An ETag or HTTP-date", {"type": "string"}),
    _parameter("header", "If-Match", "ETags", {"type": "string"}),
    _parameter("header", "If-None-Match", "ETags", {"type": "string"}),
    _parameter("header", "If-Modified-Since", "HTTP-date", {"type": "string"}),
    _parameter("header", "If-Unmodified-Since", "HTTP-date", {"type": "string"}),
)
STREAM_REPLIES = (
    Reply(200, "The whole file", content=ANY_BYTES, headers=STREAM_HEADERS),
    Reply(
        206,
        "The ranges asked for (several: `multipart/byteranges`)",
        content=ANY_BYTES,
        headers=(*STREAM_HEADERS, "Content-Range"),
    ),
    Reply(302, "To a presigned S3 GET or the CDN", headers=("Location", "Cache-Control")),
    Reply(304, "Not modified", headers=("ETag", "Last-Modified", "Cache-Control")),
)

UPLOAD_ID = _parameter("path", "upload_id", "The tus upload: the last segment of its `Location`")
TUS_RESUMABLE = _parameter(
    "header",
    "Tus-Resumable",
    "The client's tus version; another is 412",
    {"type": "string", "enum": [tus.TUS_VERSION]},
    required=True,
)
# Upload-Length's `maximum` is this server's MEDIAGATE_MAX_UPLOAD_SIZE (`_limited`).
UPLOAD_LENGTH = _parameter(
    "header",
    "Upload-Length",
    "The upload's length in bytes",
    {"type": "integer", "minimum": 0},
)
# The tus headers' grammar as web/tus_headers.py parses it (spaces around items are
# stripped); what a pattern cannot say (distinct keys) is a 400 all the same.
TUS_METADATA_KEY = r"[!-+\--~]+"  # visible ASCII but the comma
BASE64 = r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
METADATA_PAIR = rf"\s*{TUS_METADATA_KEY}(?: \s*{BASE64})?\s*"
CHECKSUM = r"md5 \s*[A-Za-z0-9+/]{22}==|sha1 \s*[A-Za-z0-9+/]{27}=|sha256 \s*[A-Za-z0-9+/]{43}="
TUS_CREATION_HEADERS = (
    TUS_RESUMABLE,
    UPLOAD_LENGTH,
    _parameter(
        "header",
        "Upload-Defer-Length",
        "`1`: the length comes with a later PATCH (instead of `Upload-Length`)",
        {"type": "string", "enum": ["1"]},
    ),
    _parameter(
        "header",
        "Upload-Metadata",
        "Comma-separated `key base64(value)` pairs, keys distinct; `filename` (or `name`) "
        "and `filetype` (or `type`) name the media",
        {"type": "string", "pattern": rf"^(?:{METADATA_PAIR}(?:,{METADATA_PAIR})*|\s*)$"},
    ),
    _parameter(
        "header",
        "Upload-Concat",
        "`partial`, or `final;` and the finished partial uploads' URLs, space-separated "
        "(then no `Upload-Length`)",
        {
            "type": "string",
            "pattern": r"^\s*(?:partial|final;(?:\s*\S*/api/v1/tus/[^/\s]+/*)+)\s*$",
        },
    ),
)
UPLOAD_CHECKSUM = _parameter(
    "header",
    "Upload-Checksum",
    "`algorithm base64(digest)` of this request's body, verified (460 if it differs)",
    {"type": "string", "pattern": rf"^\s*(?:{CHECKSUM})\s*$"},
)
# A tus body: the upload's bytes from the offset on.
OFFSET_OCTET_STREAM = {tus.OFFSET_OCTET_STREAM: {"schema": BINARY}}
TUS_ANSWER = ("Tus-Resumable",)
TUS_PROGRESS = ("Upload-Expires", "Upload-Media-Id", "Link")
TUS_LINKS = {
    name: {
        "operationId": operation,
        "parameters": {
            "upload_id": "$response.header.Location#regex:/api/v1/tus/([^/]+)$",
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
TUS_OPTIONS_REPLY = Reply(
    204,
    "What this server speaks",
    required=("Tus-Version", "Tus-Extension", "Tus-Max-Size", "Tus-Checksum-Algorithm"),
)
TUS_OPTIONS_DESCRIPTION = (
    "No token needed. A CORS preflight (with `Access-Control-Request-Method`) is "
    "answered by the CORS rules instead (`MEDIAGATE_CORS_ORIGINS`)."
)
OVERRIDE = " `X-HTTP-Method-Override: {verb}` on a POST does the same."

IETF_ID = _parameter("path", "upload_id", "The upload resource: the last segment of its `Location`")
IETF_VERSION = _parameter(
    "header",
    "Upload-Draft-Interop-Version",
    "The draft's interop version: 6 or 8 (the latest); without it, the latest without 104",
    {"type": "integer", "enum": list(ietf.INTEROP_VERSIONS)},
)
IETF_COMPLETE = _parameter(
    "header",
    "Upload-Complete",
    "`?1`: this request's body ends the file",
    {"type": "string", "enum": ["?0", "?1"]},
    required=True,
)
IETF_DIGEST = _parameter(
    "header",
    "Content-Digest",
    "RFC 9530 `sha-256=:…:` or `sha-512=:…:` of this body: nothing of it kept if it differs",
)
IETF_STATE = ("Upload-Offset", "Upload-Complete", "Upload-Limit", "Upload-Length")
IETF_FINISHED = (
    Reply(
        201,
        "Complete: the media, as `complete_upload` answers",
        MediaCreated,
        headers=(*IETF_STATE, "Location", "Repr-Digest"),
    ),
    Reply(
        202,
        "Complete; some parts wait on local disk for S3",
        MediaFinalizing,
        headers=(*IETF_STATE, "Location", "Repr-Digest"),
    ),
)
IETF_WRITE_PROBLEMS = (
    errors.BadRequest,
    MALFORMED_BODY,
    errors.ChunkIncomplete,
    errors.NotFound,
    errors.BodyReadTimeout,
    errors.MismatchingUploadOffset,
    errors.CompletedUpload,
    errors.InconsistentUploadLength,
    errors.InteropVersionUnsupported,
    errors.ContentDigestMismatch,
    errors.FileDigestMismatch,
    errors.ChunkSuperseded,
    errors.UploadSuperseded,
    errors.UploadLocked,
    errors.SessionNotOpen,
    errors.UploadFailed,
    errors.SessionExpired,
    errors.FileTooLarge,
    errors.UnsupportedMediaType,
    errors.TooMuchHeld,
    *HOOKS,
    *STORAGE,
)
IETF_ROUTES = (
    Route(
        "OPTIONS",
        ietf.COLLECTION,
        "ietf_options",
        "The limits of an upload made here (IETF resumable uploads)",
        tag="ietf",
        auth=None,
        replies=(Reply(204, "The limits", required=("Upload-Limit", "Accept-Patch")),),
        problems=(CORS_ORIGIN_NOT_ALLOWED,),
    ),
    Route(
        "POST",
        ietf.COLLECTION,
        "ietf_create",
        'Create an upload resource (IETF draft "Resumable Uploads for HTTP")',
        tag="ietf",
        description="The body is the file's first bytes (or all of it, `Upload-Complete: ?1`); "
        "a `104 Upload Resumption Supported` with `Location` comes first when the request "
        "names an interop version. `Content-Disposition` names the media, `Repr-Digest` "
        "(`sha-256`) is checked on completion.",
        parameters=(
            IETF_VERSION,
            IETF_COMPLETE,
            UPLOAD_LENGTH,
            IETF_DIGEST,
            _parameter("header", "Repr-Digest", "RFC 9530 `sha-256=:…:` of the whole file"),
            _parameter("header", "Content-Disposition", "`inline; filename=…`: the media's name"),
        ),
        request_content=ANY_BYTES,
        body_required=False,
        replies=(
            Reply(
                201,
                "The upload resource, at `Location`",
                headers=IETF_STATE,
                required=("Location", "Upload-Complete"),
            ),
            *IETF_FINISHED[1:],
        ),
        problems=(*IETF_WRITE_PROBLEMS, errors.TooManySessions),
    ),
    Route(
        "HEAD",
        ietf.UPLOAD,
        "ietf_offset",
        "The upload's offset, completeness, length and limits",
        tag="ietf",
        parameters=(IETF_ID, IETF_VERSION),
        replies=(
            Reply(
                204,
                "The upload",
                headers=IETF_STATE,
                required=("Upload-Offset", "Upload-Complete", "Cache-Control"),
            ),
        ),
        problems=(
            errors.NotFound,
            errors.SessionExpired,
            errors.InteropVersionUnsupported,
            *STORAGE,
        ),
    ),
    Route(
        "GET",
        ietf.UPLOAD,
        "ietf_offset_get",
        "As HEAD (the draft allows either)",
        tag="ietf",
        head=False,
        parameters=(IETF_ID, IETF_VERSION),
        replies=(
            Reply(
                204,
                "The upload",
                headers=IETF_STATE,
                required=("Upload-Offset", "Upload-Complete", "Cache-Control"),
            ),
        ),
        problems=(
            errors.NotFound,
            errors.SessionExpired,
            errors.InteropVersionUnsupported,
            *STORAGE,
        ),
    ),
    Route(
        "PATCH",
        ietf.UPLOAD,
        "ietf_append",
        "Append bytes at the upload's offset (`application/partial-upload`)",
        tag="ietf",
        description="Cut into parts as it streams, as a tus PATCH. `Upload-Complete: ?1` ends "
        "the file: the answer is then the media.",
        parameters=(
            IETF_ID,
            IETF_VERSION,
            IETF_COMPLETE,
            _parameter(
                "header",
                "Upload-Offset",
                "Where the body starts",
                {"type": "integer", "minimum": 0},
                required=True,
            ),
            UPLOAD_LENGTH,
            IETF_DIGEST,
        ),
        request_content={ietf.PARTIAL_UPLOAD: {"schema": BINARY}},
        body_required=False,
        replies=(
            Reply(
                204, "Appended", headers=IETF_STATE, required=("Upload-Offset", "Upload-Complete")
            ),
            *IETF_FINISHED,
        ),
        problems=IETF_WRITE_PROBLEMS,
    ),
    Route(
        "DELETE",
        ietf.UPLOAD,
        "ietf_cancel",
        "Cancel an upload: its bytes are removed (a finished upload's media stays)",
        tag="ietf",
        parameters=(IETF_ID, IETF_VERSION),
        replies=(Reply(204, "Cancelled"),),
        problems=(
            errors.NotFound,
            errors.UploadSuperseded,
            errors.UploadLocked,
            errors.SessionNotOpen,
            errors.SessionExpired,
            errors.InteropVersionUnsupported,
            *STORAGE,
        ),
    ),
)

REGISTRY: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/v1/media/upload/initiate",
        "initiate_upload",
        "Start an upload session",
        tag="uploads",
        replies=(
            Reply(
                201, "The session, with the chunk size chosen", SessionCreated, links=SESSION_LINKS
            ),
        ),
        problems=(
            errors.BadRequest,
            MALFORMED_BODY,
            errors.BodyReadTimeout,
            BODY_TOO_LARGE,
            errors.FileTooLarge,
            errors.TooManySessions,
            *HOOKS,
            *STORAGE,
        ),
        request_model=InitiateRequest,
    ),
    Route(
        "POST",
        "/api/v1/media/upload/{session_id}/chunk/{chunk_number}",
        "put_chunk",
        "Send one chunk (again: it replaces the one stored)",
        tag="uploads",
        description="All chunks but the last are exactly `chunk_size` bytes. `Content-Length`, "
        "when sent, must equal the chunk's length. A digest mismatch keeps nothing of the chunk.",
        parameters=(
            SESSION_ID,
            CHUNK_NUMBER,
            _parameter(
                "header",
                "Content-MD5",
                "Base64 MD5 of the chunk, verified",
                {"type": "string", "pattern": "^[A-Za-z0-9+/]{22}==$"},
            ),
            _parameter(
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
            MALFORMED_BODY,
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
    ),
    Route(
        "GET",
        "/api/v1/media/upload/{session_id}",
        "upload_status",
        "What a client needs to resume: the chunks stored",
        tag="uploads",
        parameters=(SESSION_ID,),
        replies=(Reply(200, "The session", SessionStatusAnswer),),
        problems=(errors.NotFound,),
    ),
    Route(
        "DELETE",
        "/api/v1/media/upload/{session_id}",
        "abort_upload",
        "Abort a session: its chunks are removed",
        tag="uploads",
        parameters=(SESSION_ID,),
        replies=(Reply(204, "Aborted"),),
        problems=(errors.NotFound, errors.SessionNotOpen, errors.WrongProtocol, *STORAGE),
    ),
    Route(
        "POST",
        "/api/v1/media/upload/{session_id}/complete",
        "complete_upload",
        "Assemble the chunks into a media (again: the same media)",
        tag="uploads",
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
            *STORAGE,
        ),
    ),
    Route(
        "GET",
        "/api/v1/media",
        "list_media",
        "The caller's media, newest first, paged",
        parameters=(
            _parameter(
                "query",
                "limit",
                "Page size",
                {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
            ),
            _parameter("query", "cursor", "`next_cursor` of the page before", {"type": "string"}),
        ),
        replies=(Reply(200, "A page", MediaPage),),
        problems=(errors.BadRequest,),
    ),
    Route(
        "GET",
        "/api/v1/media/info/{media_id}",
        "media_info",
        "One media",
        parameters=(MEDIA_ID,),
        replies=(Reply(200, "The media", MediaInfo),),
        problems=(errors.NotFound,),
    ),
    Route(
        "DELETE",
        "/api/v1/media/delete/{media_id}",
        "delete_media",
        "Delete a media: its object or file and its record",
        description="A finalizing media is deleted with its upload: its parts are dropped.",
        parameters=(MEDIA_ID,),
        replies=(Reply(204, "Deleted"),),
        problems=(errors.NotFound, errors.SessionNotOpen, *STORAGE),
    ),
    Route(
        "GET",
        "/api/v1/media/stream/{media_id}",
        "stream_media",
        "The media's bytes (local) or a redirect to them (S3, CDN)",
        description="RFC 9110 ranges and conditionals. Open with the owner's bearer token, "
        "or with the signed `stream_url` (`expires` and `signature`) and no header at all.",
        auth="bearer-or-link",
        parameters=(
            MEDIA_ID,
            _parameter("query", "expires", "Of a signed stream link", {"type": "string"}),
            _parameter("query", "signature", "Of a signed stream link", {"type": "string"}),
            *READ_CONDITIONS,
        ),
        replies=STREAM_REPLIES,
        problems=(
            errors.Forbidden,
            errors.NotFound,
            PRECONDITION_FAILED,
            RANGE_NOT_SATISFIABLE,
            errors.MediaFailed,
            errors.MediaNotReady,
            errors.StorageUnavailable,
            errors.StorageRejected,
        ),
    ),
    Route(
        "OPTIONS",
        tus.COLLECTION,
        "tus_options",
        "The tus versions, extensions, largest size and checksum algorithms",
        tag="tus",
        description=TUS_OPTIONS_DESCRIPTION,
        auth=None,
        replies=(TUS_OPTIONS_REPLY,),
        problems=(CORS_ORIGIN_NOT_ALLOWED,),
    ),
    Route(
        "POST",
        tus.COLLECTION,
        "tus_create",
        "Create a tus upload (creation, creation-with-upload, concatenation)",
        tag="tus",
        description="A body (`application/offset+octet-stream`) is the upload's first bytes; "
        "if they fail, the upload is made all the same and `Upload-Offset` says what was kept.",
        parameters=(*TUS_CREATION_HEADERS, UPLOAD_CHECKSUM),
        request_content=OFFSET_OCTET_STREAM,
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
            MALFORMED_BODY,
            errors.NotFound,
            errors.SessionExpired,
            errors.ProtocolVersionUnsupported,
            errors.FileTooLarge,
            errors.TooManySessions,
            *HOOKS,
            errors.PartialTaken,
            errors.UnsupportedMediaType,
            errors.ChecksumAlgorithmUnsupported,
            errors.ChecksumMismatch,
            *STORAGE,
        ),
    ),
    Route(
        "OPTIONS",
        tus.UPLOAD,
        "tus_upload_options",
        "As OPTIONS on the collection",
        tag="tus",
        description=TUS_OPTIONS_DESCRIPTION,
        auth=None,
        parameters=(UPLOAD_ID,),
        replies=(TUS_OPTIONS_REPLY,),
        problems=(CORS_ORIGIN_NOT_ALLOWED,),
    ),
    Route(
        "GET",
        tus.UPLOAD,
        "tus_download",
        "A finished upload's file, as `stream_media` serves its media",
        tag="tus",
        description="Ranges, conditionals, a redirect to S3 or the CDN, as `stream_media`; "
        "with the owner's bearer token (no `Tus-Resumable` needed). An unfinished upload is "
        "`409 upload-incomplete`. A page's `<video>` cannot send the token: give it the "
        "media info's signed `stream_url` instead.",
        # HEAD on this path is tus's offset retrieval.
        head=False,
        parameters=(
            UPLOAD_ID,
            *READ_CONDITIONS,
        ),
        replies=STREAM_REPLIES,
        problems=(
            errors.NotFound,
            errors.UploadIncomplete,
            errors.SessionExpired,
            errors.UploadFailed,
            PRECONDITION_FAILED,
            RANGE_NOT_SATISFIABLE,
            errors.MediaFailed,
            errors.MediaNotReady,
            *STORAGE,
        ),
    ),
    Route(
        "HEAD",
        tus.UPLOAD,
        "tus_status",
        "The upload's offset, length and metadata",
        tag="tus",
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
    ),
    Route(
        "PATCH",
        tus.UPLOAD,
        "tus_patch",
        "Send bytes at the upload's offset",
        tag="tus",
        description="Cut at part boundaries as it streams; with `Upload-Checksum`, nothing of a "
        "PATCH that fails is kept. The last byte completes the upload into a media."
        + OVERRIDE.format(verb="PATCH"),
        parameters=(
            UPLOAD_ID,
            TUS_RESUMABLE,
            _parameter(
                "header",
                "Upload-Offset",
                "Where the body starts: the offset HEAD answers",
                {"type": "integer", "minimum": 0},
                required=True,
            ),
            UPLOAD_CHECKSUM,
            {**UPLOAD_LENGTH, "description": "A deferred length, once"},
        ),
        request_content=OFFSET_OCTET_STREAM,
        answer_headers=TUS_ANSWER,
        replies=(Reply(204, "Kept", headers=TUS_PROGRESS, required=("Upload-Offset",)),),
        problems=(
            errors.BadRequest,
            MALFORMED_BODY,
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
            *STORAGE,
        ),
    ),
    Route(
        "DELETE",
        tus.UPLOAD,
        "tus_terminate",
        "Terminate an upload: its bytes are removed",
        tag="tus",
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
    ),
    *IETF_ROUTES,
    Route(
        "GET",
        OPENAPI_PATH,
        "openapi",
        "This document",
        tag="documentation",
        auth=None,
        replies=(
            Reply(200, "OpenAPI 3.1", content={"application/json": {"schema": {"type": "object"}}}),
        ),
    ),
    Route(
        "GET",
        api_docs.PAGE,
        "docs_page",
        "This document, rendered (Swagger UI)",
        tag="documentation",
        auth=None,
        replies=(Reply(200, "An HTML page", content={"text/html": {"schema": {}}}),),
    ),
    Route(
        "GET",
        api_docs.PAGE + "/{asset}",
        "docs_asset",
        "A script or stylesheet of the rendered document",
        tag="documentation",
        auth=None,
        parameters=(_parameter("path", "asset", "File name", {"enum": sorted(api_docs.ASSETS)}),),
        replies=(
            Reply(
                200,
                "The file",
                content={"text/javascript": {"schema": {}}, "text/css": {"schema": {}}},
            ),
        ),
        problems=(errors.NotFound,),
    ),
)


def document(max_upload_size: int) -> dict[str, Any]:
    """The OpenAPI document of a server taking files of up to `max_upload_size` bytes
    (a fresh copy: callers may change theirs)."""
    return copy.deepcopy(_build(max_upload_size))


@functools.lru_cache(maxsize=4)
def _build(max_upload_size: int) -> dict[str, Any]:
    keyed, definitions = models_json_schema(_models(), ref_template=SCHEMA_REF)
    refs: dict[Any, dict[str, Any]] = {model: schema for (model, _), schema in keyed.items()}
    schemas = definitions.get("$defs", {})
    # A larger declared size is refused (413): this server's setting is part of its contract.
    schemas[InitiateRequest.__name__]["properties"]["size"]["maximum"] = max_upload_size
    paths: dict[str, dict[str, Any]] = {}
    for route in REGISTRY:
        operation = _operation(route, refs, max_upload_size)
        if route.method == "HEAD":
            operation = _without_bodies(operation)
        paths.setdefault(route.path, {})[route.method.lower()] = operation
        if route.method == "GET" and route.head:
            head = _without_bodies(operation)
            head["operationId"] = operation["operationId"] + "_head"
            paths[route.path]["head"] = head
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mediagate",
            "version": version("mediagate"),
            "description": "Chunked, resumable media uploads into S3 multipart parts, "
            "with local-disk fallback and Range serving. Errors are "
            "`application/problem+json` (RFC 9457).",
        },
        "tags": [
            {"name": "uploads", "description": "Chunked, resumable uploads (native API)"},
            {"name": "media", "description": "Uploaded media: info, list, stream, delete"},
            {"name": "tus", "description": "tus 1.0 resumable uploads, on the same engine"},
            {
                "name": "ietf",
                "description": "IETF draft resumable uploads (interop 6 and 8), on the same engine",
            },
            {"name": "documentation", "description": "This document"},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "HS256 JWT whose `sub` is the user id (`mediagate token USER`)",
                }
            },
        },
        "security": [{"bearer": []}],
    }


def _models() -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    found: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ProblemDetails, "serialization")]
    for route in REGISTRY:
        if route.request_model is not None:
            found.append((route.request_model, "validation"))
        found += [(reply.model, "serialization") for reply in route.replies if reply.model]
    return list(dict.fromkeys(found))


def _operation(
    route: Route, refs: dict[type[BaseModel], dict[str, Any]], max_upload_size: int
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
    }
    if route.description:
        operation["description"] = route.description
    if route.parameters:
        operation["parameters"] = [_limited(p, max_upload_size) for p in route.parameters]
    if route.request_model is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[route.request_model]}},
        }
    elif route.request_content is not None:
        operation["requestBody"] = {
            "required": route.body_required,
            "content": route.request_content,
        }
    responses: dict[str, Any] = {}
    for reply in route.replies:
        required = (*reply.required, *route.answer_headers)
        answer: dict[str, Any] = {
            "description": reply.description,
            "headers": _headers(reply.headers, required=required),
        }
        if reply.model is not None:
            answer["content"] = {"application/json": {"schema": refs[reply.model]}}
        elif reply.content is not None:
            answer["content"] = reply.content
        if reply.links:
            answer["links"] = reply.links
        responses[str(reply.status)] = answer
    problems = [*route.problems, *ALWAYS]
    if route.auth is not None:
        problems += AUTHENTICATED
    for status, types in _by_status(problems).items():
        responses[str(status)] = _problem_answer(types, refs[ProblemDetails], route.answer_headers)
    operation["responses"] = dict(sorted(responses.items()))
    if route.auth is None:
        operation["security"] = []
    elif route.auth == "bearer-or-link":
        operation["security"] = [{"bearer": []}, {}]
    return operation


def _without_bodies(operation: dict[str, Any]) -> dict[str, Any]:
    """For HEAD: the answers without their bodies."""
    head = {key: value for key, value in operation.items() if key != "responses"}
    head["responses"] = {
        status: {key: value for key, value in answer.items() if key not in ("content", "links")}
        for status, answer in operation["responses"].items()
    }
    return head


def _limited(parameter: dict[str, Any], max_upload_size: int) -> dict[str, Any]:
    """A larger Upload-Length is refused (413), as a larger initiate `size` is."""
    if parameter["name"] != UPLOAD_LENGTH["name"]:
        return parameter
    return {**parameter, "schema": {**parameter["schema"], "maximum": max_upload_size}}


def _headers(names: Iterable[str], *, required: Iterable[str] = ()) -> dict[str, Any]:
    headers = {REQUEST_ID_HEADER: REQUEST_ID, **{name: RESPONSE_HEADERS[name] for name in names}}
    for name in required:
        headers[name] = {**RESPONSE_HEADERS[name], "required": True}
    return headers


def _by_status(
    problems: Iterable[type[errors.Problem] | ProblemType],
) -> dict[int, list[ProblemType]]:
    grouped: dict[int, list[ProblemType]] = {}
    for problem in problems:
        kind = problem if isinstance(problem, ProblemType) else ProblemType.of(problem)
        if kind not in grouped.setdefault(kind.status, []):
            grouped[kind.status].append(kind)
    return grouped


def _problem_answer(
    types: list[ProblemType], problem_schema: dict[str, Any], route_headers: Iterable[str]
) -> dict[str, Any]:
    headers = sorted({name for kind in types for name in PROBLEM_HEADERS.get(kind.code, ())})
    headers += [name for name in route_headers if name not in headers]
    lines = [f"`{kind.code}`: {kind.title}" for kind in types]
    return {
        "description": "; ".join(lines),
        "headers": _headers(headers),
        "content": {
            "application/problem+json": {
                "schema": {
                    "allOf": [
                        problem_schema,
                        {
                            "properties": {
                                "type": {
                                    "enum": [
                                        kind.type_uri or PROBLEM_TYPE_BASE + kind.code
                                        for kind in types
                                    ]
                                },
                                "status": {"const": types[0].status},
                            }
                        },
                    ]
                }
            }
        },
    }


@routes.get(OPENAPI_PATH)
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document(request.app[SETTINGS].max_upload_size))
