"""What aiohttp's HTTP parser refuses is answered as problem+json, never echoed back.

Against `mediagate serve` as a real process, with raw sockets: these requests are
not ones an HTTP client library would send.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from support.server_process import ServerProcess

TOKEN = "Bearer eyJSECRET.TOKEN.never-to-be-echoed"

MALFORMED = {
    "header over 8 KiB": (
        f"GET /api/v1/media HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN}{'a' * 9000}\r\n\r\n"
    ),
    "method that is no token": (
        f"G(T /api/v1/media HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN}\r\n\r\n"
    ),
    "Content-Length with Transfer-Encoding": (
        f"POST /api/v1/media/upload/initiate HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN}\r\n"
        "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"
    ),
    "control character in a header": (
        f"GET /api/v1/media HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN}\x01\r\n\r\n"
    ),
    "request line over 8 KiB": (f"GET /{'a' * 9000}?t={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n"),
}


@pytest.fixture
async def server(tmp_path: Path):
    process = ServerProcess(
        tmp_path / "data", {"MEDIAGATE_JWT_SECRET": "test-secret-with-enough-length-for-hs256"}
    )
    await process.start()
    yield process
    await process.stop()


async def send_raw(port: int, request: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request.encode("latin-1"))
    async with asyncio.timeout(10):
        answer = await reader.read()
    writer.close()
    return answer


async def test_parser_errors_are_problems_that_echo_nothing(server):
    for case, request in MALFORMED.items():
        answer = await send_raw(server.port, request)
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value for name, value in (h.split(": ", 1) for h in lines[1:])}
        assert lines[0].split()[1] == "400", case
        assert headers["content-type"] == "application/problem+json", case
        assert headers["x-content-type-options"] == "nosniff", case
        problem = json.loads(body)
        assert (problem["status"], problem["title"]) == (400, "Malformed request"), case
        assert problem["request_id"] == headers["x-request-id"], case
        assert b"SECRET" not in answer and b"aaaa" not in answer, case
