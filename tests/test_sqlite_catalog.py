"""The SQLite catalog: what it guarantees beyond plain storage of records."""

from __future__ import annotations

import sqlite3
import stat
from datetime import timedelta

from mediagate.catalog.sqlite import CATALOG_FILE, SQLiteCatalog
from mediagate.core.engine import utc_now
from mediagate.models import (
    Chunk,
    Media,
    MediaState,
    SessionState,
    StorageKind,
    UploadSession,
)


def a_session() -> UploadSession:
    now = utc_now()
    return UploadSession(
        id="9f0c1a52-1b2c-4d5e-8f90-123456789abc",
        user_id="alice",
        filename="a.mp4",
        content_type="video/mp4",
        size=10,
        chunk_size=5,
        total_chunks=2,
        sha256=None,
        storage=StorageKind.LOCAL,
        key="media/alice/m/a.mp4",
        upload_id="0d7e3a5c-2f4b-4c6d-9e8f-abcdefabcdef",
        state=SessionState.OPEN,
        created_at=now,
        expires_at=now + timedelta(hours=1),
        media_id="m",
    )


async def test_a_finalizing_session_keeps_its_chunks_when_asked_to_drop_one(tmp_path):
    catalog = await SQLiteCatalog.open(tmp_path / "catalog.sqlite3")
    session = a_session()
    await catalog.add_session(session)
    for number in (0, 1):
        chunk = Chunk(number=number, size=5, storage=StorageKind.LOCAL, etag=f'"{number}"')
        await catalog.put_chunk(session.id, chunk)
    media = Media(
        id="m",
        user_id="alice",
        filename="a.mp4",
        content_type="video/mp4",
        size=10,
        checksum=None,
        storage=StorageKind.LOCAL,
        key=session.key,
        created_at=session.created_at,
        state=MediaState.FINALIZING,
    )
    await catalog.complete_session(session.id, media)
    await catalog.drop_chunk(session.id, 1)  # a late re-send, seen by another server
    assert [chunk.number for chunk in await catalog.chunks(session.id)] == [0, 1]
    await catalog.close()


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_catalog_files_are_readable_by_their_owner_only(local_api, local_settings):
    assert (await local_api.initiate(filename="a.bin", size=2)).status == 201  # writes the WAL
    catalog = local_settings.data_dir / CATALOG_FILE
    files = [
        catalog,
        catalog.with_name(f"{CATALOG_FILE}-wal"),
        catalog.with_name(f"{CATALOG_FILE}-shm"),
    ]
    assert {file.name: mode(file) for file in files} == {file.name: 0o600 for file in files}


async def test_a_catalog_left_world_readable_is_made_private(tmp_path):
    path = tmp_path / CATALOG_FILE
    sqlite3.connect(path).close()
    path.chmod(0o644)
    catalog = await SQLiteCatalog.open(path)
    await catalog.close()
    assert mode(path) == 0o600
