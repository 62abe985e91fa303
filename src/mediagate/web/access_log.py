"""aiohttp's access log, one line per request, without the query string.

A stream link carries its own credentials (`?expires=…&signature=…`, see
core/links.py): logged whole, it would let whoever reads the log play the media
until the link expires. The path (with the media id) is enough to follow a request.
An upload grant in a path (web/direct.py, for Uppy) is a credential too: it is
logged as `[grant]`, its user being the line's `user_id`.

In JSON (production) a line is the event `http.request` with one field per fact, for
a log shipper to index; in a terminal it stays one line of text in the common log
format. Either way the bytes are the body bytes sent (web/sent_bytes.py).
"""

from __future__ import annotations

import logging
import re

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from mediagate.web.sent_bytes import body_bytes_sent

# The one path segment that is a credential: Uppy's endpoint, /api/v1/companion/grant/{grant}.
GRANT_IN_PATH = re.compile(r"(?<=^/api/v1/companion/grant/)[^/]+")

# The `access_log_format` given to aiohttp's runner: which of the two lines to write.
JSON_FIELDS = "json"
TEXT_LINE = "text"


class AccessLogger(AbstractAccessLogger):
    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._fields = log_format == JSON_FIELDS
        self._structured = structlog.get_logger(logger.name)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        sent = body_bytes_sent(request.method, response)
        if self._fields:
            # Bound by the request's middleware and web/auth.py, in this request's task.
            context = structlog.contextvars.get_contextvars()
            self._structured.info(
                "http.request",
                remote=request.remote,
                method=request.method,
                path=logged_path(request.rel_url.raw_path),
                status=response.status,
                bytes_sent=sent,
                duration_seconds=round(time, 6),
                request_id=context.get("request_id"),
                user_id=context.get("user_id"),
            )
            return
        version = request.version
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.6f',
            request.remote,
            request.method,
            logged_path(request.rel_url.raw_path),
            version.major,
            version.minor,
            response.status,
            sent,
            time,
        )


def logged_path(path: str) -> str:
    """`path` as a log may show it: without the credential some paths carry."""
    return GRANT_IN_PATH.sub("[grant]", path)
