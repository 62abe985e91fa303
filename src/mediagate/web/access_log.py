"""aiohttp's access log, one line per request, without the query string.

A stream link carries its own credentials (`?expires=…&signature=…`, see
core/links.py): logged whole, it would let whoever reads the log play the media
until the link expires. The path (with the media id) is enough to follow a request.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        version = request.version
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.6f',
            request.remote,
            request.method,
            request.rel_url.raw_path,
            version.major,
            version.minor,
            response.status,
            response.body_length,
            time,
        )
