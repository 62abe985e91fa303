"""The server killed (SIGKILL) in the middle of an upload loses no acknowledged chunk."""

from __future__ import annotations

import asyncio
import random
import signal

import aiohttp
import pytest

from conftest import MiB, chunks_of, read_object
from mediagate import tokens
from server_process import ServerProcess

SECRET = "crash-test-secret-long-enough-for-hs256"


@pytest.fixture
def server_env(request, moto_endpoint, bucket):
    if request.param == "local":
        return {"MEDIAGATE_JWT_SECRET": SECRET}
    return {
        "MEDIAGATE_JWT_SECRET": SECRET,
        "USE_CLOUD_STORAGE": "true",
        "AWS_S3_BUCKET_NAME": bucket,
        "AWS_S3_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


async def start_chunk_and_stall(server: ServerProcess, path: str, headers: dict, body: bytes):
    """Send a chunk's headers and half its body, then keep the connection open."""
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(head.encode() + b"\r\n" + body[: len(body) // 2])
    await writer.drain()
    return writer


@pytest.mark.parametrize("server_env", ["local", "s3"], indirect=True)
async def test_sigkill_mid_upload_then_resume(tmp_path, server_env, s3_objects, bucket):
    data = random.Random(8).randbytes(4 * 5 * MiB + 4321)
    pieces = chunks_of(data, 5 * MiB)
    headers = {"Authorization": f"Bearer {tokens.issue(SECRET.encode(), 'alice', 600)}"}
    server = ServerProcess(tmp_path / "data", server_env)
    await server.start()
    try:
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            async with client.post(
                "/api/v1/media/upload/initiate",
                json={"filename": "crash.mp4", "size": len(data), "chunk_size": 5 * MiB},
            ) as answer:
                session = await answer.json()
            sid = session["session_id"]
            for n in (0, 3):
                async with client.post(
                    f"/api/v1/media/upload/{sid}/chunk/{n}", data=pieces[n]
                ) as a:
                    assert a.status == 200
            stalled = await start_chunk_and_stall(
                server, f"/api/v1/media/upload/{sid}/chunk/1", headers, pieces[1]
            )
            await asyncio.sleep(0.3)
            server.signal(signal.SIGKILL)
            assert await server.wait() == -signal.SIGKILL
            stalled.transport.abort()

        await server.start()
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            async with client.get(f"/api/v1/media/upload/{sid}") as answer:
                status = await answer.json()
            assert status["received"] == [0, 3]
            for n in (1, 2, 4):
                async with client.post(
                    f"/api/v1/media/upload/{sid}/chunk/{n}", data=pieces[n]
                ) as a:
                    assert a.status == 200
            async with client.post(f"/api/v1/media/upload/{sid}/complete") as answer:
                assert answer.status == 201
                media = await answer.json()
            async with client.get(f"/api/v1/media/stream/{media['media_id']}") as stream:
                if media["info"]["storage"] == "local":
                    assert await stream.read() == data
        if server_env.get("USE_CLOUD_STORAGE"):
            key = f"media/alice/{media['media_id']}/crash.mp4"
            assert await read_object(s3_objects, bucket, key) == data
    finally:
        await server.stop()
