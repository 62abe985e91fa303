"""SQLite catalog, the embedded default: one file in the data directory.

All statements run on one dedicated thread with one connection, so the event
loop never waits on disk and SQLite never sees two writers. WAL with
synchronous=FULL makes every acknowledged chunk durable across a crash of the
process or the machine; a commit costs about one fsync, small beside a chunk.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from mediagate.catalog.schema import SchemaUpgrade, Step, missing_steps
from mediagate.errors import CatalogUnavailable, NotFound, StorageFull
from mediagate.events import (
    Delivery,
    DeliveryState,
    Event,
    EventType,
    media_event,
    session_event,
)
from mediagate.models import (
    Chunk,
    Media,
    MediaState,
    SessionState,
    StorageKind,
    TusUpload,
    UploadSession,
)

T = TypeVar("T")

# How long a statement waits for another process's lock on the file.
BUSY_TIMEOUT_MS = 5000

# The catalog's file inside the data directory, shared by the server and `mediagate migrate`.
CATALOG_FILE = "catalog.sqlite3"

# Version 1 is the schema of the first release, whose catalogs had no version
# (user_version 0): its IF NOT EXISTS statements adopt such a catalog as it is.
MIGRATIONS: tuple[Step, ...] = (
    (
        """CREATE TABLE IF NOT EXISTS sessions (
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
        )""",
        "CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (state, expires_at)",
        """CREATE TABLE IF NOT EXISTS chunks (
            session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            size INTEGER NOT NULL,
            storage TEXT NOT NULL,
            etag TEXT NOT NULL,
            md5 TEXT,
            sha256 TEXT,
            PRIMARY KEY (session_id, number)
        )""",
        """CREATE TABLE IF NOT EXISTS media (
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
        )""",
        "CREATE INDEX IF NOT EXISTS media_by_user ON media (user_id, created_at DESC, id DESC)",
        "CREATE INDEX IF NOT EXISTS media_by_storage ON media (storage, id)",
    ),
    # Version 2: why a session went back to open or a media failed (last_error,
    # error), the per-user open-session count's index, and tus uploads.
    (
        "ALTER TABLE sessions ADD COLUMN last_error TEXT",
        "ALTER TABLE media ADD COLUMN error TEXT",
        "CREATE INDEX sessions_by_user ON sessions (user_id, state)",
        """CREATE TABLE tus_uploads (
            session_id TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
            metadata TEXT NOT NULL,
            length_deferred INTEGER NOT NULL,
            concat TEXT
        )""",
    ),
    # Version 3: which attempt wrote each chunk (whether a running digest still describes it).
    ("ALTER TABLE chunks ADD COLUMN writer TEXT",),
    # Version 4: which API a session belongs to (its native chunk calls are refused
    # on a tus upload; the tus uploads made before are found by their tus row), which
    # final upload took each partial one, and the tus offset model: parts of any size
    # at a recorded offset, parts of a checksummed PATCH pending until it is verified,
    # and the tail after the parts.
    (
        "ALTER TABLE sessions ADD COLUMN protocol TEXT NOT NULL DEFAULT 'native'",
        "UPDATE sessions SET protocol = 'tus' WHERE id IN (SELECT session_id FROM tus_uploads)",
        # The final upload a partial one was taken by (each partial goes into one final).
        "ALTER TABLE tus_uploads ADD COLUMN part_of TEXT",
        "ALTER TABLE chunks ADD COLUMN start INTEGER",
        "ALTER TABLE chunks ADD COLUMN pending TEXT",
        "ALTER TABLE tus_uploads ADD COLUMN tail_start INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tus_uploads ADD COLUMN tail_size INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tus_uploads ADD COLUMN tail_storage TEXT NOT NULL DEFAULT 's3'",
    ),
    # Version 5: the outbox, one row per event and webhook endpoint (mediagate/events.py).
    (
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            media_id TEXT NOT NULL,
            type TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            next_at TEXT NOT NULL,
            last_error TEXT
        )""",
        "CREATE INDEX events_due ON events (state, next_at)",
        "CREATE INDEX events_by_media ON events (endpoint, media_id, state, seq)",
    ),
    # Version 6: what the application's pre-create hook attached to an upload, as JSON
    # (core/hooks.py), kept on the session and its media.
    (
        "ALTER TABLE sessions ADD COLUMN app_metadata TEXT",
        "ALTER TABLE media ADD COLUMN app_metadata TEXT",
    ),
    # Version 7: what probing found in a media (core/probing.py): its facts as JSON, or
    # why it found nothing, and its poster's key; the ready media not probed yet, found
    # by the background probe.
    (
        "ALTER TABLE media ADD COLUMN facts TEXT",
        "ALTER TABLE media ADD COLUMN probe_error TEXT",
        "ALTER TABLE media ADD COLUMN poster_key TEXT",
        "CREATE INDEX media_unprobed ON media (state, created_at) "
        "WHERE facts IS NULL AND probe_error IS NULL",
    ),
)

SESSION_COLUMNS = list(UploadSession.model_fields)
CHUNK_COLUMNS = list(Chunk.model_fields)
MEDIA_COLUMNS = list(Media.model_fields)
TUS_COLUMNS = list(TusUpload.model_fields)


def _row(model: Any, columns: list[str]) -> tuple[Any, ...]:
    values = model.model_dump()
    return tuple(_sql_value(values[column]) for column in columns)


def _sql_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _timestamp(value)
    if isinstance(value, StrEnum):
        return value.value
    return value


def _placeholders(columns: list[str]) -> str:
    return ", ".join("?" for _ in columns)


class SQLiteCatalog:
    def __init__(
        self, path: Path, migrations: Sequence[Step] = MIGRATIONS, endpoints: Sequence[str] = ()
    ) -> None:
        self._path = path
        self._endpoints = tuple(endpoints)
        self._on_events: Callable[[], None] | None = None
        self._wrote_events = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._migrations = migrations
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog")
        self._db: sqlite3.Connection | None = None
        self.schema_upgrade = SchemaUpgrade(0, 0)

    @classmethod
    async def open(
        cls, path: Path, migrations: Sequence[Step] = MIGRATIONS, endpoints: Sequence[str] = ()
    ) -> SQLiteCatalog:
        """Open (or create) the catalog file and bring its schema up to date.

        With `endpoints` (the webhook URLs), each state change writes its event for each
        of them in its transaction; with none, no event is written."""
        catalog = cls(path, migrations, endpoints)
        catalog._loop = asyncio.get_running_loop()
        try:
            await catalog._run(catalog._connect)
        except BaseException:
            await catalog.close()
            raise
        return catalog

    def _connect(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        _make_private(self._path)
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _use_wal(db)
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        self._db = db
        self._upgrade()

    def _upgrade(self) -> None:
        """Run the missing steps and record the version (PRAGMA user_version) in one transaction.

        BEGIN IMMEDIATE takes the write lock first, so a second process opening the
        catalog meanwhile waits and then finds the steps done."""
        assert self._db is not None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            before = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            after = before
            for after, step in missing_steps(before, self._migrations):
                for statement in step:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {after}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self.schema_upgrade = SchemaUpgrade(before, after)

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, work, *args)
        except sqlite3.OperationalError as error:
            if "full" in str(error):
                raise StorageFull(f"catalog: {error}") from error
            raise CatalogUnavailable(f"catalog: {error}") from error

    def _execute(self, sql: str, *parameters: Any) -> list[sqlite3.Row]:
        assert self._db is not None, "catalog is closed"
        return self._db.execute(sql, parameters).fetchall()

    def _transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        def run(db: sqlite3.Connection) -> None:
            for sql, parameters in statements:
                db.execute(sql, parameters)

        self._atomic(run)

    def _atomic(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` in one transaction, committed if it returns, rolled back if it raises."""
        assert self._db is not None, "catalog is closed"
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = work(self._db)
        except BaseException:
            self._db.execute("ROLLBACK")
            self._wrote_events = False
            raise
        self._db.execute("COMMIT")
        if self._wrote_events:
            self._wrote_events = False
            if self._on_events is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(self._on_events)
        return result

    def on_events_written(self, callback: Callable[[], None]) -> None:
        self._on_events = callback

    def _write_event(self, db: sqlite3.Connection, event: Event) -> None:
        """The event, once per endpoint, in the caller's transaction."""
        self._wrote_events = True
        for endpoint in self._endpoints:
            db.execute(
                "INSERT INTO events (id, endpoint, media_id, type, body, state, created_at, "
                "next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.id,
                    endpoint,
                    event.media_id,
                    event.type.value,
                    event.body,
                    DeliveryState.PENDING.value,
                    _timestamp(event.created_at),
                    _timestamp(event.created_at),
                ),
            )

    @staticmethod
    def _session_of(db: sqlite3.Connection, sql: str, key: str) -> UploadSession | None:
        row = db.execute(f"SELECT * FROM sessions WHERE {sql}", (key,)).fetchone()
        return UploadSession.model_validate(dict(row)) if row else None

    @staticmethod
    def _media_row(db: sqlite3.Connection, media_id: str) -> Media | None:
        row = db.execute("SELECT * FROM media WHERE id = ?", (media_id,)).fetchone()
        return Media.model_validate(dict(row)) if row else None

    async def ping(self) -> None:
        await self._run(self._execute, "SELECT 1")

    def _add_session(self, db: sqlite3.Connection, session: UploadSession) -> None:
        db.execute(
            f"INSERT INTO sessions ({', '.join(SESSION_COLUMNS)}) "
            f"VALUES ({_placeholders(SESSION_COLUMNS)})",
            _row(session, SESSION_COLUMNS),
        )
        if self._endpoints:
            self._write_event(db, session_event(EventType.UPLOAD_CREATED, session, _now()))

    async def add_session(self, session: UploadSession) -> None:
        await self._run(self._atomic, lambda db: self._add_session(db, session))

    async def get_session(self, session_id: str) -> UploadSession | None:
        rows = await self._run(self._execute, "SELECT * FROM sessions WHERE id = ?", session_id)
        return UploadSession.model_validate(dict(rows[0])) if rows else None

    def _set_session_state(
        self, db: sqlite3.Connection, session_id: str, state: SessionState
    ) -> None:
        before = self._session_of(db, "id = ?", session_id) if self._endpoints else None
        db.execute("UPDATE sessions SET state = ? WHERE id = ?", (state.value, session_id))
        if before is not None and state is SessionState.EXPIRED and before.state is not state:
            self._write_event(db, session_event(EventType.UPLOAD_EXPIRED, before, _now()))

    async def set_session_state(self, session_id: str, state: SessionState) -> None:
        await self._run(self._atomic, lambda db: self._set_session_state(db, session_id, state))

    def _replace_upload(
        self, db: sqlite3.Connection, session_id: str, upload_id: str, error: str
    ) -> None:
        db.execute("DELETE FROM chunks WHERE session_id = ?", (session_id,))
        db.execute(
            "UPDATE sessions SET upload_id = ?, state = ?, last_error = ? WHERE id = ?",
            (upload_id, SessionState.OPEN.value, error, session_id),
        )
        db.execute(
            "UPDATE media SET state = ?, error = ? "
            "WHERE id = (SELECT media_id FROM sessions WHERE id = ?)",
            (MediaState.FAILED.value, error, session_id),
        )
        if not self._endpoints:
            return
        session = self._session_of(db, "id = ?", session_id)
        media = self._media_row(db, session.media_id) if session else None
        if media is not None:
            event = media_event(EventType.MEDIA_FAILED, media, session, _now(), reason=error)
            self._write_event(db, event)

    async def replace_upload(self, session_id: str, upload_id: str, *, error: str) -> None:
        await self._run(
            self._atomic, lambda db: self._replace_upload(db, session_id, upload_id, error)
        )

    async def note_error(self, session_id: str, error: str) -> None:
        await self._run(
            self._transaction,
            [
                ("UPDATE sessions SET last_error = ? WHERE id = ?", (error, session_id)),
                (
                    "UPDATE media SET error = ? "
                    "WHERE id = (SELECT media_id FROM sessions WHERE id = ?)",
                    (error, session_id),
                ),
            ],
        )

    async def name_session(self, session_id: str, filename: str, content_type: str) -> None:
        await self._run(
            self._execute,
            "UPDATE sessions SET filename = ?, content_type = ? WHERE id = ? AND state = ?",
            filename,
            content_type,
            session_id,
            SessionState.OPEN.value,
        )

    async def delete_session(self, session_id: str) -> None:
        await self._run(self._execute, "DELETE FROM sessions WHERE id = ?", session_id)

    def _put_chunk(self, session_id: str, chunk: Chunk) -> int:
        try:
            self._transaction(
                [
                    (
                        f"INSERT OR REPLACE INTO chunks (session_id, {', '.join(CHUNK_COLUMNS)}) "
                        f"VALUES (?, {_placeholders(CHUNK_COLUMNS)})",
                        (session_id, *_row(chunk, CHUNK_COLUMNS)),
                    )
                ]
            )
        except sqlite3.IntegrityError:  # the foreign key: the session is gone
            raise NotFound(f"no upload session {session_id}") from None
        rows = self._execute(
            "SELECT COUNT(*) FROM chunks WHERE session_id = ? AND pending IS NULL", session_id
        )
        return int(rows[0][0])

    async def put_chunk(self, session_id: str, chunk: Chunk) -> int:
        return await self._run(self._put_chunk, session_id, chunk)

    async def drop_chunk(self, session_id: str, number: int) -> None:
        await self._run(
            self._execute,
            "DELETE FROM chunks WHERE session_id = ? AND number = ? "
            "AND (SELECT state FROM sessions WHERE id = ?) = ?",
            session_id,
            number,
            session_id,
            SessionState.OPEN.value,
        )

    async def chunks(self, session_id: str) -> list[Chunk]:
        rows = await self._run(
            self._execute,
            f"SELECT {', '.join(CHUNK_COLUMNS)} FROM chunks "
            "WHERE session_id = ? AND pending IS NULL ORDER BY number",
            session_id,
        )
        return [Chunk.model_validate(dict(row)) for row in rows]

    def _complete_session(self, db: sqlite3.Connection, session_id: str, media: Media) -> None:
        ready_before = None
        if self._endpoints and media.state is MediaState.READY:
            ready_before = self._media_row(db, media.id)
        db.execute(
            f"INSERT OR REPLACE INTO media ({', '.join(MEDIA_COLUMNS)}) "
            f"VALUES ({_placeholders(MEDIA_COLUMNS)})",
            _row(media, MEDIA_COLUMNS),
        )
        if media.state is MediaState.FINALIZING:
            state = SessionState.FINALIZING
        else:
            state = SessionState.COMPLETED
            db.execute("DELETE FROM chunks WHERE session_id = ?", (session_id,))
        db.execute(
            "UPDATE sessions SET state = ?, last_error = NULL WHERE id = ?",
            (state.value, session_id),
        )
        if self._endpoints and media.state is MediaState.READY:
            if ready_before is None or ready_before.state is not MediaState.READY:
                session = self._session_of(db, "id = ?", session_id)
                self._write_event(db, media_event(EventType.MEDIA_READY, media, session, _now()))

    async def complete_session(self, session_id: str, media: Media) -> None:
        await self._run(self._atomic, lambda db: self._complete_session(db, session_id, media))

    async def sessions_in_state(self, state: SessionState) -> list[UploadSession]:
        rows = await self._run(
            self._execute, "SELECT * FROM sessions WHERE state = ? ORDER BY created_at", state.value
        )
        return [UploadSession.model_validate(dict(row)) for row in rows]

    async def count_open_sessions(self, user_id: str) -> int:
        rows = await self._run(
            self._execute,
            "SELECT COUNT(*) FROM sessions WHERE user_id = ? AND state IN (?, ?)",
            user_id,
            SessionState.OPEN.value,
            SessionState.FINALIZING.value,
        )
        return int(rows[0][0])

    async def expired_sessions(self, now: datetime) -> list[UploadSession]:
        rows = await self._run(
            self._execute,
            "SELECT * FROM sessions WHERE state = ? AND expires_at <= ? ORDER BY expires_at",
            SessionState.OPEN.value,
            _timestamp(now),
        )
        return [UploadSession.model_validate(dict(row)) for row in rows]

    async def get_media(self, media_id: str) -> Media | None:
        rows = await self._run(self._execute, "SELECT * FROM media WHERE id = ?", media_id)
        return Media.model_validate(dict(rows[0])) if rows else None

    def _delete_media(self, db: sqlite3.Connection, media_id: str) -> None:
        media = self._media_row(db, media_id) if self._endpoints else None
        db.execute("DELETE FROM media WHERE id = ?", (media_id,))
        if media is not None:
            session = self._session_of(db, "media_id = ?", media_id)
            self._write_event(db, media_event(EventType.MEDIA_DELETED, media, session, _now()))

    async def delete_media(self, media_id: str) -> None:
        await self._run(self._atomic, lambda db: self._delete_media(db, media_id))

    async def list_media(
        self, user_id: str, limit: int, before: tuple[datetime, str] | None
    ) -> list[Media]:
        if before is None:
            rows = await self._run(
                self._execute,
                "SELECT * FROM media WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                user_id,
                limit,
            )
        else:
            created_at, media_id = before
            rows = await self._run(
                self._execute,
                "SELECT * FROM media WHERE user_id = ? AND (created_at, id) < (?, ?) "
                "ORDER BY created_at DESC, id DESC LIMIT ?",
                user_id,
                _timestamp(created_at),
                media_id,
                limit,
            )
        return [Media.model_validate(dict(row)) for row in rows]

    def _changed(self, sql: str, *parameters: Any) -> int:
        assert self._db is not None, "catalog is closed"
        return self._db.execute(sql, parameters).rowcount

    async def add_media(self, media: Media) -> bool:
        added = await self._run(
            self._changed,
            f"INSERT OR IGNORE INTO media ({', '.join(MEDIA_COLUMNS)}) "
            f"VALUES ({_placeholders(MEDIA_COLUMNS)})",
            *_row(media, MEDIA_COLUMNS),
        )
        return added == 1

    def _move_media(
        self,
        db: sqlite3.Connection,
        media_id: str,
        source: StorageKind,
        target: StorageKind,
        checksum: str,
    ) -> bool:
        moved = db.execute(
            "UPDATE media SET storage = ?, checksum = ? WHERE id = ? AND storage = ? AND state = ?",
            (target.value, checksum, media_id, source.value, MediaState.READY.value),
        ).rowcount
        media = self._media_row(db, media_id) if moved == 1 and self._endpoints else None
        if media is not None:
            session = self._session_of(db, "media_id = ?", media_id)
            self._write_event(db, media_event(EventType.MEDIA_MIGRATED, media, session, _now()))
        return moved == 1

    async def move_media(
        self, media_id: str, *, source: StorageKind, target: StorageKind, checksum: str
    ) -> bool:
        return await self._run(
            self._atomic, lambda db: self._move_media(db, media_id, source, target, checksum)
        )

    async def media_in_storage(
        self, storage: StorageKind, *, user_id: str | None, after: str | None, limit: int
    ) -> list[Media]:
        rows = await self._run(
            self._execute,
            "SELECT * FROM media WHERE storage = ? AND state = ? AND id > ? "
            "AND (? IS NULL OR user_id = ?) ORDER BY id LIMIT ?",
            storage.value,
            MediaState.READY.value,
            after or "",
            user_id,
            user_id,
            limit,
        )
        return [Media.model_validate(dict(row)) for row in rows]

    async def add_tus_upload(self, upload: TusUpload) -> None:
        await self._run(
            self._execute,
            f"INSERT INTO tus_uploads ({', '.join(TUS_COLUMNS)}) "
            f"VALUES ({_placeholders(TUS_COLUMNS)})",
            *_row(upload, TUS_COLUMNS),
        )

    async def get_tus_upload(self, session_id: str) -> TusUpload | None:
        rows = await self._run(
            self._execute, "SELECT * FROM tus_uploads WHERE session_id = ?", session_id
        )
        return TusUpload.model_validate(dict(rows[0])) if rows else None

    def _take_partials(self, final_id: str, partial_ids: list[str]) -> bool:
        assert self._db is not None, "catalog is closed"
        marks = _placeholders(partial_ids)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            taken = self._db.execute(
                "SELECT 1 FROM tus_uploads JOIN sessions ON sessions.id = tus_uploads.part_of "
                f"WHERE tus_uploads.session_id IN ({marks}) AND sessions.id <> ? "
                "AND sessions.state <> ? LIMIT 1",
                (*partial_ids, final_id, SessionState.EXPIRED.value),
            ).fetchall()
            if not taken:
                self._db.execute(
                    f"UPDATE tus_uploads SET part_of = ? WHERE session_id IN ({marks})",
                    (final_id, *partial_ids),
                )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return not taken

    async def take_partials(self, final_id: str, partial_ids: list[str]) -> bool:
        return await self._run(self._take_partials, final_id, partial_ids)

    async def set_length(self, session_id: str, size: int, total_chunks: int) -> None:
        await self._run(
            self._transaction,
            [
                (
                    "DELETE FROM chunks WHERE session_id = ? AND size + coalesce("
                    "start, number * (SELECT chunk_size FROM sessions WHERE id = ?)) > ?",
                    (session_id, session_id, size),
                ),
                (
                    "UPDATE sessions SET size = ?, total_chunks = ? WHERE id = ?",
                    (size, total_chunks, session_id),
                ),
                (
                    "UPDATE tus_uploads SET length_deferred = 0 WHERE session_id = ?",
                    (session_id,),
                ),
            ],
        )

    async def record_tail(
        self, session_id: str, *, start: int, size: int, storage: StorageKind, pending: str | None
    ) -> None:
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (
                "UPDATE tus_uploads SET tail_start = ?, tail_size = ?, tail_storage = ? "
                "WHERE session_id = ?",
                (start, size, storage.value, session_id),
            )
        ]
        if pending is not None:
            statements.append(
                (
                    "UPDATE chunks SET pending = NULL WHERE session_id = ? AND pending = ?",
                    (session_id, pending),
                )
            )
        await self._run(self._transaction, statements)

    def _claim_events(
        self, db: sqlite3.Connection, now: datetime, hold: float, limit: int
    ) -> list[Delivery]:
        rows = db.execute(
            f"SELECT * FROM events AS e WHERE state = ? AND next_at <= ? AND {FIRST_OF_MEDIA} "
            "ORDER BY seq LIMIT ?",
            (DeliveryState.PENDING.value, _timestamp(now), DeliveryState.PENDING.value, limit),
        ).fetchall()
        until = _timestamp(now + timedelta(seconds=hold))
        for row in rows:
            db.execute("UPDATE events SET next_at = ? WHERE seq = ?", (until, row["seq"]))
        return [_delivery(row) for row in rows]

    async def claim_events(self, now: datetime, hold: float, limit: int) -> list[Delivery]:
        """Pending deliveries due at `now`, each the first pending one of its media at its
        endpoint, by seq; each is held (not due) for `hold` seconds, while it is sent."""
        return await self._run(self._atomic, lambda db: self._claim_events(db, now, hold, limit))

    async def settle_event(
        self, seq: int, state: DeliveryState, *, next_at: datetime | None, error: str | None
    ) -> None:
        """Record an attempt: delivered, gone, dead, or pending again from `next_at`."""
        await self._run(
            self._execute,
            "UPDATE events SET state = ?, attempts = attempts + 1, next_at = coalesce(?, next_at), "
            "last_error = ? WHERE seq = ?",
            state.value,
            _timestamp(next_at) if next_at else None,
            error,
            seq,
        )

    async def events_in_state(self, state: DeliveryState, limit: int) -> list[Delivery]:
        rows = await self._run(
            self._execute,
            "SELECT * FROM events WHERE state = ? ORDER BY seq LIMIT ?",
            state.value,
            limit,
        )
        return [_delivery(row) for row in rows]

    async def count_events(self) -> dict[DeliveryState, int]:
        rows = await self._run(self._execute, "SELECT state, count(*) FROM events GROUP BY state")
        return {DeliveryState(row[0]): int(row[1]) for row in rows}

    async def prune_events(self, before: datetime) -> int:
        """Forget the deliveries done (delivered or gone) of events older than `before`."""
        return await self._run(
            self._changed,
            "DELETE FROM events WHERE state IN (?, ?) AND created_at < ?",
            DeliveryState.DELIVERED.value,
            DeliveryState.GONE.value,
            _timestamp(before),
        )

    async def requeue_event(self, event_id: str, now: datetime) -> int:
        """Send a dead event again (at each endpoint where it is dead), with a new retry
        window from `now`; how many deliveries that makes."""
        return await self._run(
            self._changed,
            "UPDATE events SET state = ?, attempts = 0, created_at = ?, next_at = ? "
            "WHERE id = ? AND state = ?",
            DeliveryState.PENDING.value,
            _timestamp(now),
            _timestamp(now),
            event_id,
            DeliveryState.DEAD.value,
        )

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)

    async def unprobed_media(self, limit: int) -> list[Media]:
        rows = await self._run(
            self._execute,
            "SELECT * FROM media WHERE state = ? AND facts IS NULL AND probe_error IS NULL "
            "ORDER BY created_at LIMIT ?",
            MediaState.READY.value,
            limit,
        )
        return [Media.model_validate(dict(row)) for row in rows]

    async def record_probe(self, media: Media) -> bool:
        recorded = await self._run(
            self._changed,
            "UPDATE media SET facts = ?, probe_error = ?, poster_key = ? "
            "WHERE id = ? AND facts IS NULL AND probe_error IS NULL",
            media.facts,
            media.probe_error,
            media.poster_key,
            media.id,
        )
        return recorded == 1


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch to WAL. Switching needs the file to itself and fails at once instead of
    waiting when another process opens a new catalog at the same moment (the server
    and `mediagate migrate`, or two processes starting together), so it is retried
    for as long as any statement would wait."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _make_private(path: Path) -> None:
    """The catalog readable by its owner only, like the media and the JWT secret.

    SQLite creates the -wal and -shm files with the database file's mode, so
    creating that one 0600 is enough; files made looser by older versions are
    tightened."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for companion in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if companion.stat().st_mode & 0o077:
                companion.chmod(0o600)
        except FileNotFoundError:
            pass


# A delivery waits for the earlier pending ones of its media at its endpoint.
FIRST_OF_MEDIA = (
    "NOT EXISTS (SELECT 1 FROM events AS before WHERE before.endpoint = e.endpoint "
    "AND before.media_id = e.media_id AND before.state = ? AND before.seq < e.seq)"
)


def _delivery(row: sqlite3.Row) -> Delivery:
    values = dict(row)
    return Delivery(
        seq=values["seq"],
        id=values["id"],
        endpoint=values["endpoint"],
        media_id=values["media_id"],
        type=values["type"],
        body=values["body"],
        state=DeliveryState(values["state"]),
        attempts=values["attempts"],
        created_at=datetime.fromisoformat(values["created_at"]),
        last_error=values["last_error"],
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> str:
    """A fixed-width UTC form, so that SQLite's text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
