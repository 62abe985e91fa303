"""The server killed (SIGKILL) in the middle of an upload loses no acknowledged chunk."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
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


def s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    return {
        "MEDIAGATE_JWT_SECRET": SECRET,
        "USE_CLOUD_STORAGE": "true",
        "AWS_S3_BUCKET_NAME": bucket,
        "AWS_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


async def until(check, seconds: float = 20.0) -> None:
    async with asyncio.timeout(seconds):
        while not await check():
            await asyncio.sleep(0.01)


async def initiate_and_send(client, size: int, pieces: list[bytes], name: str = "crash.mp4") -> str:
    async with client.post(
        "/api/v1/media/upload/initiate",
        json={"filename": name, "size": size, "chunk_size": 5 * MiB},
    ) as answer:
        sid = (await answer.json())["session_id"]
    for n, piece in enumerate(pieces):
        async with client.post(f"/api/v1/media/upload/{sid}/chunk/{n}", data=piece) as a:
            assert a.status == 200
    return sid


async def received(client, sid: str) -> list[int]:
    async with client.get(f"/api/v1/media/upload/{sid}") as answer:
        return (await answer.json())["received"]


async def test_sigkill_while_an_acknowledged_chunk_is_replaced_leaves_it_missing(tmp_path):
    data = random.Random(21).randbytes(3 * 5 * MiB)
    pieces = chunks_of(data, 5 * MiB)
    replacement = random.Random(22).randbytes(5 * MiB)
    headers = {"Authorization": f"Bearer {tokens.issue(SECRET.encode(), 'alice', 600)}"}
    server = ServerProcess(tmp_path / "data", {"MEDIAGATE_JWT_SECRET": SECRET})
    await server.start()
    try:
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            sid = await initiate_and_send(client, len(data), pieces)
            stalled = await start_chunk_and_stall(
                server, f"/api/v1/media/upload/{sid}/chunk/1", headers, replacement
            )
            (staging,) = (tmp_path / "data" / ".staging").iterdir()

            async def overwriting() -> bool:  # the new head is on disk over the old chunk
                with staging.open("rb") as file:
                    file.seek(5 * MiB)
                    return file.read(MiB) == replacement[:MiB]

            await until(overwriting)
            server.signal(signal.SIGKILL)
            assert await server.wait() == -signal.SIGKILL
            stalled.transport.abort()

        await server.start()
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            assert await received(client, sid) == [0, 2]
            async with client.post(f"/api/v1/media/upload/{sid}/chunk/1", data=replacement) as a:
                assert a.status == 200
            async with client.post(f"/api/v1/media/upload/{sid}/complete") as answer:
                assert answer.status == 201
                media = await answer.json()
            async with client.get(f"/api/v1/media/stream/{media['media_id']}") as stream:
                assert await stream.read() == pieces[0] + replacement + pieces[2]
    finally:
        await server.stop()


async def test_sigkill_after_s3_took_a_replaced_part_leaves_the_chunk_missing(
    tmp_path, proxy, bucket, s3_objects
):
    """S3 stored the new part but the server died before recording it: the chunk
    is missing (not listed with the old part's ETag, which complete would send)."""
    data = random.Random(23).randbytes(2 * 5 * MiB + 10)
    pieces = chunks_of(data, 5 * MiB)
    replacement = random.Random(24).randbytes(5 * MiB)
    headers = {"Authorization": f"Bearer {tokens.issue(SECRET.encode(), 'alice', 600)}"}
    server = ServerProcess(tmp_path / "data", s3_env(proxy.url, bucket))
    await server.start()
    try:
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            sid = await initiate_and_send(client, len(data), pieces)
            (upload,) = (await s3_objects.list_multipart_uploads(Bucket=bucket))["Uploads"]
            new_etag = f'"{hashlib.md5(replacement).hexdigest()}"'

            async def stored_by_s3() -> bool:
                parts = await s3_objects.list_parts(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                return any(part["ETag"] == new_etag for part in parts["Parts"])

            # Held once the body is through (not before: botocore first waits for "100 Continue").
            proxy.call_after(len(replacement), proxy.hold_answers)
            resent = asyncio.create_task(
                client.post(f"/api/v1/media/upload/{sid}/chunk/1", data=replacement)
            )
            await until(stored_by_s3)
            server.signal(signal.SIGKILL)
            assert await server.wait() == -signal.SIGKILL
            proxy.release_answers()
            with contextlib.suppress(aiohttp.ClientError):
                (await resent).release()

        await server.start()
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            assert await received(client, sid) == [0, 2]
            async with client.post(f"/api/v1/media/upload/{sid}/chunk/1", data=replacement) as a:
                assert a.status == 200
            async with client.post(f"/api/v1/media/upload/{sid}/complete") as answer:
                assert answer.status == 201, await answer.text()
                media = await answer.json()
        expected = pieces[0] + replacement + pieces[2]
        key = f"media/alice/{media['media_id']}/crash.mp4"
        assert await read_object(s3_objects, bucket, key) == expected
    finally:
        await server.stop()
