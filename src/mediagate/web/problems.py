"""Every error answer is `application/problem+json` (RFC 9457), never a traceback.

Every problem body is built here (`problem_body`), from a problem declared in errors.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from mediagate.errors import BodyTooLarge, MalformedBody, MethodNotAllowed, NotFound, Problem
from mediagate.web.access_log import logged_path

log = structlog.get_logger("mediagate.web")

PROBLEM_TYPE_BASE = "https://mediagate.dev/problems/"
PROBLEM_JSON = "application/problem+json"

# The errors aiohttp raises itself (its router, its body size limit), as declared problems.
HTTP_ERRORS: dict[int, type[Problem]] = {
    404: NotFound,
    405: MethodNotAllowed,
    413: BodyTooLarge,
}


def problem_type(kind: type[Problem]) -> str:
    """A problem's `type`: its registered URI, or mediagate's own from its code."""
    return kind.type_uri or PROBLEM_TYPE_BASE + kind.code


def problem_body(problem: Problem) -> bytes:
    """The problem's JSON, with the request's id when there is one."""
    body = {
        "type": problem_type(type(problem)),
        "title": problem.title,
        "status": problem.status,
        "detail": client_detail(problem),
        **problem.extra,
    }
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id:
        body["request_id"] = request_id
    return json.dumps(body).encode()


def from_problem(problem: Problem, *, headers: Mapping[str, str] | None = None) -> web.Response:
    """The answer to `problem`; `headers` add to those its class declares."""
    response = web.Response(
        status=problem.status,
        body=problem_body(problem),
        content_type=PROBLEM_JSON,
        headers={**problem.headers, **(headers or {})},
    )
    if problem.closes_connection:
        response.force_close()
    return response


def client_detail(problem: Problem) -> str:
    """The problem's detail, or for a server-side failure a generic one (the cause is logged)."""
    if problem.status < 500 or problem.public_detail:
        return problem.detail
    log.warning("request.problem", status=problem.status, code=problem.code, detail=problem.detail)
    return f"{problem.title}; the server's log has the cause under this request_id"


def from_http_exception(error: web.HTTPException) -> web.Response:
    kind = HTTP_ERRORS.get(error.status)
    if kind is None:
        # None other reaches a middleware: a handler raised one it should not have.
        log.error("request.unexpected_http_error", status=error.status, reason=error.reason)
        return from_problem(Problem("the server failed; see its log"))
    headers = {name: value for name, value in error.headers.items() if name == "Allow"}
    detail = error.text if error.text and not error.text.startswith(str(error.status)) else ""
    return from_problem(kind(detail or error.reason), headers=headers)


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return from_problem(problem)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return from_http_exception(error)
    except ConnectionResetError:
        raise
    except web.RequestPayloadError:
        # aiohttp could not decode the body it was handed (Content-Encoding, chunked
        # framing): the client's fault, and never a byte of it quoted back.
        return from_problem(
            MalformedBody(
                "the request body could not be decoded (Content-Encoding or chunked framing)"
            )
        )
    except Exception:
        log.exception("request.failed", path=logged_path(request.rel_url.raw_path))
        return from_problem(Problem("the server failed; see its log"))
