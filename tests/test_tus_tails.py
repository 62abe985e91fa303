"""Where a tus upload's bytes short of a part wait: in the bucket, or spilled to local disk
only when S3 refuses them and the fallback is on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mediagate.config import Settings
from mediagate.core.tus_tails import TusTails
from mediagate.errors import StorageUnavailable
from mediagate.models import StorageKind, UploadSession
from mediagate.storage.breaker import CircuitBreaker, guard
from mediagate.storage.local import LocalStore
from mediagate.storage.s3 import S3Store
from support.api import MiB
from support.sessions import upload_session


def s3_session() -> UploadSession:
    return upload_session(
        "7b1e4a52-7c43-4a59-9f4e-2a7d0c9b8e11",
        filename="clip.mp4",
        content_type="video/mp4",
        size=20 * MiB,
        chunk_size=8 * MiB,
        total_chunks=3,
        key="media/alice/m1/clip.mp4",
        upload_id="upload-1",
        media_id="m1",
    )


class Bytes:
    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self, n: int) -> bytes:
        piece, self._data = self._data[:n], self._data[n:]
        return piece


@pytest.mark.parametrize("fallback", [False, True])
async def test_a_tail_s3_refuses_goes_to_local_disk_only_with_the_fallback_on(
    tmp_path: Path, unreachable_s3: Settings, fallback: bool
) -> None:
    data = os.urandom(3 * MiB)
    local = LocalStore(tmp_path / "data")
    async with S3Store.connect(unreachable_s3) as s3:
        down = guard(s3, CircuitBreaker(failing_since_start="S3 is down"))
        tails = TusTails(
            {StorageKind.S3: down, StorageKind.LOCAL: local}, local, "media/", fallback=fallback
        )
        session = s3_session()
        staging = tmp_path / "data" / ".staging"
        if not fallback:
            with pytest.raises(StorageUnavailable):
                await tails.put(session, MiB, len(data), Bytes(data).read)
            assert [path for path in staging.rglob("*") if path.is_file()] == []
            return
        tail = await tails.put(session, MiB, len(data), Bytes(data).read)
        assert (tail.start, tail.size, tail.storage) == (MiB, len(data), StorageKind.LOCAL)
        reader = tails.reader(session, tail)
        await reader.start()
        kept = b""
        while piece := await reader.read(MiB):
            kept += piece
        assert kept == data
