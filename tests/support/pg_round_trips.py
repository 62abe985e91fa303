"""A TCP proxy in front of PostgreSQL that records what the client asks, one entry per
round trip: the text of each simple query (BEGIN, COMMIT, the pool's empty check) and of
each extended-protocol statement (Parse … Sync).

Connect through it with `sslmode=disable&gssencmode=disable`, so that after the
untyped startup message every message from the client is typed: one type byte, a
4-byte length that counts itself, the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

SIMPLE_QUERY, PARSE, SYNC = b"Q", b"P", b"S"


class RoundTrips:
    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self.port = 0
        self.statements: list[str] = []

    def url(self, database_url: str) -> str:
        """`database_url` pointed at this proxy, without SSL or GSS negotiation."""
        rest = database_url.split(f":{self._target_port}/", 1)[1]
        return (
            f"postgresql://postgres@127.0.0.1:{self.port}/{rest}?sslmode=disable&gssencmode=disable"
        )

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        try:
            await asyncio.gather(
                self._requests(client_reader, server_writer),
                _pipe(server_reader, client_writer),
            )
        finally:
            client_writer.close()
            server_writer.close()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward the client's messages, each recorded before it leaves."""
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            (length,) = struct.unpack("!i", await reader.readexactly(4))
            writer.write(struct.pack("!i", length) + await reader.readexactly(length - 4))
            parsed = ""
            while True:
                kind = await reader.readexactly(1)
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                body = await reader.readexactly(length - 4)
                if kind == SIMPLE_QUERY:
                    self.statements.append(body.rstrip(b"\0").decode())
                elif kind == PARSE:
                    parsed = body.split(b"\0")[1].decode()  # after the statement's name
                elif kind == SYNC:
                    self.statements.append(parsed)
                    parsed = ""
                writer.write(kind + struct.pack("!i", length) + body)
                await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def round_trips(target_port: int) -> AsyncIterator[RoundTrips]:
    proxy = RoundTrips(target_port)
    server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    async with server:
        yield proxy
