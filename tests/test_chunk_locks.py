"""One writer per chunk: a retry takes over from an attempt that stalled, at once."""

from __future__ import annotations

import asyncio
import os

import pytest
from yarl import URL

from mediagate.core.chunk_locks import InProcessChunkLocks
from mediagate.errors import ChunkSuperseded
from mediagate.web.keys import SERVICES
from support.api import make_settings
from support.raw_http import stall_chunk


@pytest.mark.parametrize("settings", ["local_settings", "s3_settings"])
async def test_a_retry_takes_over_from_a_stalled_attempt_at_once(start_api, request, settings):
    api = await start_api(request.getfixturevalue(settings))  # the default 60 s body timeout
    data = os.urandom(1000)
    session_id = (await (await api.initiate(size=len(data))).json())["session_id"]
    stalled = await stall_chunk(api, session_id, data)

    async with asyncio.timeout(5):  # not the body timeout
        retry = await api.put_chunk(session_id, 0, data)
    assert retry.status == 200, await retry.text()
    status, problem = await stalled.answer()
    assert (status, problem["type"].rsplit("/", 1)[1]) == (409, "chunk-superseded")
    stalled.close()

    done = await api.complete(session_id)
    assert done.status == 201, await done.text()
    stream = await api.client.get(URL((await done.json())["stream_url"]).path_qs)
    assert await stream.read() == data
    assert len(api.client.app[SERVICES].engine.locks) == 0


async def test_a_stalled_chunk_holds_up_complete_and_abort_only_until_the_timeout(
    start_api, tmp_path
):
    api = await start_api(make_settings(tmp_path / "data", body_read_timeout=0.5))
    data = os.urandom(1000)
    session_id = (await (await api.initiate(size=len(data))).json())["session_id"]
    stalled = await stall_chunk(api, session_id, data)

    async with asyncio.timeout(5):
        # complete waits for the chunk in flight, and then finds it missing
        done = await api.complete(session_id)
        assert done.status == 409
        assert (await done.json())["missing_chunks"] == [0]
        assert (await api.abort(session_id)).status == 204
    status, problem = await stalled.answer()
    assert (status, problem["type"].rsplit("/", 1)[1]) == (408, "body-timeout")
    stalled.close()


async def test_only_the_newest_of_several_waiting_attempts_gets_the_chunk():
    locks = InProcessChunkLocks()
    never = asyncio.Event()

    async def stalled_read(n: int) -> bytes:
        await never.wait()
        return b""

    async def attempt(started: asyncio.Event | None = None) -> str:
        try:
            async with locks.hold("s", 0) as lease:
                if started is not None:
                    started.set()
                    return await lease.guard(stalled_read)(10)
                return "wrote"
        except ChunkSuperseded:
            return "superseded"

    holding = asyncio.Event()
    first = asyncio.create_task(attempt(holding))
    await holding.wait()
    second = asyncio.create_task(attempt())
    await asyncio.sleep(0)
    third = asyncio.create_task(attempt())
    async with asyncio.timeout(2):
        assert await asyncio.gather(first, second, third) == ["superseded", "superseded", "wrote"]
    assert len(locks) == 0


async def test_a_holder_between_reads_lets_go_at_its_next_read():
    locks = InProcessChunkLocks()
    async with locks.hold("s", 0) as lease:
        guarded = lease.guard(lambda n: asyncio.sleep(0, b"x" * n))
        assert await guarded(3) == b"xxx"
        newer = asyncio.create_task(locks.hold("s", 0).__aenter__())
        await asyncio.sleep(0)
        with pytest.raises(ChunkSuperseded):
            await guarded(3)
    await newer
