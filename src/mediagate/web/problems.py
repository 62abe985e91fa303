"""Every error answer is `application/problem+json` (RFC 9457), never a traceback."""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from mediagate.errors import Problem

log = structlog.get_logger("mediagate.web")

PROBLEM_TYPE_BASE = "https://mediagate.dev/problems/"


def problem_response(
    status: int, code: str, title: str, detail: str, *, headers: Any = None, **extra: Any
) -> web.Response:
    body = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id:
        body["request_id"] = request_id
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/problem+json",
        headers=headers,
    )


def from_problem(problem: Problem) -> web.Response:
    response = problem_response(
        problem.status,
        problem.code,
        problem.title,
        client_detail(problem),
        headers=problem.headers,
        **problem.extra,
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
    code = error.reason.lower().replace(" ", "-")
    headers = {name: value for name, value in error.headers.items() if name == "Allow"}
    detail = error.text if error.text and not error.text.startswith(str(error.status)) else ""
    return problem_response(
        error.status, code, error.reason, detail or error.reason, headers=headers
    )


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
        return problem_response(
            400,
            "malformed-body",
            "Malformed body",
            "the request body could not be decoded (Content-Encoding or chunked framing)",
        )
    except Exception:
        log.exception("request.failed", path=request.path)
        return problem_response(
            500, "internal-error", "Internal error", "the server failed; see its log"
        )
