"""A TCP proxy on loopback that a test can cut and restore, to make S3 fail for real.

moto keeps its state behind it; while the proxy is cut, connections are
refused (the listener is closed) and open ones are aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable


class CuttableProxy:
    def __init__(self, target_host: str, target_port: int, *, scheme: str = "http") -> None:
        self._target = (target_host, target_port)
        self._scheme = scheme  # TLS passes through as it is: the proxy only forwards bytes
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self.port = 0
        self._cut_after: int | None = None
        self._call_after: tuple[int, Callable[[], object]] | None = None
        self._answers_flow = asyncio.Event()
        self._answers_flow.set()
        # Bytes that went from S3 back to the clients (what they read of it, and more
        # only as far as the socket buffers took).
        self.answer_bytes = 0
        # Set to a size, the kernel holds at most that much of the answers a client has not
        # read yet (else megabytes, by autotuning), so that answer_bytes counts reads.
        self.answer_send_buffer: int | None = None

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and abort the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def restore(self) -> None:
        self._cut_after = None
        await self.start()

    def hold_answers(self) -> None:
        """Keep S3's answers from reaching the client (requests still go through)."""
        self._answers_flow.clear()

    def release_answers(self) -> None:
        self._answers_flow.set()

    def cut_after(self, client_bytes: int) -> None:
        """Cut once this many more bytes have gone from a client towards S3."""
        self._cut_after = client_bytes

    def call_after(self, client_bytes: int, action: Callable[[], object]) -> None:
        """Call `action` once, when this many more bytes have gone from a client towards S3."""
        self._call_after = (client_bytes, action)

    def _count_towards_action(self, size: int) -> None:
        left, action = self._call_after
        if left > size:
            self._call_after = (left - size, action)
            return
        self._call_after = None
        action()

    async def _serve(self, client_reader, client_writer) -> None:
        if self.answer_send_buffer is not None:
            client_socket = client_writer.transport.get_extra_info("socket")
            client_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.answer_send_buffer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.transport.abort()
            return
        self._links |= {client_writer, upstream_writer}
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer, count=True),
            self._pipe(upstream_reader, client_writer, count=False),
            return_exceptions=True,
        )
        for writer in (client_writer, upstream_writer):
            self._links.discard(writer)
            writer.transport.abort()

    async def _pipe(self, reader, writer, *, count: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(64 * 1024):
                if count and self._call_after is not None:
                    self._count_towards_action(len(data))
                if count and self._cut_after is not None:
                    self._cut_after -= len(data)
                    if self._cut_after <= 0:
                        await self.cut()
                        return
                if not count:
                    await self._answers_flow.wait()
                    self.answer_bytes += len(data)
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.write_eof()
