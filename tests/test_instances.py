"""Two `mediagate serve` processes on one PostgreSQL catalog, one moto bucket and one
data directory (the shared spool): a client may send any request to either."""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import AsyncIterator

import aiohttp
import pytest

from mediagate import tokens
from support.api import TOKEN_LIFETIME, MiB, chunks_of, read_object
from support.server_process import ServerProcess
from support.tier import tier_s3_env

SECRET = "instances-test-secret-long-enough-for-hs256"
HEADERS = {"Authorization": f"Bearer {tokens.issue(SECRET.encode(), 'alice', TOKEN_LIFETIME)}"}
KEY = "media/alice/{media_id}/clip.mp4"


@pytest.fixture
async def instances(tmp_path, postgres_server, moto_endpoint, bucket) -> AsyncIterator[list]:
    env = {
        "MEDIAGATE_JWT_SECRET": SECRET,
        "MEDIAGATE_DATABASE_URL": postgres_server.new_database(),
        "USE_CLOUD_STORAGE": "true",
        "AWS_S3_BUCKET_NAME": bucket,
        **tier_s3_env(moto_endpoint),
    }
    servers = [ServerProcess(tmp_path / "data", env) for _ in range(2)]
    clients = []
    try:
        for server in servers:  # one after the other: the first makes the bucket
            await server.start()
            clients.append(aiohttp.ClientSession(server.base, headers=HEADERS))
        yield list(zip(servers, clients, strict=True))
    finally:
        for client in clients:
            await client.close()
        for server in servers:
            await server.stop()


async def initiate(client: aiohttp.ClientSession, size: int) -> str:
    async with client.post(
        "/api/v1/media/upload/initiate",
        json={"filename": "clip.mp4", "size": size, "chunk_size": 5 * MiB},
    ) as answer:
        assert answer.status == 201, await answer.text()
        return (await answer.json())["session_id"]


async def put_chunk(client: aiohttp.ClientSession, sid: str, number: int, data: bytes) -> int:
    async with client.post(f"/api/v1/media/upload/{sid}/chunk/{number}", data=data) as answer:
        return answer.status


async def complete(client: aiohttp.ClientSession, sid: str) -> tuple[int, dict]:
    async with client.post(f"/api/v1/media/upload/{sid}/complete") as answer:
        return answer.status, await answer.json()


async def test_chunks_sprayed_over_both_make_the_file_and_completes_raced_make_one_media(
    instances, s3_objects, bucket
):
    (_, a), (_, b) = instances
    data = random.Random(1).randbytes(3 * 5 * MiB + 1234)
    pieces = chunks_of(data, 5 * MiB)
    sid = await initiate(a, len(data))
    sent = await asyncio.gather(
        *(put_chunk((a, b)[n % 2], sid, n, piece) for n, piece in enumerate(pieces))
    )
    assert sent == [200] * len(pieces)

    (one, first), (two, second) = await asyncio.gather(complete(a, sid), complete(b, sid))
    assert (one, two) == (201, 201), (first, second)
    assert first["media_id"] == second["media_id"]
    assert first["info"]["checksum"] == second["info"]["checksum"]
    key = KEY.format(media_id=first["media_id"])
    assert await read_object(s3_objects, bucket, key) == data


async def test_a_chunk_raced_on_both_with_different_bytes_is_one_version(
    instances, s3_objects, bucket
):
    (_, a), (_, b) = instances
    for round_ in range(3):
        rng = random.Random(round_)
        versions = [rng.randbytes(5 * MiB), rng.randbytes(5 * MiB)]
        tail = rng.randbytes(100)
        sid = await initiate(a, 5 * MiB + len(tail))
        assert await put_chunk(b, sid, 1, tail) == 200
        answers = await asyncio.gather(
            put_chunk(a, sid, 0, versions[0]), put_chunk(b, sid, 0, versions[1])
        )
        assert 200 in answers and set(answers) <= {200, 409}, answers

        status, media = await complete((a, b)[round_ % 2], sid)
        assert status == 201, media  # never InvalidPart: the recorded ETag is S3's
        stored = await read_object(s3_objects, bucket, KEY.format(media_id=media["media_id"]))
        accepted = [versions[n] + tail for n, answer in enumerate(answers) if answer == 200]
        assert stored in accepted


async def test_an_instance_killed_mid_chunk_and_the_upload_finished_through_the_other(
    instances, s3_objects, bucket
):
    (server_a, a), (_, b) = instances
    data = random.Random(7).randbytes(2 * 5 * MiB + 10)
    pieces = chunks_of(data, 5 * MiB)
    sid = await initiate(a, len(data))
    assert await put_chunk(a, sid, 0, pieces[0]) == 200
    _, writer = await asyncio.open_connection("127.0.0.1", server_a.port)
    head = (
        f"POST /api/v1/media/upload/{sid}/chunk/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {len(pieces[1])}\r\nAuthorization: {HEADERS['Authorization']}\r\n\r\n"
    )
    writer.write(head.encode() + pieces[1][: len(pieces[1]) // 2])
    await writer.drain()
    await asyncio.sleep(0.5)  # A holds chunk 1's lease now
    server_a.signal(signal.SIGKILL)
    assert await server_a.wait() == -signal.SIGKILL
    writer.transport.abort()

    async with asyncio.timeout(20):  # A's lease runs out (10 s), then B takes the chunk
        assert await put_chunk(b, sid, 1, pieces[1]) == 200
    assert await put_chunk(b, sid, 2, pieces[2]) == 200
    status, media = await complete(b, sid)
    assert status == 201, media
    assert await read_object(s3_objects, bucket, KEY.format(media_id=media["media_id"])) == data


async def test_media_made_on_one_is_deleted_through_the_other(instances, s3_objects, bucket):
    (_, a), (_, b) = instances
    sid = await initiate(a, 3)
    assert await put_chunk(a, sid, 0, b"abc") == 200
    status, media = await complete(a, sid)
    assert status == 201, media
    async with b.delete(f"/api/v1/media/delete/{media['media_id']}") as answer:
        assert answer.status == 204, await answer.text()
    async with a.get(f"/api/v1/media/info/{media['media_id']}") as answer:
        assert answer.status == 404
    listed = await s3_objects.list_objects_v2(Bucket=bucket)
    assert listed.get("KeyCount", 0) == 0
