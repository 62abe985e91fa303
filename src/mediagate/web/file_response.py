"""Serve a local file to video players: RFC 9110 ranges and conditionals, sendfile body.

`send_file()` opens and fstat()s the file in one worker-thread hop, lets the pure
`ranges.decide()` choose the answer from the request and the file's size, and only then
acts: the headers go out, and the body follows with zero-copy sendfile, or with reads in
a worker thread where sendfile is switched off or missing.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import io
import logging
import os
import secrets
import stat
import time
from collections.abc import Mapping
from email.utils import formatdate
from pathlib import Path
from typing import Final, NamedTuple, TypeAlias, assert_never

from aiohttp import web

from mediagate import errors
from mediagate.web.problems import PROBLEM_JSON, problem_body
from mediagate.web.ranges import (
    ByteRange,
    Decision,
    EntityTag,
    NotModified,
    PreconditionFailed,
    RangeNotSatisfiable,
    SendRange,
    SendRanges,
    SendWhole,
    decide,
)
from mediagate.web.sent_bytes import CountedResponse

# aiohttp's own switch, so that one setting covers both servers: set AIOHTTP_NOSENDFILE=1
# where sendfile(2) misbehaves (some network or FUSE file systems). Tests flip this.
USE_SENDFILE: bool = not os.environ.get("AIOHTTP_NOSENDFILE")

# Reads when sendfile is not used: large enough that a worker-thread hop per read is
# cheap next to the copy, small enough that many concurrent downloads pin little memory.
READ_CHUNK_SIZE: Final = 256 * 1024

# O_NONBLOCK: a FIFO left at the path must fail the regular-file check rather than
# hang a worker thread in open(); reads of regular files ignore the flag.
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK

_FALLBACK_CONTENT_TYPE: Final = "application/octet-stream"

_log = logging.getLogger(__name__)
_closing: set[asyncio.Future[None]] = set()  # keeps pending background closes alive


class _FileShrankError(Exception):
    """The file ended before the bytes already promised in Content-Length."""


Segment: TypeAlias = bytes | ByteRange  # literal bytes, or a slice of the file


class _Plan(NamedTuple):
    status: int
    headers: dict[str, str]
    body: list[Segment]


async def send_file(
    request: web.Request,
    path: Path,
    *,
    content_type: str,
    etag: str,
    last_modified: float,
    cache_control: str,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Answer the GET or HEAD `request` with the file at `path`; return the sent response.

    `etag` is the entity-tag as it goes into the ETag header (`'"…"'` or `'W/"…"'`),
    `last_modified` is in seconds since the epoch, `headers` (optional) go out with the
    bytes (Content-Disposition, Content-Security-Policy). The response is sent and
    finished here; the handler just returns it.

    Raises FileNotFoundError, before anything is sent, when `path` is missing or not a
    regular file (answer 404); other OSErrors from opening it propagate. Raises
    ValueError for a malformed `etag`. A client that goes away mid-body is not an error:
    the response just ends.
    """
    validator = _parse_etag(etag)
    loop = asyncio.get_running_loop()
    file, size = await loop.run_in_executor(None, _open_regular_file, path)
    try:
        decision = decide(
            request.method,
            request.headers,
            size=size,
            etag=validator,
            last_modified=last_modified,
            now=time.time(),
        )
        plan = _plan_response(
            decision,
            size=size,
            content_type=_safe_content_type(content_type),
            validator_headers={
                "ETag": str(validator),
                "Last-Modified": _http_date(last_modified),
                "Cache-Control": cache_control,
            },
            headers=headers or {},
        )
        response = CountedResponse(status=plan.status, headers=plan.headers)
        try:
            await response.prepare(request)
            if request.method != "HEAD":
                await _write_body(request, response, file, plan.body)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away; there is no one left to answer
        except _FileShrankError:
            _log.warning("%s shrank while being sent; dropping the connection", path)
            _abort(request)
        return response
    finally:
        _close_without_blocking(file, loop)


# --- Decide ------------------------------------------------------------------------------


# The same files are asked for again and again: parse and format their validators once.
_parse_etag = functools.lru_cache(maxsize=1024)(EntityTag.parse)


@functools.lru_cache(maxsize=1024)
def _http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)


def _plan_response(
    decision: Decision,
    *,
    size: int,
    content_type: str,
    validator_headers: dict[str, str],
    headers: Mapping[str, str],
) -> _Plan:
    """Status, headers and body segments for a decision."""
    representation = {"Accept-Ranges": "bytes", **validator_headers, **headers}

    match decision:
        case SendWhole():
            headers = {**representation, "Content-Type": content_type}
            return _with_length(200, headers, [ByteRange(0, size)] if size else [])
        case SendRange(range=byte_range):
            headers = {
                **representation,
                "Content-Type": content_type,
                "Content-Range": byte_range.content_range(size),
            }
            return _with_length(206, headers, [byte_range])
        case SendRanges(ranges=byte_ranges):
            boundary = secrets.token_hex(16)
            headers = {
                **representation,
                "Content-Type": f"multipart/byteranges; boundary={boundary}",
            }
            body = multipart_body(byte_ranges, size, content_type, boundary)
            return _with_length(206, headers, body)
        case NotModified():
            # §15.4.5: the validators and caching fields a 200 would carry, no body.
            return _Plan(304, dict(validator_headers), [])
        case PreconditionFailed():
            return _problem(
                errors.PreconditionFailed("The file does not match the request's conditions.")
            )
        case RangeNotSatisfiable(size=complete_length):
            plan = _problem(errors.RangeNotSatisfiable(f"The file has {complete_length} bytes."))
            plan.headers["Content-Range"] = f"bytes */{complete_length}"  # §14.4
            return plan
        case _:
            assert_never(decision)


def _with_length(status: int, headers: dict[str, str], body: list[Segment]) -> _Plan:
    length = sum(len(s) if isinstance(s, bytes) else s.length for s in body)
    return _Plan(status, {**headers, "Content-Length": str(length)}, body)


def multipart_body(
    byte_ranges: tuple[ByteRange, ...], size: int, content_type: str, boundary: str
) -> list[Segment]:
    """The parts of a multipart/byteranges body (§14.6), each led by its own headers."""
    body: list[Segment] = []
    for index, byte_range in enumerate(byte_ranges):
        delimiter = f"--{boundary}" if index == 0 else f"\r\n--{boundary}"
        part_headers = (
            f"{delimiter}\r\nContent-Type: {content_type}\r\n"
            f"Content-Range: {byte_range.content_range(size)}\r\n\r\n"
        )
        body += [part_headers.encode("ascii"), byte_range]
    body.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    return body


def _problem(problem: errors.Problem) -> _Plan:
    """An RFC 9457 problem body, as every mediagate error is."""
    headers = {"Accept-Ranges": "bytes", "Content-Type": PROBLEM_JSON}
    return _with_length(problem.status, headers, [problem_body(problem)])


def _safe_content_type(content_type: str) -> str:
    """The stored type, unless it could not go into a header (it comes from uploaders)."""
    if content_type and content_type.isascii() and content_type.isprintable():
        return content_type
    return _FALLBACK_CONTENT_TYPE


# --- Do ----------------------------------------------------------------------------------


def _open_regular_file(path: Path) -> tuple[io.FileIO, int]:
    """Open `path` for reading and return it with its size. Blocks: run in a worker thread.

    fstat() on the open descriptor gives the size of exactly the file being sent.
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise FileNotFoundError(errno.ENOENT, "Not a regular file", str(path))
        return io.FileIO(fd, "rb"), status.st_size
    except BaseException:
        os.close(fd)
        raise


async def _write_body(
    request: web.Request, response: CountedResponse, file: io.FileIO, body: list[Segment]
) -> None:
    for segment in body:
        if isinstance(segment, ByteRange):
            await _send_range(request, response, file, segment)
        else:
            await response.write(segment)


async def _send_range(
    request: web.Request, response: CountedResponse, file: io.FileIO, byte_range: ByteRange
) -> None:
    if USE_SENDFILE:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Connection lost")
        sent = _sendfile_at_once(transport, file, byte_range)
        response.sent_with_sendfile(sent)
        if sent == byte_range.length:
            return
        byte_range = ByteRange(byte_range.start + sent, byte_range.stop)
        loop = asyncio.get_running_loop()
        # loop.sendfile() leaves the file's position after the last byte it sent, even
        # when it raises (the client went away): that is how much of the range went out.
        file.seek(byte_range.start)
        try:
            sent = await loop.sendfile(transport, file, byte_range.start, byte_range.length)
        except NotImplementedError:
            pass  # a loop without sendfile (uvloop): copy instead
        else:
            if sent < byte_range.length:
                raise _FileShrankError
            return
        finally:
            response.sent_with_sendfile(file.tell() - byte_range.start)
    await _copy_range(response, file, byte_range)


def _sendfile_at_once(transport: asyncio.Transport, file: io.FileIO, byte_range: ByteRange) -> int:
    """Send what the socket takes right now in one sendfile(2); return the bytes sent.

    loop.sendfile() pauses reading, waits a loop turn for the socket to be writable and
    registers it with the selector and back, which costs more than the copy itself for
    a 64 KiB range. When the transport has nothing queued, writing to its non-blocking
    socket now keeps the byte order and never waits for the client; a range that does
    not fit is finished by loop.sendfile(). (Like the sendfile(2) inside loop.sendfile(),
    it reads the disk on the loop thread when the pages are not cached.) Never on TLS,
    where the socket carries ciphertext.
    """
    sock = transport.get_extra_info("socket")
    if (
        sock is None
        or transport.get_extra_info("sslcontext") is not None
        or transport.get_write_buffer_size()
    ):
        return 0
    try:
        sent = os.sendfile(sock.fileno(), file.fileno(), byte_range.start, byte_range.length)
    except (BlockingIOError, InterruptedError):
        return 0
    except ConnectionError:
        raise  # the client went away: send_file() ends quietly
    except OSError:
        return 0  # e.g. a file system without sendfile: let loop.sendfile() choose
    if sent == 0:
        raise _FileShrankError  # sendfile(2) returns 0 only at the end of the file
    return sent


async def _copy_range(response: CountedResponse, file: io.FileIO, byte_range: ByteRange) -> None:
    loop = asyncio.get_running_loop()
    position = byte_range.start
    while position < byte_range.stop:
        count = min(READ_CHUNK_SIZE, byte_range.stop - position)
        chunk = await loop.run_in_executor(None, os.pread, file.fileno(), count, position)
        if not chunk:
            raise _FileShrankError
        await response.write(chunk)
        position += len(chunk)


def _abort(request: web.Request) -> None:
    """Close the connection: the client must not wait for bytes that will never come."""
    if request.transport is not None:
        request.transport.close()


def _close_without_blocking(file: io.FileIO, loop: asyncio.AbstractEventLoop) -> None:
    """Close `file` on the loop, unless closing it could block.

    close(2) of a read-only descriptor returns at once, except when it drops the last
    reference to a file that was deleted meanwhile: then the kernel frees the file's
    blocks, which for a large file takes a while. Only that case goes to a worker thread,
    which spares the common case a thread hop (aiohttp's FileResponse always makes one).
    """
    try:
        deleted = os.fstat(file.fileno()).st_nlink == 0
    except OSError:
        deleted = False
    if not deleted:
        file.close()
        return
    closing = loop.run_in_executor(None, file.close)
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)
