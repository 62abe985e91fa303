"""LocalStore: cancellation mid-write, and the largest file its disk holds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from mediagate import tokens
from mediagate.storage import local
from mediagate.storage.base import NewObject
from support.api import MiB, make_settings
from support.server_process import ServerProcess


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


SECRET = "test-secret-with-enough-length-for-hs256"


def limit_file_size(pid: int, size: int) -> None:
    """RLIMIT_FSIZE of a running process: past it the kernel answers EFBIG, as ext4
    does past 16 TiB."""
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (size, size))


async def test_an_upload_larger_than_the_disk_holds_in_one_file_is_refused(tmp_path):
    server = ServerProcess(tmp_path / "data", {"MEDIAGATE_JWT_SECRET": SECRET})
    await server.start()
    auth = {"Authorization": f"Bearer {tokens.issue(SECRET.encode(), 'alice', 3600)}"}
    try:
        assert server.process is not None
        limit_file_size(server.process.pid, 12 * MiB)
        async with aiohttp.ClientSession(server.base, headers=auth) as http:

            async def initiate(size: int) -> aiohttp.ClientResponse:
                return await http.post(
                    "/api/v1/media/upload/initiate",
                    json={"filename": "big.bin", "size": size, "chunk_size": 5 * MiB},
                )

            # At initiate, before any byte: 413, naming the limit.
            refused = await initiate(12 * MiB + 1)
            assert refused.status == 413
            problem = await refused.json()
            assert problem["type"].endswith("/file-too-large")
            assert problem["max_size"] == 12 * MiB
            assert "12 MiB" in problem["detail"]
            assert (await initiate(12 * MiB)).status == 201

            # A limit met mid-upload (lowered after initiate): 507, not a 503 to retry for ever.
            session = await (await initiate(10 * MiB)).json()
            chunk_url = f"/api/v1/media/upload/{session['session_id']}/chunk"
            limit_file_size(server.process.pid, 6 * MiB)
            assert (await http.post(f"{chunk_url}/0", data=bytes(5 * MiB))).status == 200
            for _ in range(2):
                answer = await http.post(f"{chunk_url}/1", data=bytes(5 * MiB))
                assert answer.status == 507 and "Retry-After" not in answer.headers
                problem = await answer.json()
                assert problem["type"].endswith("/file-too-large-for-storage")
                assert "larger than this server's disk" in problem["detail"]
    finally:
        await server.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB file system that fills up: a tmpfs (mounting needs root; skipped
    where the test may not mount)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def fill_up(path: Path) -> None:
    """Write to `path` until the disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, bytes(64 * 1024))
    finally:
        os.close(fd)


async def test_a_small_disk_keeps_its_floor_and_readyz_says_when_it_is_full(start_api, small_disk):
    api = await start_api(make_settings(small_disk / "data", min_free_disk="2MiB"))
    session = await (await api.initiate(filename="a.bin", size=3 * MiB)).json()
    assert session["storage"] == "local"
    assert (await api.put_chunk(session["session_id"], 0, bytes(3 * MiB))).status == 200
    ready = await api.client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["disk"] == "ok"

    # 3 MiB more would leave less than the 2 MiB floor: refused before a byte is written.
    second = await (await api.initiate(filename="b.bin", size=3 * MiB)).json()
    refused = await api.put_chunk(second["session_id"], 0, bytes(3 * MiB))
    assert refused.status == 507
    assert (await refused.json())["type"].endswith("/storage-full")

    # Something else fills the disk: not ready, and no new local session.
    filler = small_disk / "filler"
    fill_up(filler)
    ready = await api.client.get("/readyz")
    assert ready.status == 503
    problem = await ready.json()
    assert (problem["disk"], problem["disk_free_bytes"], problem["catalog"]) == ("full", 0, "ok")
    assert (await api.initiate(filename="c.bin", size=1)).status == 507

    filler.unlink()  # room again
    assert (await api.client.get("/readyz")).status == 200
    assert (await api.complete(session["session_id"])).status == 201
