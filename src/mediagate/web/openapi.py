"""The OpenAPI 3.1 document of the API, built from the code: a registry of the
routes (below) plus the pydantic models of bodies and answers (web/schemas.py)
and the problem types of core/errors.py. Nothing of it is written by hand as JSON.

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

from mediagate.core import errors
from mediagate.web import api_docs
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

    @classmethod
    def of(cls, problem: type[errors.Problem]) -> ProblemType:
        return cls(problem.status, problem.code, problem.title)


# Problems the web layer answers itself, not raised as core/errors.py classes.
SHUTTING_DOWN = ProblemType(503, "shutting-down", "Shutting down")  # web/request_gate.py
BODY_TOO_LARGE = ProblemType(413, "request-entity-too-large", "Request Entity Too Large")
PRECONDITION_FAILED = ProblemType(412, "precondition-failed", "Precondition Failed")
RANGE_NOT_SATISFIABLE = ProblemType(416, "range-not-satisfiable", "Range Not Satisfiable")

# Any request may meet these: a server going down, or a failure of its own.
ALWAYS = (SHUTTING_DOWN, ProblemType.of(errors.Problem))
AUTHENTICATED = (errors.Unauthorized,)
STORAGE = (errors.StorageUnavailable, errors.StorageRejected, errors.StorageFull)

# Headers each problem type's answer carries (core/errors.py `headers`).
PROBLEM_HEADERS = {
    SHUTTING_DOWN.code: ("Retry-After",),
    RANGE_NOT_SATISFIABLE.code: ("Content-Range",),
    **{
        problem.code: tuple(problem.headers)
        for problem in vars(errors).values()
        if isinstance(problem, type) and issubclass(problem, errors.Problem)
    },
}


@dataclass(frozen=True)
class Reply:
    """A success answer: JSON of `model`, or `content` as written, or no body."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    content: dict[str, Any] | None = None
    headers: tuple[str, ...] = ()
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
    # A signed stream link (`expires`, `signature`) may stand in for the bearer token.
    auth: Literal["bearer", "bearer-or-link"] | None = "bearer"
    description: str = ""
    # aiohttp answers HEAD on a GET route with the GET's status and headers.
    head: bool = True
    tag: str = "media"


def _parameter(
    where: Literal["path", "query", "header"],
    name: str,
    description: str,
    schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
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
        "description": "A presigned S3 GET, or the CDN URL",
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
    "Cache-Control": {"description": "`MEDIAGATE_CACHE_CONTROL`", "schema": {"type": "string"}},
}
STREAM_HEADERS = ("ETag", "Last-Modified", "Accept-Ranges", "Content-Disposition", "Cache-Control")

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
            BODY_TOO_LARGE,
            errors.FileTooLarge,
            errors.TooManySessions,
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
            errors.ChunkOutOfRange,
            errors.ChunkLengthMismatch,
            errors.ChunkIncomplete,
            errors.NotFound,
            errors.SessionNotOpen,
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
        problems=(errors.NotFound, errors.SessionNotOpen, *STORAGE),
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
            errors.SessionExpired,
            errors.FileDigestMismatch,
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
        parameters=(MEDIA_ID,),
        replies=(Reply(204, "Deleted"),),
        problems=(errors.NotFound, errors.MediaNotReady, *STORAGE),
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
        ),
        replies=(
            Reply(200, "The whole file", content=ANY_BYTES, headers=STREAM_HEADERS),
            Reply(
                206,
                "The ranges asked for (several: `multipart/byteranges`)",
                content=ANY_BYTES,
                headers=(*STREAM_HEADERS, "Content-Range"),
            ),
            Reply(302, "To a presigned S3 GET or the CDN", headers=("Location", "Cache-Control")),
            Reply(304, "Not modified", headers=("ETag", "Last-Modified", "Cache-Control")),
        ),
        problems=(
            errors.Forbidden,
            errors.NotFound,
            PRECONDITION_FAILED,
            RANGE_NOT_SATISFIABLE,
            errors.MediaNotReady,
            errors.StorageUnavailable,
            errors.StorageRejected,
        ),
    ),
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
        operation = _operation(route, refs)
        paths.setdefault(route.path, {})[route.method.lower()] = operation
        if route.method == "GET" and route.head:
            paths[route.path]["head"] = _head(operation)
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


def _operation(route: Route, refs: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
    }
    if route.description:
        operation["description"] = route.description
    if route.parameters:
        operation["parameters"] = list(route.parameters)
    if route.request_model is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[route.request_model]}},
        }
    elif route.request_content is not None:
        operation["requestBody"] = {"required": True, "content": route.request_content}
    responses: dict[str, Any] = {}
    for reply in route.replies:
        answer: dict[str, Any] = {
            "description": reply.description,
            "headers": _headers(reply.headers),
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
        responses[str(status)] = _problem_answer(types, refs[ProblemDetails])
    operation["responses"] = dict(sorted(responses.items()))
    if route.auth is None:
        operation["security"] = []
    elif route.auth == "bearer-or-link":
        operation["security"] = [{"bearer": []}, {}]
    return operation


def _head(get: dict[str, Any]) -> dict[str, Any]:
    """HEAD: the GET's answers without their bodies."""
    head = {key: value for key, value in get.items() if key != "responses"}
    head["operationId"] = get["operationId"] + "_head"
    head["responses"] = {
        status: {key: value for key, value in answer.items() if key not in ("content", "links")}
        for status, answer in get["responses"].items()
    }
    return head


def _headers(names: Iterable[str]) -> dict[str, Any]:
    return {REQUEST_ID_HEADER: REQUEST_ID, **{name: RESPONSE_HEADERS[name] for name in names}}


def _by_status(
    problems: Iterable[type[errors.Problem] | ProblemType],
) -> dict[int, list[ProblemType]]:
    grouped: dict[int, list[ProblemType]] = {}
    for problem in problems:
        kind = problem if isinstance(problem, ProblemType) else ProblemType.of(problem)
        if kind not in grouped.setdefault(kind.status, []):
            grouped[kind.status].append(kind)
    return grouped


def _problem_answer(types: list[ProblemType], problem_schema: dict[str, Any]) -> dict[str, Any]:
    headers = sorted({name for kind in types for name in PROBLEM_HEADERS.get(kind.code, ())})
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
                                "type": {"enum": [PROBLEM_TYPE_BASE + kind.code for kind in types]},
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
