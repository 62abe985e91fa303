"""Proxy mode: a player's Range request passed on to S3, the answer streamed back.

The object's bytes go from S3's response to the player's in pieces; nothing
holds more than one piece. Status and validators are S3's own, so seeking,
304s and 416s behave as they would against S3 directly.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import structlog
from aiohttp import web

from mediagate.models import Media
from mediagate.storage.base import ObjectRead, ReadConditions
from mediagate.web.problems import problem_response
from mediagate.web.ranges import parse_http_date
from mediagate.web.sent_bytes import CountedResponse

log = structlog.get_logger("mediagate.media")

PROBLEMS = {
    412: ("precondition-failed", "Precondition Failed", "the object does not match the conditions"),
    416: ("range-not-satisfiable", "Range Not Satisfiable", "the range is outside the object"),
}


# S3 ETags are hex digests: this one is never the object's, so If-Match fails (412).
NO_ETAG = '"mediagate-matches-no-object"'


def read_conditions(request: web.Request) -> ReadConditions:
    headers = request.headers
    range_ = headers.get("Range")
    if_range = headers.get("If-Range")
    if_match = headers.get("If-Match")
    if_none_match = headers.get("If-None-Match")
    # Text that is not ASCII is no range or S3 ETag (and botocore cannot sign
    # a header that was not UTF-8): answer as for local media, as RFC 9110 says.
    if if_range is not None and not if_range.isascii():
        range_ = if_range = None  # §13.1.5: it does not match, send the whole object
    if range_ is not None and not range_.isascii():
        range_ = if_range = None  # §14.2: an invalid Range is ignored
    if if_match is not None and not if_match.isascii():
        if_match = NO_ETAG  # §13.1.1: it matches no representation
    if if_none_match is not None and not if_none_match.isascii():
        if_none_match = None  # matches nothing, so the condition holds
    return ReadConditions(
        range=range_,
        if_range=if_range,
        if_match=if_match,
        if_none_match=if_none_match,
        if_modified_since=_date(headers.get("If-Modified-Since")),
        if_unmodified_since=_date(headers.get("If-Unmodified-Since")),
    )


def _date(value: str | None) -> datetime | None:
    """An HTTP-date; an invalid one is ignored, as RFC 9110 §13.1.3 and §13.1.4 say."""
    seconds = parse_http_date(value, now=time.time()) if value else None
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


async def relay(
    request: web.Request,
    answer: ObjectRead,
    media: Media,
    *,
    content_type: str,
    headers: Mapping[str, str],
    cache_control: str,
) -> web.StreamResponse:
    """Stream S3's `answer` to the player; `content_type` and `headers` (Content-Disposition,
    Content-Security-Policy) replace whatever the object was stored with."""
    if answer.status in PROBLEMS:
        code, title, detail = PROBLEMS[answer.status]
        return problem_response(answer.status, code, title, detail, headers=answer.headers)
    response = CountedResponse(status=answer.status, headers=answer.headers)
    if answer.status != 304:
        response.headers["Content-Type"] = content_type
        response.headers.update(headers)
    response.headers["Cache-Control"] = cache_control
    await response.prepare(request)
    if answer.body is not None:
        with contextlib.suppress(ConnectionResetError):
            try:
                async for piece in answer.body:
                    await response.write(piece)
            except ConnectionResetError:
                raise
            except Exception as error:
                # The status line is sent: no error answer can follow. Close the
                # connection, so the player sees a short body instead of waiting.
                log.warning("stream.relay_failed", media_id=media.id, error=str(error))
                if request.transport is not None:
                    request.transport.close()
                return response
            finally:
                await answer.body.aclose()
    await response.write_eof()
    return response
