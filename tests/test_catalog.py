"""The catalog contract, run on SQLite and on a real PostgreSQL: every method, the schema
upgrades, and what a PostgreSQL outage looks like through the HTTP API."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from mediagate.catalog import postgres, sqlite
from mediagate.catalog.base import CATALOG_FILE
from mediagate.catalog.connect import open_catalog
from mediagate.catalog.postgres import PostgresCatalog
from mediagate.catalog.schema import SchemaTooNew, SchemaUpgrade, Step
from mediagate.catalog.sqlite import SQLiteCatalog
from mediagate.errors import NotFound, SessionExpired, SessionNotOpen
from mediagate.events import Delivery, DeliveryState
from mediagate.models import (
    Chunk,
    Media,
    MediaState,
    SessionState,
    StorageKind,
    TusUpload,
    UploadProtocol,
    UploadSession,
)
from support.api import CATALOGS, MiB, chunks_of, database_url_for, make_settings, read_object
from support.pg_round_trips import round_trips
from support.server_process import free_port

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
OPEN = SessionState.OPEN


@dataclass
class Opener:
    """Opens the catalog under test (one kind, one fresh database) with its own steps."""

    kind: str
    path: Path
    url: str | None

    @property
    def migrations(self) -> tuple[Step, ...]:
        return sqlite.MIGRATIONS if self.url is None else postgres.MIGRATIONS

    async def open(
        self, migrations: Sequence[Step] | None = None, endpoints: Sequence[str] = ()
    ) -> SQLiteCatalog | PostgresCatalog:
        steps = self.migrations if migrations is None else migrations
        if self.url is None:
            return await SQLiteCatalog.open(self.path, steps, endpoints)
        return await PostgresCatalog.open(self.url, migrations=steps, endpoints=endpoints)


@pytest.fixture(params=CATALOGS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return Opener(request.param, tmp_path / CATALOG_FILE, database_url_for(request))


@pytest.fixture
async def catalog(opener: Opener) -> AsyncIterator[SQLiteCatalog | PostgresCatalog]:
    catalog = await opener.open()
    yield catalog
    await catalog.close()


def new_session(
    session_id: str = "s1",
    *,
    state: SessionState = SessionState.OPEN,
    created_at: datetime = NOW,
    expires_at: datetime | None = None,
) -> UploadSession:
    return UploadSession(
        id=session_id,
        user_id="alice",
        filename="clip.mp4",
        content_type="video/mp4",
        size=12 * MiB + 5,
        chunk_size=5 * MiB,
        total_chunks=3,
        sha256="ab" * 32,
        storage=StorageKind.S3,
        key=f"media/alice/m-{session_id}/clip.mp4",
        upload_id=f"upload-{session_id}",
        state=state,
        created_at=created_at,
        expires_at=expires_at or created_at + timedelta(hours=1),
        media_id=f"m-{session_id}",
    )


def new_chunk(number: int, etag: str = "etag", storage: StorageKind = StorageKind.S3) -> Chunk:
    return Chunk(number=number, size=5 * MiB, storage=storage, etag=f"{etag}-{number}", md5="m")


def new_media(
    media_id: str,
    *,
    user_id: str = "alice",
    created_at: datetime = NOW,
    storage: StorageKind = StorageKind.LOCAL,
    state: MediaState = MediaState.READY,
) -> Media:
    return Media(
        id=media_id,
        user_id=user_id,
        filename="clip.mp4",
        content_type="video/mp4",
        size=42,
        checksum="sha256:" + "cd" * 32,
        storage=storage,
        key=f"media/{user_id}/{media_id}/clip.mp4",
        created_at=created_at,
        state=state,
    )


async def test_a_session_reads_back_as_written_in_utc(catalog):
    written = new_session(created_at=NOW.astimezone(timezone(timedelta(hours=2))))
    await catalog.add_session(written)

    read = await catalog.get_session("s1")

    assert read == written
    assert read.created_at.utcoffset() == timedelta(0)
    assert await catalog.get_session("nope") is None


async def test_chunks_are_counted_replaced_and_listed_by_number(catalog):
    await catalog.add_session(new_session())

    assert await catalog.put_chunk("s1", new_chunk(2)) == 1
    assert await catalog.put_chunk("s1", new_chunk(0)) == 2
    assert await catalog.put_chunk("s1", new_chunk(0, etag="retried")) == 2

    assert await catalog.chunks("s1") == [new_chunk(0, etag="retried"), new_chunk(2)]
    await catalog.drop_chunk("s1", 2)
    assert await catalog.chunks("s1") == [new_chunk(0, etag="retried")]


async def test_a_chunk_of_a_deleted_session_is_not_found_and_its_chunks_go_too(catalog):
    await catalog.add_session(new_session())
    await catalog.put_chunk("s1", new_chunk(0))

    await catalog.delete_session("s1")

    assert await catalog.chunks("s1") == []
    with pytest.raises(NotFound):
        await catalog.put_chunk("s1", new_chunk(1))


async def test_replace_upload_forgets_the_chunks_reopens_and_says_why(catalog):
    await catalog.add_session(new_session(state=SessionState.FINALIZING))
    await catalog.put_chunk("s1", new_chunk(0))
    await catalog.complete_session("s1", new_media("m-s1", state=MediaState.FINALIZING))

    await catalog.replace_upload("s1", "fresh-upload", error="the SHA-256 did not match")

    session = await catalog.get_session("s1")
    assert (session.upload_id, session.state) == ("fresh-upload", SessionState.OPEN)
    assert session.last_error == "the SHA-256 did not match"
    assert await catalog.chunks("s1") == []
    media = await catalog.get_media("m-s1")
    assert (media.state, media.error) == (MediaState.FAILED, "the SHA-256 did not match")


async def test_note_error_marks_the_session_and_its_media_until_complete_clears_it(catalog):
    await catalog.add_session(new_session())
    await catalog.note_error("s1", "no media yet")
    assert (await catalog.get_session("s1")).last_error == "no media yet"
    await catalog.complete_session("s1", new_media("m-s1", state=MediaState.FINALIZING))
    assert (await catalog.get_session("s1")).last_error is None
    await catalog.note_error("s1", "S3 refused the part")
    assert (await catalog.get_media("m-s1")).error == "S3 refused the part"
    await catalog.complete_session("s1", new_media("m-s1"))
    assert (await catalog.get_session("s1")).last_error is None


async def test_name_session_renames_an_open_session_only(catalog):
    await catalog.add_session(new_session())
    await catalog.name_session("s1", "s1.webm", "video/webm")
    named = await catalog.get_session("s1")
    assert (named.filename, named.content_type) == ("s1.webm", "video/webm")
    assert named.key == "media/alice/m-s1/clip.mp4"  # the key stays
    await catalog.add_session(new_session("s2", state=SessionState.COMPLETED))
    await catalog.name_session("s2", "s2.webm", "video/webm")
    assert (await catalog.get_session("s2")).filename == "clip.mp4"


async def test_drop_chunk_forgets_only_chunks_of_an_open_session(catalog):
    await catalog.add_session(new_session())
    await catalog.add_session(new_session("s2"))
    for session_id in ("s1", "s2"):
        await catalog.put_chunk(session_id, new_chunk(0))
        await catalog.put_chunk(session_id, new_chunk(1))
    await catalog.complete_session("s2", new_media("m-s2", state=MediaState.FINALIZING))

    await catalog.drop_chunk("s1", 1)
    await catalog.drop_chunk("s1", 2)  # never recorded: nothing happens
    await catalog.drop_chunk("s2", 1)  # finalizing: it needs every chunk

    assert [chunk.number for chunk in await catalog.chunks("s1")] == [0]
    assert [chunk.number for chunk in await catalog.chunks("s2")] == [0, 1]


async def test_open_and_finalizing_sessions_are_counted_per_user(catalog):
    await catalog.add_session(new_session("s1"))
    await catalog.add_session(new_session("s2", state=SessionState.FINALIZING))
    await catalog.add_session(new_session("s3", state=SessionState.COMPLETED))
    await catalog.add_session(new_session("s4", state=SessionState.EXPIRED))
    assert await catalog.count_open_sessions("alice") == 2
    assert await catalog.count_open_sessions("bob") == 0


async def test_a_tus_upload_keeps_its_metadata_and_its_length_is_set_once(catalog):
    await catalog.add_session(new_session())
    upload = TusUpload(session_id="s1", metadata="filename Y2xpcC5tcDQ=", length_deferred=True)
    await catalog.add_tus_upload(upload)
    assert await catalog.get_tus_upload("s1") == upload
    assert await catalog.get_tus_upload("nope") is None

    await catalog.set_length("s1", 11 * MiB, 3)

    session = await catalog.get_session("s1")
    assert (session.size, session.total_chunks) == (11 * MiB, 3)
    assert (await catalog.get_tus_upload("s1")).length_deferred is False


async def test_each_partial_upload_is_taken_by_one_live_final(catalog):
    for session_id in ("p1", "p2", "p3", "f1", "f2"):
        await catalog.add_session(new_session(session_id))
        concat = "partial" if session_id.startswith("p") else "final;"
        await catalog.add_tus_upload(TusUpload(session_id=session_id, concat=concat))

    assert await catalog.take_partials("f1", ["p1", "p2"]) is True
    assert await catalog.take_partials("f2", ["p2", "p3"]) is False  # all or none
    assert await catalog.take_partials("f2", ["p3"]) is True  # p3 was left free
    assert await catalog.take_partials("f1", ["p1", "p2"]) is True  # its own again
    assert await catalog.set_session_state("f1", SessionState.COMPLETED, expected=OPEN)
    assert await catalog.take_partials("f2", ["p1"]) is False  # a completed final keeps them
    assert await catalog.set_session_state(
        "f1", SessionState.EXPIRED, expected=SessionState.COMPLETED
    )
    assert await catalog.take_partials("f2", ["p1"]) is True  # an expired one does not
    await catalog.delete_session("f2")
    assert await catalog.take_partials("f1", ["p1", "p3"]) is True  # nor one gone


async def test_a_length_set_later_forgets_the_chunks_past_it(catalog):
    """Issue 14 item 5: rows past the new end (native-numbered or at a tus offset) go."""
    await catalog.add_session(new_session())
    await catalog.add_tus_upload(TusUpload(session_id="s1", length_deferred=True))
    kept = new_chunk(0)  # 0 .. 5 MiB
    tus_part = Chunk(number=1, size=6 * MiB, storage=StorageKind.S3, etag="e", start=5 * MiB)
    for chunk in (kept, tus_part, new_chunk(2)):  # new_chunk(2): 10 .. 15 MiB
        await catalog.put_chunk("s1", chunk)

    await catalog.set_length("s1", 10 * MiB, 2)

    assert await catalog.chunks("s1") == [kept]


async def test_pending_chunks_count_once_their_patch_records_its_tail(catalog):
    """Issue 14 item 1: a checksummed PATCH's parts count nowhere until it matched."""
    await catalog.add_session(new_session())
    await catalog.add_tus_upload(TusUpload(session_id="s1"))
    counted = Chunk(number=0, size=5 * MiB, storage=StorageKind.S3, etag="a", start=0)
    await catalog.put_chunk("s1", counted)
    pending = [
        Chunk(number=n, size=5 * MiB, storage=StorageKind.S3, etag="b", start=n * 5 * MiB)
        for n in (1, 2)
    ]
    for chunk in pending:
        assert await catalog.put_chunk("s1", chunk.model_copy(update={"pending": "p1"})) == 1
    other = pending[1].model_copy(update={"number": 3, "pending": "p0"})  # a PATCH that failed
    await catalog.put_chunk("s1", other)
    assert await catalog.chunks("s1") == [counted]

    await catalog.record_tail("s1", start=15 * MiB, size=7, storage=StorageKind.S3, pending="p1")

    assert await catalog.chunks("s1") == [counted, *pending]
    upload = await catalog.get_tus_upload("s1")
    assert (upload.tail_start, upload.tail_size, upload.tail_storage) == (15 * MiB, 7, "s3")


async def test_complete_session_records_finalizing_then_ready_media(catalog):
    await catalog.add_session(new_session())
    await catalog.put_chunk("s1", new_chunk(0, storage=StorageKind.LOCAL))
    finalizing = new_media("m-s1", storage=StorageKind.S3, state=MediaState.FINALIZING)

    await catalog.complete_session("s1", finalizing)

    assert (await catalog.get_session("s1")).state is SessionState.FINALIZING
    assert await catalog.get_media("m-s1") == finalizing
    assert len(await catalog.chunks("s1")) == 1

    ready = finalizing.model_copy(update={"state": MediaState.READY, "checksum": "etag:x"})
    await catalog.complete_session("s1", ready)

    assert (await catalog.get_session("s1")).state is SessionState.COMPLETED
    assert await catalog.get_media("m-s1") == ready
    assert await catalog.chunks("s1") == []


async def test_sessions_by_state_and_expiry(catalog):
    later = new_session("later", created_at=NOW + timedelta(minutes=1), expires_at=NOW)
    now = new_session("now", created_at=NOW, expires_at=NOW)
    future = new_session("future", expires_at=NOW + timedelta(microseconds=1))
    done = new_session("done", state=SessionState.COMPLETED, expires_at=NOW - timedelta(days=1))
    for session in (later, now, future, done):
        await catalog.add_session(session)

    open_ids = [s.id for s in await catalog.sessions_in_state(SessionState.OPEN)]
    assert open_ids[-1] == "later" and sorted(open_ids) == ["future", "later", "now"]
    assert {s.id for s in await catalog.expired_sessions(NOW)} == {"later", "now"}

    assert await catalog.set_session_state("now", SessionState.EXPIRED, expected=OPEN)
    assert await catalog.count_sessions(SessionState.OPEN) == 2
    assert [s.id for s in await catalog.expired_sessions(NOW)] == ["later"]
    assert [s.id for s in await catalog.sessions_in_state(SessionState.EXPIRED)] == ["now"]


async def test_of_two_racing_state_changes_of_a_session_only_one_wins(outbox):
    """Expiry and a finish racing from `open`: one changes the session, the other
    finds it gone from the state it expected and changes nothing, nor writes an event."""
    ids = [f"r{number}" for number in range(8)]
    for session_id in ids:
        await outbox.add_session(new_session(session_id))

    async def race(session_id: str) -> tuple[bool, bool]:
        expired, finalizing = await asyncio.gather(
            outbox.set_session_state(session_id, SessionState.EXPIRED, expected=OPEN),
            outbox.set_session_state(session_id, SessionState.FINALIZING, expected=OPEN),
        )
        return expired, finalizing

    results = dict(zip(ids, await asyncio.gather(*(race(i) for i in ids)), strict=True))
    for session_id, (expired, finalizing) in results.items():
        assert expired != finalizing, session_id
        winner = SessionState.EXPIRED if expired else SessionState.FINALIZING
        assert (await outbox.get_session(session_id)).state is winner
    events = [d for d in await pending(outbox) if d.type == "upload.expired"]
    expired_media = [f"m-{session_id}" for session_id, (won, _) in results.items() if won]
    assert sorted(d.media_id for d in events) == sorted(expired_media * len(HOOKS))
    # A finish racing an expiry: the expiry wins and the finish changes nothing, or
    # the finish wins and the expiry finds the session no longer open.
    for number in range(8):
        session_id = f"c{number}"
        await outbox.add_session(new_session(session_id))
        completed, expired = await asyncio.gather(
            outbox.complete_session(session_id, new_media(f"m-{session_id}")),
            outbox.set_session_state(session_id, SessionState.EXPIRED, expected=OPEN),
            return_exceptions=True,
        )
        session = await outbox.get_session(session_id)
        if expired is True:
            assert isinstance(completed, SessionExpired)
            assert session.state is SessionState.EXPIRED
            assert await outbox.get_media(f"m-{session_id}") is None
        else:
            assert (completed, expired) == (None, False)
            assert session.state is SessionState.COMPLETED
    # A change is from a state it names, never a state to itself.
    with pytest.raises(ValueError):
        await outbox.set_session_state("r0", SessionState.EXPIRED, expected=SessionState.EXPIRED)


async def test_list_media_pages_newest_first_without_gaps_or_repeats(catalog):
    times = [NOW, NOW, NOW - timedelta(seconds=1), NOW + timedelta(seconds=1), NOW]
    for number, created_at in enumerate(times):
        await catalog.add_media(new_media(f"m{number}", created_at=created_at))
    await catalog.add_media(new_media("theirs", user_id="bob"))

    seen: list[str] = []
    before = None
    for _ in range(10):
        page = await catalog.list_media("alice", 2, before)
        if not page:
            break
        seen += [media.id for media in page]
        before = (page[-1].created_at, page[-1].id)

    assert seen == ["m3", "m4", "m1", "m0", "m2"]


async def test_add_media_refuses_an_id_that_is_taken(catalog):
    assert await catalog.add_media(new_media("m1")) is True
    assert await catalog.add_media(new_media("m1", user_id="bob")) is False
    assert (await catalog.get_media("m1")).user_id == "alice"


async def test_move_media_is_a_compare_and_set(catalog):
    await catalog.add_media(new_media("m1"))
    await catalog.add_media(new_media("busy", state=MediaState.FINALIZING))
    move = {"source": StorageKind.LOCAL, "target": StorageKind.S3, "checksum": "sha256:new"}

    assert await catalog.move_media("m1", **move) is True
    assert await catalog.move_media("m1", **move) is False
    assert await catalog.move_media("busy", **move) is False
    assert await catalog.move_media("gone", **move) is False

    moved = await catalog.get_media("m1")
    assert (moved.storage, moved.checksum) == (StorageKind.S3, "sha256:new")


async def test_media_in_storage_pages_by_id(catalog):
    for media_id in ("c", "a", "d", "b"):
        await catalog.add_media(new_media(media_id, user_id="bob" if media_id == "d" else "alice"))
    await catalog.add_media(new_media("e", storage=StorageKind.S3))
    await catalog.add_media(new_media("f", state=MediaState.FINALIZING))

    def ids(media: list[Media]) -> list[str]:
        return [item.id for item in media]

    local, s3 = StorageKind.LOCAL, StorageKind.S3
    everyones = await catalog.media_in_storage(local, user_id=None, after=None, limit=3)
    assert ids(everyones) == ["a", "b", "c"]
    assert ids(await catalog.media_in_storage(local, user_id=None, after="c", limit=3)) == ["d"]
    alices = await catalog.media_in_storage(local, user_id="alice", after="a", limit=9)
    assert ids(alices) == ["b", "c"]
    assert ids(await catalog.media_in_storage(s3, user_id=None, after=None, limit=9)) == ["e"]


async def test_probing_is_recorded_once_and_the_unprobed_ready_media_are_found(catalog):
    for media_id, minutes in (("new", 2), ("old", 1), ("probed", 0)):
        await catalog.add_media(new_media(media_id, created_at=NOW + timedelta(minutes=minutes)))
    await catalog.add_media(new_media("busy", state=MediaState.FINALIZING))
    facts = '{"kind": "video"}'
    probed = (await catalog.get_media("probed")).model_copy(
        update={"facts": facts, "poster_key": "media/alice/probed/.poster.jpg"}
    )
    assert await catalog.record_probe(probed) is True
    assert [m.id for m in await catalog.unprobed_media(10)] == ["old", "new"]
    assert [m.id for m in await catalog.unprobed_media(1)] == ["old"]

    failed = (await catalog.get_media("old")).model_copy(update={"probe_error": "no stream"})
    assert await catalog.record_probe(failed) is True
    # Once: a second probe of either (another instance's) changes nothing.
    assert await catalog.record_probe(failed.model_copy(update={"probe_error": "x"})) is False
    assert await catalog.record_probe(probed.model_copy(update={"facts": None})) is False
    assert await catalog.record_probe(new_media("gone")) is False
    assert [m.id for m in await catalog.unprobed_media(10)] == ["new"]

    got = await catalog.get_media("probed")
    assert (got.facts, got.probe_error, got.poster_key) == (facts, None, probed.poster_key)
    assert (await catalog.get_media("old")).probe_error == "no stream"


async def test_deleted_media_is_gone_and_ping_answers(catalog):
    await catalog.add_media(new_media("m1"))
    await catalog.delete_media("m1")
    assert await catalog.get_media("m1") is None
    await catalog.ping()


async def test_the_settings_choose_the_catalog(opener, tmp_path):
    settings = make_settings(tmp_path / "data", database_url=opener.url)
    async with open_catalog(settings) as catalog:
        await catalog.add_media(new_media("m1"))
        kind = type(catalog)
    assert kind is (SQLiteCatalog if opener.kind == "sqlite" else PostgresCatalog)
    assert (tmp_path / "data" / CATALOG_FILE).exists() == (opener.kind == "sqlite")


# --- schema versions -----------------------------------------------------------------


async def test_a_new_catalog_is_made_at_the_latest_version_once(opener):
    first = await opener.open()
    await first.add_media(new_media("m1"))
    await first.close()
    again = await opener.open()
    await again.close()

    assert first.schema_upgrade == SchemaUpgrade(0, len(opener.migrations))
    latest = len(opener.migrations)
    assert again.schema_upgrade == SchemaUpgrade(latest, latest)


async def test_instances_starting_together_upgrade_once(opener):
    catalogs = await asyncio.gather(opener.open(), opener.open())
    for catalog in catalogs:
        await catalog.close()

    latest = len(opener.migrations)
    assert sorted(catalog.schema_upgrade.before for catalog in catalogs) == [0, latest]


async def test_a_later_step_runs_once_keeps_the_rows_and_older_code_refuses(opener):
    catalog = await opener.open()
    await catalog.add_media(new_media("m1"))
    await catalog.close()
    latest = len(opener.migrations)
    step = ("CREATE TABLE notes (media_id TEXT PRIMARY KEY, note TEXT NOT NULL)",)

    upgraded = await opener.open([*opener.migrations, step])
    assert await upgraded.get_media("m1") == new_media("m1")
    await upgraded.close()
    reopened = await opener.open([*opener.migrations, step])
    await reopened.close()

    assert upgraded.schema_upgrade == SchemaUpgrade(latest, latest + 1)
    assert reopened.schema_upgrade == SchemaUpgrade(latest + 1, latest + 1)
    with pytest.raises(SchemaTooNew, match=f"version {latest + 1}"):
        await opener.open()


async def test_tus_uploads_made_before_sessions_knew_their_protocol_are_tus(opener):
    """Their native chunk calls are refused from the upgrade on, as a new upload's are."""
    old = await opener.open(opener.migrations[:3])
    await old.close()
    rows = [
        "INSERT INTO sessions (id, user_id, filename, content_type, size, chunk_size, "
        "total_chunks, storage, key, upload_id, state, created_at, expires_at, media_id) "
        f"VALUES ('{session_id}', 'alice', 'a.mp4', 'video/mp4', 3, 5242880, 1, 'local', "
        f"'media/alice/m/a.mp4', 'u-{session_id}', 'open', '2026-01-02T03:04:05Z', "
        f"'2026-01-03T03:04:05Z', 'm-{session_id}')"
        for session_id in ("native", "tus")
    ]
    rows.append(
        "INSERT INTO tus_uploads (session_id, metadata, length_deferred) VALUES ('tus', '', false)"
    )
    if opener.url is None:
        with sqlite3.connect(opener.path) as db:
            for row in rows:
                db.execute(row)
        db.close()
    else:
        with psycopg.connect(opener.url) as db:
            for row in rows:
                db.execute(row)

    catalog = await opener.open()
    try:
        assert (await catalog.get_session("tus")).protocol is UploadProtocol.TUS
        assert (await catalog.get_session("native")).protocol is UploadProtocol.NATIVE
    finally:
        await catalog.close()


# The schema of the first release, which kept no version: copied here as it was.
PREVIOUS_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    total_chunks INTEGER NOT NULL,
    sha256 TEXT,
    storage TEXT NOT NULL,
    key TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    media_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (state, expires_at);
CREATE TABLE IF NOT EXISTS chunks (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    size INTEGER NOT NULL,
    storage TEXT NOT NULL,
    etag TEXT NOT NULL,
    md5 TEXT,
    sha256 TEXT,
    PRIMARY KEY (session_id, number)
);
CREATE TABLE IF NOT EXISTS media (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    checksum TEXT,
    storage TEXT NOT NULL,
    key TEXT NOT NULL,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS media_by_user ON media (user_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS media_by_storage ON media (storage, id);
"""


def make_previous_sqlite_catalog(path: Path) -> None:
    """A catalog as the first release left it, holding a session, a chunk and a media."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.executescript(PREVIOUS_SQLITE_SCHEMA)
        db.execute(
            "INSERT INTO sessions VALUES ('s1', 'alice', 'clip.mp4', 'video/mp4', 12582917, "
            "5242880, 3, NULL, 's3', 'media/alice/m-s1/clip.mp4', 'up-1', 'open', "
            "'2026-01-02T03:04:05.678901Z', '2026-01-02T04:04:05.678901Z', 'm-s1')"
        )
        db.execute("INSERT INTO chunks VALUES ('s1', 0, 5242880, 's3', 'etag-0', 'm', NULL)")
        db.execute(
            "INSERT INTO media VALUES ('m1', 'alice', 'clip.mp4', 'video/mp4', 42, "
            f"'sha256:{'cd' * 32}', 'local', 'media/alice/m1/clip.mp4', "
            "'2026-01-02T03:04:05.678901Z', 'ready')"
        )
    db.close()


async def test_a_sqlite_catalog_of_the_first_release_is_adopted_with_its_rows(tmp_path):
    path = tmp_path / CATALOG_FILE
    make_previous_sqlite_catalog(path)

    catalog = await SQLiteCatalog.open(path)
    try:
        assert catalog.schema_upgrade == SchemaUpgrade(0, len(sqlite.MIGRATIONS))
        session = await catalog.get_session("s1")
        assert (session.upload_id, session.created_at) == ("up-1", NOW)
        assert await catalog.chunks("s1") == [new_chunk(0)]
        assert await catalog.get_media("m1") == new_media("m1")
        assert await catalog.put_chunk("s1", new_chunk(1)) == 2
        assert session.last_error is None  # a column of version 2, added to the old rows
        await catalog.note_error("s1", "why")
        assert (await catalog.get_session("s1")).last_error == "why"
    finally:
        await catalog.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(sqlite.MIGRATIONS)
    db.close()


def test_db_upgrade_command_upgrades_and_then_has_nothing_to_do(tmp_path):
    data_dir = tmp_path / "data"
    make_previous_sqlite_catalog(data_dir / CATALOG_FILE)

    def upgrade() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mediagate", "db", "upgrade"],
            env={"MEDIAGATE_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    first, second = upgrade(), upgrade()
    assert (first.returncode, first.stdout.strip()) == (
        0,
        f"catalog schema upgraded from version 0 to {len(sqlite.MIGRATIONS)}",
    )
    assert "nothing to do" in second.stdout


# --- PostgreSQL: round trips per method -----------------------------------------------

Call = Callable[[PostgresCatalog], Awaitable[object]]

SINGLE_STATEMENT_READS: list[tuple[str, Call]] = [
    ("get_media", lambda catalog: catalog.get_media("m-s1")),
    ("get_session", lambda catalog: catalog.get_session("s1")),
    ("chunks", lambda catalog: catalog.chunks("s1")),
    ("get_tus_upload", lambda catalog: catalog.get_tus_upload("s1")),
    ("list_media", lambda catalog: catalog.list_media("alice", 10, (NOW, "m"))),
    ("count_open_sessions", lambda catalog: catalog.count_open_sessions("alice")),
    ("count_sessions", lambda catalog: catalog.count_sessions(SessionState.OPEN)),
    ("sessions_in_state", lambda catalog: catalog.sessions_in_state(SessionState.OPEN)),
    ("expired_sessions", lambda catalog: catalog.expired_sessions(NOW)),
    (
        "media_in_storage",
        lambda catalog: catalog.media_in_storage(
            StorageKind.LOCAL, user_id="alice", after=None, limit=10
        ),
    ),
    ("ping", lambda catalog: catalog.ping()),
]


@pytest.fixture
async def counted(postgres_server) -> AsyncIterator[tuple[PostgresCatalog, list[str]]]:
    """A PostgreSQL catalog with a session, its chunk and media, reached through a proxy
    that records the statements of each round trip (recorded from now on)."""
    async with round_trips(postgres_server.port) as proxy:
        # One connection, so that every call after the first borrows a returned one.
        url = proxy.url(postgres_server.new_database())
        catalog = await PostgresCatalog.open(url, pool_size=1)
        await catalog.add_session(new_session("s1"))
        await catalog.put_chunk("s1", new_chunk(0))
        await catalog.add_tus_upload(TusUpload(session_id="s1", metadata="", length_deferred=False))
        await catalog.add_media(new_media("m-s1"))
        proxy.statements.clear()
        try:
            yield catalog, proxy.statements
        finally:
            await catalog.close()


@pytest.mark.parametrize(
    "read", [call for _, call in SINGLE_STATEMENT_READS], ids=[n for n, _ in SINGLE_STATEMENT_READS]
)
async def test_a_postgres_read_of_one_statement_is_one_round_trip(counted, read):
    catalog, statements = counted
    for _ in range(3):
        await read(catalog)
    # No BEGIN/COMMIT around it, and no check of the borrowed connection.
    assert len(statements) == 3
    assert all(statement.startswith("SELECT ") for statement in statements), statements


async def test_a_postgres_method_of_several_statements_stays_one_transaction(counted):
    catalog, statements = counted
    await catalog.replace_upload("s1", "upload-2", error="S3 lost the upload")
    assert (statements[0], len(statements), statements[-1]) == ("BEGIN", 5, "COMMIT")

    statements.clear()
    with pytest.raises(NotFound):
        await catalog.put_chunk("gone", new_chunk(0))
    assert (statements[0], statements[-1]) == ("BEGIN", "ROLLBACK")


async def test_a_postgres_connection_idle_for_long_is_checked_before_it_is_lent(
    counted, monkeypatch
):
    catalog, statements = counted
    monkeypatch.setattr(postgres, "IDLE_CHECK", 0.0)
    await catalog.get_media("m-s1")
    assert statements[0] == ""  # psycopg_pool's check: an empty query
    assert len(statements) == 2 and statements[1].startswith("SELECT ")


async def test_postgres_connections_the_server_closed_are_replaced_on_borrow(postgres_server):
    catalog = await PostgresCatalog.open(postgres_server.new_database(), pool_size=2)
    try:
        await catalog.add_media(new_media("m1"))
        postgres_server.stop()  # every connection of the pool is closed by the server
        postgres_server.start()
        # The first borrow finds its connection closed and takes a new one: no error.
        async with asyncio.timeout(30):
            assert (await catalog.get_media("m1")) == new_media("m1")
    finally:
        await catalog.close()


# --- a PostgreSQL outage, through the HTTP API -----------------------------------------


async def test_postgres_outage_is_503_catalog_unavailable_and_never_an_s3_outage(
    start_api, postgres_server, tmp_path, moto_endpoint, bucket, s3_objects
):
    settings = make_settings(
        tmp_path / "data",
        use_cloud_storage=True,
        s3_bucket=bucket,
        s3_endpoint_url=moto_endpoint,
        database_url=postgres_server.new_database(),
        database_timeout=0.5,
    )
    api = await start_api(settings)
    data = bytes(range(256)) * (40 * 1024) + b"tail"  # two chunks of 5 MiB and a tail
    session = await (await api.initiate(size=len(data), chunk_size=5 * MiB)).json()
    session_id = session["session_id"]
    pieces = chunks_of(data, 5 * MiB)
    assert (await api.put_chunk(session_id, 0, pieces[0])).status == 200

    postgres_server.stop()
    try:
        refused = await api.put_chunk(session_id, 1, pieces[1])
        problem = await refused.json()
        assert (refused.status, problem["type"].rsplit("/", 1)[-1]) == (503, "catalog-unavailable")
        assert refused.headers["Retry-After"] == "2"
        ready = await api.client.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["s3"] == "ok"
    finally:
        postgres_server.start()

    async with asyncio.timeout(20):
        while (await api.client.get("/readyz")).status != 200:
            await asyncio.sleep(0.2)
    # The S3 breaker was never fed the catalog's failure: S3 stayed "ok" throughout.
    ready = await (await api.client.get("/readyz")).json()
    assert (ready["catalog"], ready["s3"]) == ("ok", "ok")
    for number in (1, 2):
        assert (await api.put_chunk(session_id, number, pieces[number])).status == 200
    done = await api.complete(session_id)
    assert done.status == 201, await done.text()
    media = await done.json()
    assert media["info"]["storage"] == "s3"  # no chunk went to local disk
    key = f"media/alice/{media['media_id']}/video.mp4"
    assert await read_object(s3_objects, bucket, key) == data


def test_serve_stops_in_one_line_when_postgresql_cannot_be_reached(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mediagate", "serve", "--port", "0"],
        env={
            "MEDIAGATE_DATABASE_URL": f"postgresql://mediagate:pw@127.0.0.1:{free_port()}/db",
            "MEDIAGATE_JWT_SECRET": "a-secret-shared-by-every-instance",
            "MEDIAGATE_DATA_DIR": str(tmp_path / "data"),
            "MEDIAGATE_LOG_FORMAT": "json",
            "PATH": "/usr/bin:/bin",
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mediagate: cannot connect to the PostgreSQL catalog")
    assert "Connection refused" in last and "pw" not in last
    assert "Traceback" not in result.stderr


HOOKS = ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b")


@pytest.fixture
async def outbox(opener: Opener) -> AsyncIterator[SQLiteCatalog | PostgresCatalog]:
    """A catalog that writes events for two webhook endpoints."""
    catalog = await opener.open(endpoints=HOOKS)
    yield catalog
    await catalog.close()


async def pending(catalog: SQLiteCatalog | PostgresCatalog) -> list[Delivery]:
    return await catalog.events_in_state(DeliveryState.PENDING, 1000)


async def test_each_commit_that_wrote_an_event_wakes_the_sender(outbox):
    woken: list[str] = []
    outbox.on_events_written(lambda: woken.append("woken"))
    await outbox.add_session(new_session())
    assert len(woken) == 1
    await outbox.complete_session("s1", new_media("m-s1"))
    assert len(woken) == 2


async def test_each_state_change_writes_its_event_once_per_endpoint_in_order(outbox):
    await outbox.add_session(new_session())
    await outbox.complete_session("s1", new_media("m-s1", state=MediaState.FINALIZING))
    await outbox.replace_upload("s1", "fresh", error="the SHA-256 did not match")
    await outbox.complete_session("s1", new_media("m-s1"))
    with pytest.raises(SessionNotOpen):  # again: completed, nothing changes nor is announced
        await outbox.complete_session("s1", new_media("m-s1"))
    assert await outbox.move_media(
        "m-s1", source=StorageKind.LOCAL, target=StorageKind.S3, checksum="sha256:" + "ef" * 32
    )
    await outbox.delete_media("m-s1")
    await outbox.delete_media("m-s1")  # gone already: nothing to report
    await outbox.add_session(new_session("s2"))
    assert await outbox.set_session_state("s2", SessionState.EXPIRED, expected=OPEN)
    assert not await outbox.set_session_state("s2", SessionState.EXPIRED, expected=OPEN)

    deliveries = await pending(outbox)
    for endpoint in HOOKS:
        mine = [delivery for delivery in deliveries if delivery.endpoint == endpoint]
        assert [(d.media_id, d.type) for d in mine] == [
            ("m-s1", "upload.created"),
            ("m-s1", "media.failed"),
            ("m-s1", "media.ready"),
            ("m-s1", "media.migrated"),
            ("m-s1", "media.deleted"),
            ("m-s2", "upload.created"),
            ("m-s2", "upload.expired"),
        ]
    by_type = {d.type: json.loads(d.body) for d in deliveries}
    assert by_type["media.failed"]["data"]["reason"] == "the SHA-256 did not match"
    ready = by_type["media.ready"]
    assert ready["type"] == "media.ready"
    assert ready["data"] == {
        "media_id": "m-s1",
        "user_id": "alice",
        "filename": "clip.mp4",
        "size": 42,
        "content_type": "video/mp4",
        "storage": "local",
        "sha256": "cd" * 32,
        "upload_id": "s1",
        "protocol": "native",
        "app_metadata": None,
        "media": None,
        "probe_error": None,
    }
    assert by_type["media.migrated"]["data"]["storage"] == "s3"
    assert by_type["media.migrated"]["data"]["sha256"] == "ef" * 32
    # The same event has the same id at every endpoint, and a different one from the others.
    assert len({d.id for d in deliveries}) == len(deliveries) // 2


async def test_without_endpoints_no_event_is_written(catalog):
    await catalog.add_session(new_session())
    await catalog.complete_session("s1", new_media("m-s1"))
    await catalog.delete_media("m-s1")
    assert await catalog.count_events() == {}


async def test_a_rolled_back_change_writes_no_event(outbox):
    await outbox.add_session(new_session())
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.UniqueViolation)):
        await outbox.add_session(new_session())
    assert [d.type for d in await pending(outbox)] == ["upload.created"] * 2


async def test_claims_take_the_first_pending_event_of_each_media_and_hold_it(outbox):
    await outbox.add_session(new_session())
    await outbox.complete_session("s1", new_media("m-s1"))
    await outbox.add_session(new_session("s2"))
    now = datetime.now(UTC) + timedelta(seconds=1)

    first = await outbox.claim_events(now, hold=60, limit=10)
    assert [(d.media_id, d.type) for d in first] == [("m-s1", "upload.created")] * 2 + [
        ("m-s2", "upload.created")
    ] * 2
    assert await outbox.claim_events(now, hold=60, limit=10) == []  # held, and in order

    for delivery in first:
        if delivery.media_id == "m-s1":
            await outbox.settle_event(
                delivery.seq, DeliveryState.DELIVERED, next_at=None, error=None
            )
    second = await outbox.claim_events(now, hold=60, limit=10)
    assert [(d.media_id, d.type) for d in second] == [("m-s1", "media.ready")] * 2

    # A retried one is due again at its next_at; a dead one is requeued by its id.
    retried, dead = second
    await outbox.settle_event(retried.seq, DeliveryState.PENDING, next_at=now, error="503")
    await outbox.settle_event(dead.seq, DeliveryState.DEAD, next_at=None, error="503")
    assert [d.seq for d in await outbox.claim_events(now, hold=60, limit=10)] == [retried.seq]
    assert [d.seq for d in await outbox.events_in_state(DeliveryState.DEAD, 10)] == [dead.seq]
    assert (await outbox.count_events())[DeliveryState.DEAD] == 1
    assert await outbox.requeue_event(dead.id, now) == 1
    again = await outbox.claim_events(now, hold=60, limit=10)
    assert [(d.seq, d.attempts) for d in again] == [(dead.seq, 0)]


async def test_prune_forgets_done_deliveries_of_old_events_only(outbox):
    await outbox.add_session(new_session())
    await outbox.add_session(new_session("s2"))
    now = datetime.now(UTC) + timedelta(seconds=1)
    claimed = await outbox.claim_events(now, hold=60, limit=10)
    done, gone, dead, retried = claimed
    await outbox.settle_event(done.seq, DeliveryState.DELIVERED, next_at=None, error=None)
    await outbox.settle_event(gone.seq, DeliveryState.GONE, next_at=None, error="410")
    await outbox.settle_event(dead.seq, DeliveryState.DEAD, next_at=None, error="503")
    await outbox.settle_event(retried.seq, DeliveryState.PENDING, next_at=now, error="503")

    assert await outbox.prune_events(now - timedelta(hours=1)) == 0  # not old enough
    assert await outbox.prune_events(now) == 2
    assert await outbox.count_events() == {DeliveryState.DEAD: 1, DeliveryState.PENDING: 1}


async def test_two_claimers_at_once_take_different_events(outbox, opener):
    for number in range(20):
        await outbox.add_session(new_session(f"s{number}"))
    other = await opener.open(endpoints=HOOKS)
    try:
        now = datetime.now(UTC) + timedelta(seconds=1)
        batches = await asyncio.gather(
            *(
                catalog.claim_events(now, hold=60, limit=15)
                for catalog in (outbox, other, outbox, other)
            )
        )
    finally:
        await other.close()
    seqs = [d.seq for batch in batches for d in batch]
    assert sorted(seqs) == sorted(set(seqs))
    assert len(seqs) == 40


@pytest.mark.parametrize(
    "endpoints", [(), HOOKS[:1], HOOKS], ids=["no-webhook", "one-webhook", "two-webhooks"]
)
async def test_what_events_cost_an_upload_in_postgres_round_trips(postgres_server, endpoints):
    """The figure for docs/integration.md: an upload's catalog changes (created, then
    completed ready), counted in round trips with and without webhook endpoints."""
    async with round_trips(postgres_server.port) as proxy:
        url = proxy.url(postgres_server.new_database())
        catalog = await PostgresCatalog.open(url, pool_size=1, endpoints=endpoints)
        try:
            await catalog.ping()
            proxy.statements.clear()
            await catalog.add_session(new_session("s1"))
            await catalog.complete_session("s1", new_media("m-s1"))
            counted = list(proxy.statements)
        finally:
            await catalog.close()
    events = [statement for statement in counted if "events" in statement]
    if endpoints:
        # add_session writes its event in the same statement (one round trip still);
        # complete reads the media and the session before it writes media.ready. Each
        # event is one statement whatever the number of endpoints.
        assert len(events) == 2
        assert len(counted) == 10, counted
    else:
        assert events == []
        assert len(counted) == 7, counted
