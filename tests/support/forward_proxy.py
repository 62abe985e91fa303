"""A forward HTTP proxy on loopback, as a company's egress proxy: absolute-form requests
(`GET http://host/path`) and CONNECT tunnels (for https), to hosts only it can reach.

`hosts` maps the names it serves to loopback addresses: the server under test is given
such a name as its S3 endpoint, so that without the proxy it cannot reach S3 at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

# A name for S3 that no resolver knows, only such a proxy (and the store tier's TLS
# certificate, so that https through the proxy can be checked).
EGRESS_NAME = "s3-egress"


class ForwardProxy:
    def __init__(self, hosts: dict[str, tuple[str, int]]) -> None:
        self._hosts = hosts
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # The first request line of each connection it carried, as the client sent it.
        self.carried: list[str] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, _, rest = head.partition(b"\r\n")
            method, target, version = request_line.decode("latin-1").split(" ")
            self.carried.append(f"{method} {target}")
            if method == "CONNECT":
                name, _, port = target.rpartition(":")
                upstream = await self._open(name, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                first = b""
            else:
                url = urlsplit(target)
                upstream = await self._open(url.hostname or "", url.port or 80)
                origin_form = url.path + (f"?{url.query}" if url.query else "")
                first = f"{method} {origin_form} {version}\r\n".encode("latin-1") + rest
            if upstream is None:
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            up_reader, up_writer = upstream
            up_writer.write(first)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _open(
        self, name: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        address = self._hosts.get(f"{name}:{port}")
        if address is None:
            return None
        return await asyncio.open_connection(*address)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes from `reader` to `writer` until either side closes. A connection kept alive
    carries its later requests as they are (absolute-form, which a server must take)."""
    try:
        while piece := await reader.read(64 * 1024):
            writer.write(piece)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(ConnectionError, RuntimeError):
            writer.write_eof()
