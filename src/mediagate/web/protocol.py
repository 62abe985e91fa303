"""aiohttp's own error answers as problem+json, without the request's bytes.

What aiohttp's HTTP parser refuses (a header over 8190 bytes, a method that is no
token, Content-Length next to Transfer-Encoding, ...) it answers itself, before any
middleware runs: as text/plain that quotes the offending bytes, a bearer token
included, and it logs them too. An exception that escapes every middleware gets a
text/plain 500 from the same method. `AppRunner` serves the application with a
connection handler whose `handle_error` answers both as every mediagate error is
answered, and logs only the kind of error.
"""

from __future__ import annotations

import uuid

import structlog
from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from mediagate.errors import MalformedRequest, Problem
from mediagate.web.problems import from_problem
from mediagate.web.request_context import REQUEST_ID_HEADER
from mediagate.web.security_headers import SECURITY_HEADERS

log = structlog.get_logger("mediagate.web")

# Most specific first: the parser's exceptions subclass one another.
_PARSE_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "a request line or header field is longer than 8190 bytes"),
    (http_exceptions.BadHttpMethod, "the request method is not a valid HTTP method"),
    (http_exceptions.InvalidURLError, "the request target is not a valid URL"),
    (http_exceptions.BadStatusLine, "the request line is not valid HTTP/1.1"),
    (http_exceptions.InvalidHeader, "a header field is not valid HTTP/1.1"),
    (
        http_exceptions.PayloadEncodingError,
        "the body's framing (Content-Length, Transfer-Encoding, Content-Encoding) is invalid",
    ),
)


def _parse_error_detail(error: BaseException | None) -> str:
    for kind, detail in _PARSE_ERRORS:
        if isinstance(error, kind):
            return detail
    return "the request is not valid HTTP/1.1"


class ProblemRequestHandler(RequestHandler):
    """aiohttp's connection handler, with mediagate's error answers."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # As aiohttp does: a status line went out already, no answer can follow.
            raise ConnectionError("the response has begun; no error answer can follow")
        # A request that never parsed has no id from the request context yet.
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        request_id = request_id or uuid.uuid4().hex
        if status >= 500:
            # aiohttp's own 500 (an exception escaped every middleware) or 504 (a
            # TimeoutError escaped them): the server failed either way.
            log.error("request.failed", request_id=request_id, status=status, exc_info=exc)
            problem = Problem("the server failed; see its log", request_id=request_id)
        else:
            # The exception's text quotes the request's bytes: log its kind only.
            log.info(
                "request.unparsable",
                request_id=request_id,
                status=status,
                error=type(exc).__name__,
                remote=request.remote,
            )
            problem = MalformedRequest(_parse_error_detail(exc), request_id=request_id)
        response = from_problem(problem)
        response.headers[REQUEST_ID_HEADER] = request_id
        response.headers.update(SECURITY_HEADERS)
        response.force_close()
        return response


class _ProblemServer(web.Server):
    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """`web.AppRunner` whose connections answer parse errors with problem+json."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # Application._make_handler builds a plain Server and takes no class to use.
        server.__class__ = _ProblemServer
        return server
