"""HTTP/1.1 written by hand over a loopback socket: split, stalled, cut or malformed on purpose."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiohttp.test_utils import TestClient


def request_head(
    method: str, path: str, headers: dict[str, str], *, content_length: int | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def form_body(
    boundary: str, *fields: tuple[str, bytes], part_headers: dict[str, str] | None = None
) -> bytes:
    """A multipart/form-data body with one file part per (name, bytes), closed properly."""
    body = b""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (part_headers or {}).items())
    for name, data in fields:
        body += (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{name}"; filename="{name}.bin"\r\n'
            f"Content-Type: application/octet-stream\r\n{extra}\r\n"
        ).encode()
        body += data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def new_boundary() -> str:
    return f"----mediagate{uuid.uuid4().hex}"


class RawConnection:
    """One client connection whose bytes the test writes piece by piece."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, client: TestClient) -> RawConnection:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        return cls(reader, writer)

    async def send(self, *pieces: bytes, pause: float = 0.02) -> None:
        """Each piece in its own TCP write, with a pause so that each arrives on its own."""
        for piece in pieces:
            self.writer.write(piece)
            await self.writer.drain()
            await asyncio.sleep(pause)

    async def answer(self, seconds: float = 10.0) -> tuple[int, dict[str, Any] | None]:
        """The status and JSON body of the next answer (raises TimeoutError if none comes)."""
        async with asyncio.timeout(seconds):
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionResetError("the server closed the connection without answering")
            status = int(status_line.split()[1])
            length = 0
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = await self.reader.readexactly(length) if length else b""
        return status, json.loads(body) if body else None

    def close(self) -> None:
        self.writer.transport.abort()
