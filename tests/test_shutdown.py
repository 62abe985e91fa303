"""`mediagate serve` as a real process: SIGTERM, and connections that never send a request.

SIGTERM lets a chunk in flight finish, then the server exits 0.

The chunk's body is sent in pieces with pauses and SIGTERM arrives between
them. The server must stop accepting connections at once, still read the
rest of the body, acknowledge the chunk, close the catalog and exit 0; a
restart on the same data directory must list the chunk as received.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mediagate import tokens
from support.api import JWT_SECRET
from support.raw_http import CHUNK, PIECES, read_answer
from support.server_process import ServerProcess

STOP_TIMEOUT = 15


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Any]:
    """Start `mediagate serve` on a fresh loopback port over `tmp_path / "data"`."""
    started: list[ServerProcess] = []

    async def start(**extra_env: str) -> ServerProcess:
        env = {
            "MEDIAGATE_JWT_SECRET": JWT_SECRET,
            "MEDIAGATE_HOST": "127.0.0.1",
            "MEDIAGATE_SHUTDOWN_TIMEOUT": "10",
            "USE_CLOUD_STORAGE": "false",
            **extra_env,
        }
        server = ServerProcess(tmp_path / "data", env)
        started.append(server)
        await server.start()
        return server

    yield start
    for server in started:
        await server.stop()


async def send_chunk_slowly_with_sigterm(
    server: ServerProcess, session_id: str, token: str
) -> tuple[int, bytes]:
    """POST the chunk in pieces, SIGTERM after the first; check what else the server does."""
    kept_alive = await asyncio.open_connection("127.0.0.1", server.port)
    healthz = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
    kept_alive[1].write(healthz)
    assert (await read_answer(kept_alive[0]))[0] == 200

    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = (
        f"POST /api/v1/media/upload/{session_id}/chunk/0 HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {len(CHUNK)}\r\n\r\n"
    )
    size = len(CHUNK) // PIECES
    pieces = [CHUNK[i : i + size] for i in range(0, len(CHUNK), size)]
    writer.write(head.encode() + pieces[0])
    await writer.drain()
    await asyncio.sleep(0.5)  # the handler is reading the body now

    server.process.send_signal(signal.SIGTERM)
    stopping = await server.logged("server.stopping")
    assert stopping["in_flight"] == 1, "SIGTERM came before the chunk's handler started"
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", server.port)
    kept_alive[1].write(healthz)
    refused, problem = await read_answer(kept_alive[0])
    assert (refused, json.loads(problem)["title"]) == (503, "Shutting down")
    kept_alive[1].close()

    for piece in pieces[1:]:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.2)
    answer = await read_answer(reader)
    writer.close()
    return answer


async def test_sigterm_lets_the_chunk_in_flight_finish_and_keeps_it(serve):
    token = tokens.issue(JWT_SECRET.encode(), "alice", 3600)
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        server = await serve()
        async with http.post(
            f"{server.base}/api/v1/media/upload/initiate",
            json={"filename": "slow.bin", "size": len(CHUNK)},
            headers=auth,
        ) as created:
            assert created.status == 201
            session = await created.json()
        assert session["total_chunks"] == 1

        status, body = await send_chunk_slowly_with_sigterm(server, session["session_id"], token)

        assert status == 200, body
        receipt = json.loads(body)
        assert receipt == {"chunk_number": 0, "size": len(CHUNK), "received_chunks": 1}
        assert await server.wait(STOP_TIMEOUT) == 0
        assert server.events.index("server.stopping") < server.events.index("server.stopped")

        restarted = await serve()
        async with http.get(
            f"{restarted.base}/api/v1/media/upload/{session['session_id']}", headers=auth
        ) as status:
            assert status.status == 200
            resumed = await status.json()
        assert (resumed["received"], resumed["state"]) == ([0], "open")
        assert resumed["bytes_received"] == len(CHUNK)
        assert await restarted.terminate() == 0


async def test_connections_that_never_finish_their_headers_are_closed(serve):
    server = await serve(MEDIAGATE_HEADER_TIMEOUT="0.5")
    silent = await asyncio.open_connection("127.0.0.1", server.port)
    partial = await asyncio.open_connection("127.0.0.1", server.port)
    partial[1].write(b"POST /api/v1/media/upload/initiate HTTP/1.1\r\nHost: 127.0")
    await partial[1].drain()
    async with asyncio.timeout(5):  # the default would keep them for over an hour
        assert await silent[0].read() == b""
        assert await partial[0].read() == b""
    for _, writer in (silent, partial):
        writer.close()


async def test_the_start_up_log_names_what_is_served_once_the_port_is_bound(serve):
    server = await serve(MEDIAGATE_CHUNK_SIZE="16MiB", MEDIAGATE_MAX_UPLOAD_SIZE="2GiB")
    started = await server.logged("server.started")
    assert server.events.index("server.listening") < server.events.index("server.started")
    assert started["page"] == f"{server.base}/"
    assert started["native_api"] == f"{server.base}/api/v1/media"
    assert started["tus"] == f"{server.base}/api/v1/tus"
    assert started["docs"] == f"{server.base}/api/v1/docs"
    assert (started["chunk_size"], started["max_upload"]) == ("16 MiB", "2 GiB")
    assert started["version"] == metadata.version("mediagate")
    assert (started["storage"], started["catalog"], started["bucket"]) == ("local", "sqlite", None)
    async with aiohttp.ClientSession() as http:
        for url in (started["page"], started["docs"]):
            async with http.get(url) as answer:
                assert answer.status == 200, url
    assert await server.terminate() == 0
