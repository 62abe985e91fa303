"""Requests in flight, counted so that shutdown can wait for them, and refused once it does."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler

from mediagate.errors import ShuttingDown
from mediagate.web.problems import from_problem


class RequestGate:
    def __init__(self) -> None:
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._draining:
            # A new request on a kept-alive connection.
            return from_problem(
                ShuttingDown("the server is stopping; send the request again shortly")
            )
        self._in_flight += 1
        self._idle.clear()
        try:
            return await handler(request)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def drain(self) -> None:
        """Refuse new requests from now on, and return once none is in flight."""
        self._draining = True
        await self._idle.wait()
