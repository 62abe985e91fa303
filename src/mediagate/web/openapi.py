"""The OpenAPI 3.1 document of the API, built from the code: the operations each
handler module declares beside its handlers (web/operations.py, listed in web/api.py),
the pydantic models of bodies and answers (web/schemas.py) and the problems of
errors.py. Nothing of it is written by hand as JSON.

tests/test_openapi.py checks that every route the application registers under
/api/v1 is documented, and tests/test_fuzz.py fuzzes a live server with
schemathesis against the served document.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Mapping
from importlib.metadata import version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from mediagate import errors
from mediagate.web.operations import (
    ALWAYS,
    AUTHENTICATED,
    MAX_UPLOAD_SIZE,
    Operation,
    Operations,
)
from mediagate.web.problems import problem_type
from mediagate.web.request_context import REQUEST_ID_HEADER
from mediagate.web.schemas import ProblemDetails

SCHEMA_REF = "#/components/schemas/{model}"

Headers = Mapping[str, dict[str, Any]]

REQUEST_ID = {
    "description": "The request's id, also in a problem's `request_id` (a client may send one)",
    "schema": {"type": "string"},
}
# Response headers of several modules' answers; a module describes its own
# (`Operations(headers=...)`).
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
        "description": "A presigned S3 GET or the CDN URL (stream); the new upload's URL "
        "(tus, IETF)",
        "required": True,
        "schema": {"type": "string"},
    },
    "Content-Range": {
        "description": "`bytes first-last/size` (206), `bytes */size` (416)",
        "schema": {"type": "string", "pattern": "^bytes ([0-9]+-[0-9]+|\\*)/[0-9]+$"},
    },
    "Cache-Control": {
        "description": "`MEDIAGATE_CACHE_CONTROL` for bytes, `no-store` for a redirect or an "
        "upload's offset (tus, IETF)",
        "schema": {"type": "string"},
    },
    # An upload's progress, in tus and the IETF draft alike.
    "Upload-Offset": {
        "description": "The bytes of the upload kept so far",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "Upload-Length": {
        "description": "The upload's length, once known",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
}


def document(api: tuple[Operations, ...], max_upload_size: int) -> dict[str, Any]:
    """The OpenAPI document of the operations of `api`, on a server taking files of up
    to `max_upload_size` bytes (a fresh copy: callers may change theirs)."""
    return copy.deepcopy(_build(api, max_upload_size))


@functools.lru_cache(maxsize=4)
def _build(api: tuple[Operations, ...], max_upload_size: int) -> dict[str, Any]:
    operations = [operation for group in api for operation in group]
    keyed, definitions = models_json_schema(_models(operations), ref_template=SCHEMA_REF)
    refs: dict[Any, dict[str, Any]] = {model: schema for (model, _), schema in keyed.items()}
    headers = dict(RESPONSE_HEADERS)
    for group in api:
        assert not headers.keys() & group.headers.keys(), "a header described twice"
        headers |= group.headers
    paths: dict[str, dict[str, Any]] = {}
    for route in operations:
        operation = _operation(route, refs, headers)
        if route.method == "HEAD":
            operation = _without_bodies(operation)
        paths.setdefault(route.template, {})[route.method.lower()] = operation
        if route.method == "GET" and route.head:
            head = _without_bodies(operation)
            head["operationId"] = operation["operationId"] + "_head"
            paths[route.template]["head"] = head
    tags = {group.tag: group.description for group in reversed(api) if group.description}
    built = {
        "openapi": "3.1.0",
        "info": {
            "title": "mediagate",
            "version": version("mediagate"),
            "description": "Chunked, resumable media uploads into S3 multipart parts, "
            "with local-disk fallback and Range serving. Errors are "
            "`application/problem+json` (RFC 9457).",
        },
        "tags": [
            {"name": tag, "description": tags[tag]}
            for tag in dict.fromkeys(group.tag for group in api)
        ],
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
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
    # A larger size is refused (413): this server's setting is part of its contract.
    limited: dict[str, Any] = _limited(built, max_upload_size)
    return limited


def _limited(value: Any, max_upload_size: int) -> Any:
    """`value` with each `maximum` of MAX_UPLOAD_SIZE made the setting's number."""
    if isinstance(value, dict):
        return {
            key: max_upload_size
            if key == "maximum" and item == MAX_UPLOAD_SIZE
            else _limited(item, max_upload_size)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_limited(item, max_upload_size) for item in value]
    return value


def _models(operations: Iterable[Operation]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    found: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ProblemDetails, "serialization")]
    for route in operations:
        if route.request_model is not None:
            found.append((route.request_model, "validation"))
        found += [(reply.model, "serialization") for reply in route.replies if reply.model]
    return list(dict.fromkeys(found))


def _operation(
    route: Operation, refs: dict[type[BaseModel], dict[str, Any]], known: Headers
) -> dict[str, Any]:
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
        operation["requestBody"] = {
            "required": route.body_required,
            "content": route.request_content,
        }
    responses: dict[str, Any] = {}
    for reply in route.replies:
        required = (*reply.required, *route.answer_headers)
        answer: dict[str, Any] = {
            "description": reply.description,
            "headers": _headers(known, reply.headers, required=required),
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
        responses[str(status)] = _problem_answer(
            types, refs[ProblemDetails], route.answer_headers, known
        )
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


def _headers(
    known: Headers, names: Iterable[str], *, required: Iterable[str] = ()
) -> dict[str, Any]:
    headers = {REQUEST_ID_HEADER: REQUEST_ID, **{name: known[name] for name in names}}
    for name in required:
        headers[name] = {**known[name], "required": True}
    return headers


def _by_status(
    problems: Iterable[type[errors.Problem]],
) -> dict[int, list[type[errors.Problem]]]:
    grouped: dict[int, list[type[errors.Problem]]] = {}
    for kind in problems:
        if kind not in grouped.setdefault(kind.status, []):
            grouped[kind.status].append(kind)
    return grouped


def _problem_answer(
    types: list[type[errors.Problem]],
    problem_schema: dict[str, Any],
    route_headers: Iterable[str],
    known: Headers,
) -> dict[str, Any]:
    headers = sorted({name for kind in types for name in (*kind.headers, *kind.varying_headers)})
    headers += [name for name in route_headers if name not in headers]
    lines = [f"`{kind.code}`: {kind.title}" for kind in types]
    return {
        "description": "; ".join(lines),
        "headers": _headers(known, headers),
        "content": {
            "application/problem+json": {
                "schema": {
                    "allOf": [
                        problem_schema,
                        {
                            "properties": {
                                "type": {"enum": [problem_type(kind) for kind in types]},
                                "status": {"const": types[0].status},
                            }
                        },
                    ]
                }
            }
        },
    }
