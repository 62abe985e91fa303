"""SQLite catalog, the embedded default: one file in the data directory.

All statements run on one dedicated thread with one connection, so the event
loop never waits on disk and SQLite never sees two writers. WAL with
synchronous=FULL makes every acknowledged chunk durable across a crash of the
process or the machine; a commit costs about one fsync, small beside a chunk.
The statements are those of the PostgreSQL catalog (catalog/sql.py); this module
is their driver and the schema steps.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from mediagate.catalog.schema import SchemaUpgrade, Step, missing_steps
from mediagate.catalog.sql import ParentGone, Row, SQLCatalog, Tx, plain
from mediagate.errors import CatalogUnavailable, StorageFull

T = TypeVar("T")

# How long a statement waits for another process's lock on the file.
BUSY_TIMEOUT_MS = 5000

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


class SQLiteCatalog(SQLCatalog):
    def __init__(
        self, path: Path, migrations: Sequence[Step] = MIGRATIONS, endpoints: Sequence[str] = ()
    ) -> None:
        super().__init__(endpoints)
        self._path = path
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

    def _tx(self) -> _Statements:
        assert self._db is not None, "catalog is closed"
        return _Statements(self._db)

    async def _fetch_one(self, sql: str, *parameters: Any) -> Row | None:
        return await self._run(self._tx().fetch_row, sql, parameters)

    async def _fetch_all(self, sql: str, *parameters: Any) -> list[Row]:
        return await self._run(self._tx().fetch_rows, sql, parameters)

    async def _execute(self, sql: str, *parameters: Any) -> int:
        return await self._run(self._tx().change, sql, parameters)

    async def _in_transaction(self, work: Callable[[Tx], Coroutine[Any, Any, T]]) -> tuple[T, Tx]:
        return await self._run(self._atomic, work)

    def _atomic(self, work: Callable[[Tx], Coroutine[Any, Any, T]]) -> tuple[T, Tx]:
        """On the catalog's thread: `work` runs to its end without yielding to the event
        loop, its statements executed at once, so no other call's statement comes between."""
        tx = self._tx()
        tx.db.execute("BEGIN IMMEDIATE")
        try:
            result = _run_to_end(work(tx))
        except BaseException:
            tx.db.execute("ROLLBACK")
            raise
        tx.db.execute("COMMIT")
        return result, tx

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)


class _Statements:
    """The SQLite driver's `Tx`: each statement runs when it is awaited, on the calling
    (the catalog's) thread."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.wrote_events = False

    def fetch_rows(self, sql: str, parameters: Sequence[Any]) -> list[Row]:
        # fetchall: a statement with RETURNING is done only once its rows are read.
        return [dict(row) for row in self._cursor(sql, parameters).fetchall()]

    def fetch_row(self, sql: str, parameters: Sequence[Any]) -> Row | None:
        rows = self.fetch_rows(sql, parameters)
        return rows[0] if rows else None

    def change(self, sql: str, parameters: Sequence[Any]) -> int:
        return self._cursor(sql, parameters).rowcount

    def _cursor(self, sql: str, parameters: Sequence[Any]) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, [_value(value) for value in parameters])
        except sqlite3.IntegrityError as error:
            if "FOREIGN KEY" in str(error):
                raise ParentGone(str(error)) from error
            raise

    async def fetch_one(self, sql: str, *parameters: Any) -> Row | None:
        return self.fetch_row(sql, parameters)

    async def fetch_all(self, sql: str, *parameters: Any) -> list[Row]:
        return self.fetch_rows(sql, parameters)

    async def execute(self, sql: str, *parameters: Any) -> int:
        return self.change(sql, parameters)


def _run_to_end(work: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends: a transaction's `work`, whose
    statements (`_Statements`) complete when awaited."""
    try:
        work.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    work.close()
    raise RuntimeError("a SQLite catalog transaction awaited something other than a statement")


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _timestamp(value)
    return plain(value)


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


def _timestamp(moment: datetime) -> str:
    """A fixed-width UTC form, so that SQLite's text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
