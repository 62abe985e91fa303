"""LocalStore edge cases that the HTTP tests cannot time: cancellation mid-write."""

from __future__ import annotations

import asyncio
import os
import threading

from mediagate.storage import local
from mediagate.storage.base import NewObject


class OneShotBody:
    failure = None

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self):
        yield self._data


async def test_a_cancelled_write_keeps_its_file_open_until_the_thread_is_done(
    tmp_path, monkeypatch
):
    store = local.LocalStore(tmp_path)
    upload_id = await store.start_upload(NewObject("media/u/m/f.bin", "video/mp4", "u", "f.bin"))
    entered, release = threading.Event(), threading.Event()
    seen: list[bool] = []
    real_write = local._write_at

    def slow_write(fd, data, position):
        entered.set()
        release.wait(5)
        os.fstat(fd)  # raises if the descriptor was closed under the write
        seen.append(True)
        real_write(fd, data, position)

    monkeypatch.setattr(local, "_write_at", slow_write)
    task = asyncio.create_task(
        store.put_part(
            "media/u/m/f.bin", upload_id, number=0, offset=0, length=4, body=OneShotBody(b"data")
        )
    )
    await asyncio.to_thread(entered.wait, 5)
    task.cancel()
    await asyncio.sleep(0.05)  # the request is gone; the thread still writes
    release.set()
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.02)
    assert seen == [True]
