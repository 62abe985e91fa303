"""HTTP/1.1 written by hand over a loopback socket: split, stalled, cut or malformed on purpose."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiohttp.test_utils import TestClient

CHUNK = bytes(range(256)) * 1024  # 256 KiB: one chunk, the whole file, sent in PIECES
PIECES = 4


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


async def raw_get(api, path: str, header_lines: bytes) -> tuple[int, bytes]:
    """A GET with header bytes no HTTP client library would send (not UTF-8)."""
    reader, writer = await asyncio.open_connection(api.client.host, api.client.port)
    writer.write(
        b"GET "
        + path.encode()
        + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + header_lines
        + b"\r\n"
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def stall_chunk(api: Any, session_id: str, data: bytes, number: int = 0) -> RawConnection:
    """Headers and half of the chunk's body, then silence (the connection stays open);
    `api` is a test's `support.api.Api`."""
    connection = await RawConnection.open(api.client)
    head = request_head(
        "POST",
        f"/api/v1/media/upload/{session_id}/chunk/{number}",
        {**api.headers, "Content-Type": "application/octet-stream"},
        content_length=len(data),
    )
    await connection.send(head, data[: len(data) // 2], pause=0.2)
    return connection


async def read_answer(reader: asyncio.StreamReader, seconds: float = 15) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 answer that declares its Content-Length."""
    async with asyncio.timeout(seconds):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in header_lines if line)
        body = await reader.readexactly(int(headers.get("Content-Length", "0")))
    return int(status_line.split()[1]), body
