"""A client gone mid-chunk and a server restarted mid-session both leave the upload resumable."""

from __future__ import annotations

import asyncio
import random

from support.api import MiB, chunks_of, make_settings, read_object


async def send_half_a_chunk_and_vanish(api, session_id: str, length: int) -> None:
    url = api.client.make_url(f"/api/v1/media/upload/{session_id}/chunk/0")
    _, writer = await asyncio.open_connection(url.host, url.port)
    head = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.host}\r\n"
        f"Authorization: {api.headers['Authorization']}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    writer.write(head.encode() + b"\1" * (length // 2))
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()


async def wait_until(condition) -> None:
    async with asyncio.timeout(10):
        while not await condition():
            await asyncio.sleep(0.05)


async def test_client_gone_mid_chunk_leaves_the_session_usable(s3_api, s3_objects, bucket):
    data = random.Random(1).randbytes(2 * 5 * MiB)
    session = await (await s3_api.initiate(size=len(data), chunk_size=5 * MiB)).json()
    sid = session["session_id"]
    first, second = chunks_of(data, 5 * MiB)
    assert (await s3_api.put_chunk(sid, 1, second)).status == 200

    await send_half_a_chunk_and_vanish(s3_api, sid, 5 * MiB)

    async def only_chunk_one_received() -> bool:
        status = await (await s3_api.status(sid)).json()
        return status["received"] == [1] and status["bytes_received"] == 5 * MiB

    await wait_until(only_chunk_one_received)
    answer = await asyncio.wait_for(s3_api.put_chunk(sid, 0, first), timeout=30)
    assert answer.status == 200
    media = await (await s3_api.complete(sid)).json()
    key = f"media/alice/{media['media_id']}/video.mp4"
    assert await read_object(s3_objects, bucket, key) == data


async def test_restart_mid_session_resumes_from_status(start_api, s3_settings, s3_objects, bucket):
    data = random.Random(2).randbytes(4 * 5 * MiB + 999)
    pieces = chunks_of(data, 5 * MiB)
    first_life = await start_api(s3_settings)
    session = await (await first_life.initiate(size=len(data), chunk_size=5 * MiB)).json()
    sid = session["session_id"]
    for n in (4, 0, 2):
        assert (await first_life.put_chunk(sid, n, pieces[n])).status == 200
    await first_life.client.close()

    second_life = await start_api(s3_settings)
    status = await (await second_life.status(sid)).json()
    assert status["state"] == "open"
    assert status["received"] == [0, 2, 4]
    assert status["bytes_received"] == 2 * 5 * MiB + 999
    missing = [n for n in range(status["total_chunks"]) if n not in status["received"]]
    for n in missing:
        assert (await second_life.put_chunk(sid, n, pieces[n])).status == 200
    media = await (await second_life.complete(sid)).json()
    key = f"media/alice/{media['media_id']}/video.mp4"
    assert await read_object(s3_objects, bucket, key) == data


async def test_restart_keeps_local_sessions_and_the_token_secret(start_api, tmp_path):
    # The embedded default: no secret configured, so one is generated and kept on disk.
    settings = make_settings(tmp_path / "data", jwt_secret=None)
    first_life = await start_api(settings)
    session = await (await first_life.initiate(filename="a.txt", size=6)).json()
    sid = session["session_id"]
    assert (await first_life.put_chunk(sid, 0, b"resume")).status == 200
    headers = first_life.headers
    await first_life.client.close()

    second_life = await start_api(settings)
    second_life.headers = headers  # the token from before the restart
    status = await second_life.status(sid)
    assert status.status == 200
    assert (await status.json())["received"] == [0]
    done = await second_life.complete(sid)
    assert done.status == 201
    media_id = (await done.json())["media_id"]
    stream = await second_life.client.get(f"/api/v1/media/stream/{media_id}", headers=headers)
    assert await stream.read() == b"resume"
