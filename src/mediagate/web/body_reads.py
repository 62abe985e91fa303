"""Every wait for a request body's bytes, bounded by MEDIAGATE_BODY_READ_TIMEOUT.

A body that stalls half-way (a client gone without closing, a network that
dropped it) would otherwise hold what its request holds (a chunk, a tus
upload) and its connection for ever. Handlers read bodies through here: the
raw body (`request_body`), or any other wait on the client's bytes
(`within`); a wait that runs out is `408 body-timeout`, and the connection is
closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import StreamReader, web

from mediagate.core.chunk_stream import ReadSource
from mediagate.errors import BodyReadTimeout
from mediagate.web.keys import SETTINGS

T = TypeVar("T")


def request_body(request: web.Request) -> ReadSource:
    """The request's raw body, each wait for its bytes bounded."""
    return raw_body(request.content, request.app[SETTINGS].body_read_timeout)


def raw_body(content: StreamReader, seconds: float) -> ReadSource:
    """`content`, failing with a 408 when the client sends nothing for `seconds`."""

    async def read(n: int) -> bytes:
        # Bytes already received need no timer: only a wait for the client is timed.
        if piece := content.read_nowait(n):
            return piece
        return await within(seconds, content.read(n))

    return read


async def within(seconds: float, waiting: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(seconds):
            return await waiting
    except TimeoutError:
        raise timed_out(seconds) from None


def timed_out(seconds: float) -> BodyReadTimeout:
    return BodyReadTimeout(f"no bytes of the body arrived for {seconds:g} s")
