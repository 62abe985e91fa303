"""The server killed (SIGKILL) at any step of an upload loses no acknowledged chunk
and never publishes a file other than the one sent."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import signal
import sqlite3
import uuid

import aiohttp
import pytest

from mediagate import tokens
from mediagate.catalog.base import CATALOG_FILE
from mediagate.models import Media, MediaState
from mediagate.web.keys import SERVICES
from support.api import MiB, chunks_of, read_object
from support.server_process import ServerProcess
from support.tier import tier_s3_env

SECRET = "crash-test-secret-long-enough-for-hs256"


@pytest.fixture
def server_env(request, moto_endpoint, bucket):
    if request.param == "local":
        return {"MEDIAGATE_JWT_SECRET": SECRET}
    return {
        "MEDIAGATE_JWT_SECRET": SECRET,
        "USE_CLOUD_STORAGE": "true",
        "AWS_S3_BUCKET_NAME": bucket,
        **tier_s3_env(moto_endpoint),
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
        **tier_s3_env(endpoint),
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


@pytest.mark.parametrize("moment", ["mid-part", "part-stored"])
async def test_sigkill_while_s3_takes_a_replaced_part_leaves_the_chunk_missing(
    moment, tmp_path, proxy, bucket, s3_objects
):
    """Killed while the new part streams to S3 (S3 keeps the old part), or once S3
    stored it but before the server recorded it: either way the chunk is missing,
    never listed with the old part's ETag while S3 may hold the new part."""
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

            if moment == "mid-part":
                proxy.call_after(MiB, lambda: server.signal(signal.SIGKILL))
            else:
                # Held once the body is through (not before: botocore first waits
                # for "100 Continue").
                proxy.call_after(len(replacement), proxy.hold_answers)
            resent = asyncio.create_task(
                client.post(f"/api/v1/media/upload/{sid}/chunk/1", data=replacement)
            )
            if moment == "part-stored":
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


@contextlib.contextmanager
def catalog_locked(data_dir):
    """Hold the catalog's write lock, so the server's next commit waits (reads go on)."""
    db = sqlite3.connect(data_dir / CATALOG_FILE, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        db.execute("ROLLBACK")
        db.close()


async def published(tmp_path, s3_objects, bucket: str, env: dict[str, str]) -> bool:
    if "USE_CLOUD_STORAGE" in env:
        listed = await s3_objects.list_objects_v2(Bucket=bucket, Prefix="media/alice/")
        return listed.get("KeyCount", 0) > 0
    return bool(list((tmp_path / "data" / "media").glob("alice/*/crash.mp4")))


@pytest.mark.parametrize("server_env", ["local", "s3"], indirect=True)
async def test_sigkill_in_complete_then_a_resent_chunk_keeps_the_file_whole(
    tmp_path, server_env, s3_objects, bucket
):
    """Killed while complete waits for the catalog (after publishing the file, on
    the code before the fix): a chunk re-sent after the restart must not
    recreate a staging file that complete then publishes with a zero-filled hole,
    nor fail against an S3 upload that is already completed."""
    data = random.Random(25).randbytes(3 * 5 * MiB + 99)
    pieces = chunks_of(data, 5 * MiB)
    headers = {"Authorization": f"Bearer {tokens.issue(SECRET.encode(), 'alice', 600)}"}
    server = ServerProcess(tmp_path / "data", server_env)
    await server.start()
    try:
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            sid = await initiate_and_send(client, len(data), pieces)
            with catalog_locked(tmp_path / "data"):
                completing = asyncio.create_task(
                    client.post(f"/api/v1/media/upload/{sid}/complete")
                )
                with contextlib.suppress(TimeoutError):
                    await until(lambda: published(tmp_path, s3_objects, bucket, server_env), 2)
                server.signal(signal.SIGKILL)
                assert await server.wait() == -signal.SIGKILL
            with contextlib.suppress(aiohttp.ClientError):
                (await completing).release()

        await server.start()
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            async with client.post(f"/api/v1/media/upload/{sid}/chunk/1", data=pieces[1]) as a:
                assert a.status in (200, 409), await a.text()  # 409: complete got through
            async with client.post(f"/api/v1/media/upload/{sid}/complete") as answer:
                assert answer.status in (201, 202), await answer.text()
                media = await answer.json()
            await until(lambda: media_ready(client, media["media_id"]))
            if "USE_CLOUD_STORAGE" not in server_env:
                async with client.get(f"/api/v1/media/stream/{media['media_id']}") as stream:
                    assert await stream.read() == data
        if "USE_CLOUD_STORAGE" in server_env:
            key = f"media/alice/{media['media_id']}/crash.mp4"
            assert await read_object(s3_objects, bucket, key) == data
    finally:
        await server.stop()


async def media_ready(client, media_id: str) -> bool:
    async with client.get(f"/api/v1/media/info/{media_id}") as answer:
        return (await answer.json())["state"] == "ready"


@pytest.mark.parametrize("storage", ["local", "s3"])
async def test_a_restart_finishes_a_complete_cut_after_its_file_was_published(
    storage, start_api, local_settings, s3_settings, s3_objects, bucket
):
    """The state a crash leaves between publishing (the staging file renamed into
    place, or S3's CompleteMultipartUpload) and the catalog's final commit."""
    settings = local_settings if storage == "local" else s3_settings
    api = await start_api(settings)
    data = random.Random(26).randbytes(2 * 5 * MiB + 7)
    pieces = chunks_of(data, 5 * MiB)
    sid = (await (await api.initiate(size=len(data), chunk_size=5 * MiB)).json())["session_id"]
    for n, piece in enumerate(pieces):
        assert (await api.put_chunk(sid, n, piece)).status == 200
    catalog = api.client.app[SERVICES].catalog
    session = await catalog.get_session(sid)
    finalizing = Media(
        id=session.media_id,
        user_id="alice",
        filename=session.filename,
        content_type=session.content_type,
        size=session.size,
        checksum=None,
        storage=session.storage,
        key=session.key,
        created_at=session.created_at,
        state=MediaState.FINALIZING,
    )
    await catalog.complete_session(sid, finalizing)  # what complete records first
    if storage == "local":
        target = settings.data_dir / session.key
        target.parent.mkdir(parents=True)
        (settings.data_dir / ".staging" / uuid.UUID(session.upload_id).hex).rename(target)
    else:
        parts = await s3_objects.list_parts(
            Bucket=bucket, Key=session.key, UploadId=session.upload_id
        )
        await s3_objects.complete_multipart_upload(
            Bucket=bucket,
            Key=session.key,
            UploadId=session.upload_id,
            MultipartUpload={
                "Parts": [
                    {"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts["Parts"]
                ]
            },
        )
    await api.client.close()

    api = await start_api(settings)  # its finalizer runs at start
    assert (await api.put_chunk(sid, 1, pieces[1])).status == 409
    assert (await api.complete(sid)).status in (201, 202)

    async def ready() -> bool:
        return (await (await api.info(session.media_id)).json())["state"] == "ready"

    await until(ready)
    if storage == "local":
        stream = await api.client.get(
            f"/api/v1/media/stream/{session.media_id}", headers=api.headers
        )
        assert await stream.read() == data
    else:
        assert await read_object(s3_objects, bucket, session.key) == data


async def test_sigkill_in_abort_never_leaves_an_open_session_without_its_chunks(tmp_path):
    data = random.Random(27).randbytes(2 * 5 * MiB + 5)
    pieces = chunks_of(data, 5 * MiB)
    headers = {"Authorization": f"Bearer {tokens.issue(SECRET.encode(), 'alice', 600)}"}
    server = ServerProcess(tmp_path / "data", {"MEDIAGATE_JWT_SECRET": SECRET})
    await server.start()
    try:
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            sid = await initiate_and_send(client, len(data), pieces)
            staging = tmp_path / "data" / ".staging"

            async def discarded() -> bool:
                return not any(staging.iterdir())

            with catalog_locked(tmp_path / "data"):
                aborting = asyncio.create_task(client.delete(f"/api/v1/media/upload/{sid}"))
                with contextlib.suppress(TimeoutError):
                    await until(discarded, 2)
                server.signal(signal.SIGKILL)
                assert await server.wait() == -signal.SIGKILL
            with contextlib.suppress(aiohttp.ClientError):
                (await aborting).release()

        await server.start()
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            # The abort never reached the catalog, so the session must still be whole.
            assert await received(client, sid) == [0, 1, 2]
            async with client.post(f"/api/v1/media/upload/{sid}/chunk/1", data=pieces[1]) as a:
                assert a.status == 200
            async with client.post(f"/api/v1/media/upload/{sid}/complete") as answer:
                assert answer.status == 201, await answer.text()
                media = await answer.json()
            async with client.get(f"/api/v1/media/stream/{media['media_id']}") as stream:
                assert await stream.read() == data
    finally:
        await server.stop()


async def test_sigkill_while_the_finalizer_moves_a_spilled_chunk_then_a_restart_finishes(
    tmp_path, proxy, bucket, s3_objects
):
    data = random.Random(28).randbytes(2 * 5 * MiB + 10)
    pieces = chunks_of(data, 5 * MiB)
    headers = {"Authorization": f"Bearer {tokens.issue(SECRET.encode(), 'alice', 600)}"}
    env = {**s3_env(proxy.url, bucket), "MEDIAGATE_S3_PROBE_MAX_INTERVAL": "0.2"}
    server = ServerProcess(tmp_path / "data", env)
    await server.start()
    try:
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            sid = await initiate_and_send(client, len(data), pieces[:1])
            await proxy.cut()
            for n in (1, 2):  # spilled to local disk
                path = f"/api/v1/media/upload/{sid}/chunk/{n}"
                async with client.post(path, data=pieces[n]) as a:
                    assert a.status == 200
            async with client.post(f"/api/v1/media/upload/{sid}/complete") as answer:
                assert answer.status == 202
                media_id = (await answer.json())["media_id"]
            proxy.call_after(MiB, lambda: server.signal(signal.SIGKILL))  # mid-move
            await proxy.restore()
            assert await server.wait() == -signal.SIGKILL

        await server.start()
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            await until(lambda: media_ready(client, media_id))
        key = f"media/alice/{media_id}/crash.mp4"
        assert await read_object(s3_objects, bucket, key) == data
        assert list((tmp_path / "data" / ".staging").iterdir()) == []
    finally:
        await server.stop()
