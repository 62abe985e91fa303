"""`mediagate serve` as a real process: SIGTERM, and connections that never send a request.

SIGTERM lets a chunk in flight finish, then the server exits 0.

The chunk's body is sent in pieces with pauses and SIGTERM arrives between
them. The server must stop accepting connections at once, still read the
rest of the body, acknowledge the chunk, close the catalog and exit 0; a
restart on the same data directory must list the chunk as received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import mediagate
from conftest import closed_port
from mediagate import tokens

SECRET = "test-secret-with-enough-length-for-hs256"
CHUNK = bytes(range(256)) * 1024  # 256 KiB: one chunk, the whole file
PIECES = 4
START_TIMEOUT = 20
STOP_TIMEOUT = 15


class Server:
    """One `python -m mediagate serve` process and the JSON log lines it wrote."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log: list[dict[str, Any]] = []
        self._new_line = asyncio.Event()
        self._reader = asyncio.create_task(self._read_log())

    async def _read_log(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            with contextlib.suppress(ValueError):
                self.log.append(json.loads(raw))
            self._new_line.set()

    @property
    def events(self) -> list[str]:
        return [line.get("event", "") for line in self.log]

    async def logged(self, event: str) -> dict[str, Any]:
        async with asyncio.timeout(STOP_TIMEOUT):
            while event not in self.events:
                self._new_line.clear()
                await self._new_line.wait()
        return self.log[self.events.index(event)]

    async def ready(self, http: aiohttp.ClientSession) -> None:
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                assert self.process.returncode is None, f"the server exited: {self.events}"
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with http.get(f"{self.url}/healthz") as answer:
                        if answer.status == 200:
                            return
                await asyncio.sleep(0.1)

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return await self.exited()

    async def exited(self) -> int:
        code = await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        await self._reader
        return code


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Any]:
    """Start `mediagate serve` on a fresh loopback port over `tmp_path / "data"`."""
    started: list[Server] = []
    source = str(Path(mediagate.__file__).parents[1])

    async def start(**extra_env: str) -> Server:
        port = closed_port()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])),
            "MEDIAGATE_DATA_DIR": str(tmp_path / "data"),
            "MEDIAGATE_JWT_SECRET": SECRET,
            "MEDIAGATE_HOST": "127.0.0.1",
            "MEDIAGATE_PORT": str(port),
            "MEDIAGATE_LOG_FORMAT": "json",
            "MEDIAGATE_SHUTDOWN_TIMEOUT": "10",
            "USE_CLOUD_STORAGE": "false",
            **extra_env,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mediagate",
            "serve",
            cwd=tmp_path,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        server = Server(process, port)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.returncode is None:
            server.process.kill()
            await server.process.wait()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 answer that declares its Content-Length."""
    async with asyncio.timeout(STOP_TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in header_lines if line)
        body = await reader.readexactly(int(headers.get("Content-Length", "0")))
    return int(status_line.split()[1]), body


async def send_chunk_slowly_with_sigterm(
    server: Server, session_id: str, token: str
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
    token = tokens.issue(SECRET.encode(), "alice", 3600)
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        server = await serve()
        await server.ready(http)
        async with http.post(
            f"{server.url}/api/v1/media/upload/initiate",
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
        assert await server.exited() == 0
        assert server.events.index("server.stopping") < server.events.index("server.stopped")

        restarted = await serve()
        await restarted.ready(http)
        async with http.get(
            f"{restarted.url}/api/v1/media/upload/{session['session_id']}", headers=auth
        ) as status:
            assert status.status == 200
            resumed = await status.json()
        assert (resumed["received"], resumed["state"]) == ([0], "open")
        assert resumed["bytes_received"] == len(CHUNK)
        assert await restarted.stop() == 0


async def test_connections_that_never_finish_their_headers_are_closed(serve):
    async with aiohttp.ClientSession() as http:
        server = await serve(MEDIAGATE_HEADER_TIMEOUT="0.5")
        await server.ready(http)
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
    assert started["page"] == f"{server.url}/"
    assert started["native_api"] == f"{server.url}/api/v1/media"
    assert started["tus"] == f"{server.url}/api/v1/tus"
    assert started["docs"] == f"{server.url}/api/v1/docs"
    assert (started["chunk_size"], started["max_upload"]) == ("16 MiB", "2 GiB")
    assert started["version"] == metadata.version("mediagate")
    assert (started["storage"], started["catalog"], started["bucket"]) == ("local", "sqlite", None)
    async with aiohttp.ClientSession() as http:
        for url in (started["page"], started["docs"]):
            async with http.get(url) as answer:
                assert answer.status == 200, url
    assert await server.stop() == 0
