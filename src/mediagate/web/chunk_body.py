"""Where a chunk's bytes come from: the raw body, or the one file field of a form.

Browsers send FormData as `multipart/form-data`; its file part is read
piecewise like a raw body, so neither form ever sits whole in memory.

aiohttp's `BodyPartReader.read_chunk(n)` is only safe to call with one size
all along: it returns the piece read by the *previous* call (so more than `n`
when `n` shrinks), and it asserts that `n` exceeds the boundary's length. The
file part is therefore always read in READ_SIZE pieces and handed out in
whatever sizes the chunk stream asks for.

Every wait for the client's bytes is bounded by MEDIAGATE_BODY_READ_TIMEOUT
(web/body_reads.py), so a body that stalls half-way frees its chunk instead of
holding it.
"""

from __future__ import annotations

import asyncio
from typing import TypeGuard

from aiohttp import BodyPartReader, MultipartReader, http_exceptions, web
from multidict import CIMultiDictProxy

from mediagate.core.chunk_stream import ReadSource
from mediagate.errors import BadRequest
from mediagate.web.body_reads import request_body, timed_out, within
from mediagate.web.keys import SETTINGS

FILE_FIELDS = {"file", "chunk", "data"}
READ_SIZE = 64 * 1024
# Encodings that leave the bytes as they are; base64 or quoted-printable parts
# (and compressed ones) would be stored encoded.
PLAIN_TRANSFER_ENCODINGS = {"binary", "8bit", "7bit"}
# What aiohttp's multipart reader raises for a form it cannot read: bad framing
# (ValueError, AssertionError), or a part's header it refuses, such as a name
# holding a control character (InvalidHeader, from its HTTP header parser).
MALFORMED = (ValueError, AssertionError, http_exceptions.BadHttpMessage)


async def chunk_source(request: web.Request) -> tuple[ReadSource, int | None]:
    """A reader of the chunk's bytes, and their length if the request declares it."""
    seconds = request.app[SETTINGS].body_read_timeout
    if request.content_type != "multipart/form-data":
        return request_body(request), request.content_length
    try:
        async with asyncio.timeout(seconds):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if _is_file(part):
                    _check_plain(part.headers)
                    return FormFilePart(reader, part, seconds).read, None
                await part.release()
    except TimeoutError:
        raise timed_out(seconds) from None
    except MALFORMED:
        raise _malformed() from None
    raise BadRequest("the multipart body has no file field")


class FormFilePart:
    """The file part of a form as a `ReadSource`: any read size, any split of the TCP bytes.

    Its end is only reported once the rest of the form has been read: a second
    file field or a missing closing boundary is the client's mistake, found
    before the chunk stream hands its last piece on (and so nothing is kept).
    """

    def __init__(self, reader: MultipartReader, part: BodyPartReader, seconds: float) -> None:
        self._reader = reader
        self._part = part
        self._seconds = seconds
        self._pending = b""

    async def read(self, n: int) -> bytes:
        try:
            while not self._pending:
                if self._part.at_eof():
                    await within(self._seconds, self._read_rest_of_form())
                    return b""
                self._pending = await within(self._seconds, self._part.read_chunk(READ_SIZE))
        except MALFORMED:
            raise _malformed() from None
        if n >= len(self._pending):  # the usual case: handed on as it is, no copy
            piece, self._pending = self._pending, b""
        else:
            piece, self._pending = self._pending[:n], self._pending[n:]
        return piece

    async def _read_rest_of_form(self) -> None:
        while (part := await self._reader.next()) is not None:
            if _is_file(part):
                raise BadRequest("the multipart body has more than one file field")
            await part.release()


def _is_file(part: MultipartReader | BodyPartReader) -> TypeGuard[BodyPartReader]:
    return isinstance(part, BodyPartReader) and (
        part.filename is not None or part.name in FILE_FIELDS
    )


def _check_plain(headers: CIMultiDictProxy[str]) -> None:
    transfer = headers.get("Content-Transfer-Encoding", "binary").strip().lower()
    encoding = headers.get("Content-Encoding", "identity").strip().lower()
    if transfer not in PLAIN_TRANSFER_ENCODINGS or encoding != "identity":
        raise BadRequest("the file part must carry its bytes as they are (no transfer encoding)")


def _malformed() -> BadRequest:
    # Not aiohttp's own message: it names its internals (an assertion's text).
    return BadRequest(
        "the multipart body is malformed: each part must have valid headers and end "
        "with a CRLF and the boundary, and the body with the closing boundary"
    )
