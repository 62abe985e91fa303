"""Proxy mode: a player's Range request passed on to S3, the answer streamed back.

The object's bytes go from S3's response to the player's in pieces; nothing
holds more than one piece. S3 weighs the conditions (If-Match, If-None-Match,
the dates, If-Range) and its validators are the ones sent, so seeking and 304s
behave as they would against S3 directly. What the Range selects is decided
here, as for local files (`ranges.requested_ranges`, with the size from the
catalog): stores answer odd ranges their own way (RGW: a 416 without the size,
only the first of several ranges, a 416 for an invalid Range that RFC 9110 says
to ignore). S3 is asked for one well-formed range at a time; several become a
multipart/byteranges answer, read part by part.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import structlog
from aiohttp import web

from mediagate import errors
from mediagate.models import Media
from mediagate.storage.base import ObjectRead, ReadConditions
from mediagate.web.file_response import multipart_body
from mediagate.web.problems import from_problem
from mediagate.web.ranges import (
    ByteRange,
    RangeNotSatisfiable,
    SendRange,
    SendRanges,
    SendWhole,
    parse_http_date,
    requested_ranges,
)
from mediagate.web.sent_bytes import CountedResponse

log = structlog.get_logger("mediagate.media")

PROBLEMS = {
    412: errors.PreconditionFailed("the object does not match the conditions"),
    416: errors.RangeNotSatisfiable("the range is outside the object"),
}


# S3 ETags are hex digests: this one is never the object's, so If-Match fails (412).
NO_ETAG = '"mediagate-matches-no-object"'


@dataclass(frozen=True)
class ProxyRead:
    """What to ask S3 first, and the further ranges of a multipart/byteranges answer."""

    conditions: ReadConditions
    more_ranges: tuple[ByteRange, ...] = ()
    # The ranges of a multipart answer, the first included; empty for any other.
    all_ranges: tuple[ByteRange, ...] = ()


def proxy_read(request: web.Request, size: int) -> ProxyRead:
    """The player's request as S3 reads: its conditions, and its Range decided here for
    an object of `size` bytes (the catalog's) as the local path decides it."""
    conditions = read_conditions(request)
    if conditions.range is None:
        return ProxyRead(conditions)
    decision = requested_ranges(request.method, request.headers, size=size)
    match decision:
        case SendWhole():
            return ProxyRead(replace(conditions, range=None, if_range=None))
        case SendRange(range=byte_range):
            return ProxyRead(replace(conditions, range=_range_header(byte_range)))
        case SendRanges(ranges=byte_ranges):
            first = replace(conditions, range=_range_header(byte_ranges[0]))
            return ProxyRead(first, byte_ranges[1:], byte_ranges)
        case RangeNotSatisfiable():
            # A range every S3 finds unsatisfiable, so that S3 still weighs the
            # conditions and If-Range first; `relay` adds the size to its 416.
            return ProxyRead(replace(conditions, range=f"bytes={size}-"))


def _range_header(byte_range: ByteRange) -> str:
    return f"bytes={byte_range.start}-{byte_range.stop - 1}"


def read_conditions(request: web.Request) -> ReadConditions:
    headers = request.headers
    range_ = headers.get("Range") if len(headers.getall("Range", ())) == 1 else None
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


Fetch = Callable[[ReadConditions], Awaitable[ObjectRead]]


async def relay(
    request: web.Request,
    answer: ObjectRead,
    media: Media,
    *,
    read: ProxyRead,
    fetch: Fetch,
    content_type: str,
    headers: Mapping[str, str],
    cache_control: str,
) -> web.StreamResponse:
    """Stream S3's `answer` to `read` to the player; `content_type` and `headers`
    (Content-Disposition, Content-Security-Policy) replace whatever the object was
    stored with. `fetch` reads the further parts of a multipart answer."""
    if answer.status in PROBLEMS:
        problem_headers = dict(answer.headers)
        if answer.status == 416:
            problem_headers["Content-Range"] = f"bytes */{media.size}"  # §14.4
        return from_problem(PROBLEMS[answer.status], headers=problem_headers)
    multipart = answer.status == 206 and bool(read.more_ranges)
    response = CountedResponse(status=answer.status, headers=answer.headers)
    if answer.status != 304:
        response.headers["Content-Type"] = content_type
        response.headers.update(headers)
    response.headers["Cache-Control"] = cache_control
    parts: list[bytes | ByteRange] = []
    if multipart:
        boundary = secrets.token_hex(16)
        parts = multipart_body(read.all_ranges, media.size, content_type, boundary)
        del response.headers["Content-Range"]
        response.headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
        response.headers["Content-Length"] = str(
            sum(len(part) if isinstance(part, bytes) else part.length for part in parts)
        )
    await response.prepare(request)
    if answer.body is None:
        await response.write_eof()
        return response
    with contextlib.suppress(ConnectionResetError):
        try:
            if multipart:
                await _write_parts(response, answer, parts, fetch)
            else:
                await _write_body(response, answer)
        except ConnectionResetError:
            raise
        except Exception as error:
            # The status line is sent: no error answer can follow. Close the
            # connection, so the player sees a short body instead of waiting.
            log.warning("stream.relay_failed", media_id=media.id, error=str(error))
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
    return response


async def _write_body(response: web.StreamResponse, answer: ObjectRead) -> None:
    assert answer.body is not None
    try:
        async for piece in answer.body:
            await response.write(piece)
    finally:
        await answer.body.aclose()


async def _write_parts(
    response: web.StreamResponse,
    first: ObjectRead,
    parts: list[bytes | ByteRange],
    fetch: Fetch,
) -> None:
    """A multipart/byteranges body: the first range from `first`, each other one read
    from S3 on its turn, on condition that the object is still the one `first` was."""
    answer: ObjectRead | None = first
    try:
        for part in parts:
            if isinstance(part, bytes):
                await response.write(part)
                continue
            if answer is None:
                answer = await fetch(
                    ReadConditions(range=_range_header(part), if_match=first.headers["ETag"])
                )
            if answer.status != 206:
                raise RuntimeError(f"S3 answered {answer.status} for a further range")
            await _write_body(response, answer)
            answer = None
    finally:
        if answer is not None and answer.body is not None:
            await answer.body.aclose()
