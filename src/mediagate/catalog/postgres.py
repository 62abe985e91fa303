"""PostgreSQL catalog (MEDIAGATE_DATABASE_URL): one database shared by every instance.

Each method is one transaction on a connection borrowed from an async pool and
given back at its end: no session state (SET, temporary tables, advisory locks
held across statements) outlives a method, and server-side prepared statements
are off, so the catalog works behind pgbouncer in transaction mode as well as
straight on the server. The semantics are those of the SQLite catalog,
method for method.

The pool's connections are in autocommit: a method of one statement (most reads)
is that statement alone, its own transaction, one round trip; a method of several
statements opens an explicit transaction (`_transaction`), BEGIN … COMMIT.

A server that cannot be reached (connection refused or lost, no connection
free within MEDIAGATE_DATABASE_TIMEOUT) is `CatalogUnavailable`, a 503 of its own: it is not an
S3 outage, so it never opens the S3 breaker nor sends chunks to local disk.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from mediagate.catalog.base import ClaimTake, LeaseRenewal, LeaseTake
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

log = structlog.get_logger("mediagate.catalog")

M = TypeVar("M", bound=BaseModel)
Connection = psycopg.AsyncConnection[DictRow]

# Seconds `open` waits for the first connection: start-up fails after that.
STARTUP_WAIT = 10.0
# Seconds to open one connection (unless the URL sets connect_timeout): a
# blackholed host must not hold the pool's connecting workers for minutes.
CONNECT_TIMEOUT = 5
# Seconds after which a connection waiting in the pool is checked with a round trip
# before it is lent: a firewall or NAT may have dropped it without a word (their idle
# timeouts are minutes). Too small costs a round trip per borrow on a quiet server.
IDLE_CHECK = 30.0
# Any fixed number; the key of the transaction-scoped advisory lock that
# serialises schema upgrades of instances starting together.
SCHEMA_LOCK = 0x6D65_6469_6167

# Ids and user ids sort bytewise ("C"), as in SQLite, whatever the database's
# locale: keyset paging relies on one fixed order.
MIGRATIONS: tuple[Step, ...] = (
    (
        """CREATE TABLE sessions (
            id text COLLATE "C" PRIMARY KEY,
            user_id text COLLATE "C" NOT NULL,
            filename text NOT NULL,
            content_type text NOT NULL,
            size bigint NOT NULL,
            chunk_size bigint NOT NULL,
            total_chunks integer NOT NULL,
            sha256 text,
            storage text NOT NULL,
            key text NOT NULL,
            upload_id text NOT NULL,
            state text NOT NULL,
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            media_id text NOT NULL
        )""",
        "CREATE INDEX sessions_by_expiry ON sessions (state, expires_at)",
        """CREATE TABLE chunks (
            session_id text COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            number integer NOT NULL,
            size bigint NOT NULL,
            storage text NOT NULL,
            etag text NOT NULL,
            md5 text,
            sha256 text,
            PRIMARY KEY (session_id, number)
        )""",
        """CREATE TABLE media (
            id text COLLATE "C" PRIMARY KEY,
            user_id text COLLATE "C" NOT NULL,
            filename text NOT NULL,
            content_type text NOT NULL,
            size bigint NOT NULL,
            checksum text,
            storage text NOT NULL,
            key text NOT NULL,
            created_at timestamptz NOT NULL,
            state text NOT NULL
        )""",
        "CREATE INDEX media_by_user ON media (user_id, created_at DESC, id DESC)",
        "CREATE INDEX media_by_storage ON media (storage, id)",
    ),
    # Version 2: why a session went back to open or a media failed (last_error,
    # error), the per-user open-session count's index, and tus uploads.
    (
        "ALTER TABLE sessions ADD COLUMN last_error text",
        "ALTER TABLE media ADD COLUMN error text",
        "CREATE INDEX sessions_by_user ON sessions (user_id, state)",
        """CREATE TABLE tus_uploads (
            session_id text COLLATE "C" PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
            metadata text NOT NULL,
            length_deferred boolean NOT NULL,
            concat text
        )""",
    ),
    # Version 3: the upload rules of several instances (docs/architecture.md,
    # "Several instances"): who wrote each chunk, chunk leases, claims, and
    # values every instance shares (the spool token).
    (
        "ALTER TABLE chunks ADD COLUMN writer text",
        """CREATE TABLE chunk_leases (
            session_id text COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            number integer NOT NULL,
            owner text,
            expires_at timestamptz NOT NULL,
            wanted_by text,
            wanted_until timestamptz,
            PRIMARY KEY (session_id, number)
        )""",
        """CREATE TABLE claims (
            kind text NOT NULL,
            item text COLLATE "C" NOT NULL,
            owner text NOT NULL,
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (kind, item)
        )""",
        "CREATE TABLE shared_values (name text PRIMARY KEY, value text NOT NULL)",
    ),
    # Version 4: which API a session belongs to (its native chunk calls are refused
    # on a tus upload; the tus uploads made before are found by their tus row), which
    # final upload took each partial one, and the tus offset model: parts of any size
    # at a recorded offset, parts of a checksummed PATCH pending until it is verified,
    # and the tail after the parts; and a claim can be wanted by a newer request, as
    # a chunk lease can (a tus upload's newest request takes over from a stalled one).
    (
        "ALTER TABLE sessions ADD COLUMN protocol text NOT NULL DEFAULT 'native'",
        "UPDATE sessions SET protocol = 'tus' WHERE id IN (SELECT session_id FROM tus_uploads)",
        # The final upload a partial one was taken by (each partial goes into one final).
        'ALTER TABLE tus_uploads ADD COLUMN part_of text COLLATE "C"',
        "ALTER TABLE chunks ADD COLUMN start bigint",
        "ALTER TABLE chunks ADD COLUMN pending text",
        "ALTER TABLE tus_uploads ADD COLUMN tail_start bigint NOT NULL DEFAULT 0",
        "ALTER TABLE tus_uploads ADD COLUMN tail_size bigint NOT NULL DEFAULT 0",
        "ALTER TABLE tus_uploads ADD COLUMN tail_storage text NOT NULL DEFAULT 's3'",
        "ALTER TABLE claims ADD COLUMN wanted_by text",
        "ALTER TABLE claims ADD COLUMN wanted_until timestamptz",
    ),
    # Version 5: the outbox, one row per event and webhook endpoint (mediagate/events.py).
    (
        """CREATE TABLE events (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id text COLLATE "C" NOT NULL,
            endpoint text NOT NULL,
            media_id text COLLATE "C" NOT NULL,
            type text NOT NULL,
            body text NOT NULL,
            state text NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL,
            next_at timestamptz NOT NULL,
            last_error text
        )""",
        "CREATE INDEX events_due ON events (state, next_at)",
        "CREATE INDEX events_by_media ON events (endpoint, media_id, state, seq)",
    ),
    # Version 6: what the application's pre-create hook attached to an upload, as JSON
    # (core/hooks.py), kept on the session and its media.
    (
        "ALTER TABLE sessions ADD COLUMN app_metadata text",
        "ALTER TABLE media ADD COLUMN app_metadata text",
    ),
    # Version 7: what probing found in a media (core/probing.py): its facts as JSON, or
    # why it found nothing, and its poster's key; the ready media not probed yet, found
    # by the background probe.
    (
        "ALTER TABLE media ADD COLUMN facts text",
        "ALTER TABLE media ADD COLUMN probe_error text",
        "ALTER TABLE media ADD COLUMN poster_key text",
        "CREATE INDEX media_unprobed ON media (state, created_at) "
        "WHERE facts IS NULL AND probe_error IS NULL",
    ),
)

SESSION_COLUMNS = list(UploadSession.model_fields)
CHUNK_COLUMNS = list(Chunk.model_fields)
MEDIA_COLUMNS = list(Media.model_fields)
TUS_COLUMNS = list(TusUpload.model_fields)


def _values(model: BaseModel, columns: list[str]) -> tuple[Any, ...]:
    values = model.model_dump()
    return tuple(
        values[column].value if isinstance(values[column], StrEnum) else values[column]
        for column in columns
    )


def _placeholders(columns: list[str]) -> str:
    return ", ".join("%s" for _ in columns)


def _record(model: type[M], row: DictRow) -> M:
    """A model from a row, its timestamps in UTC whatever the server's TimeZone."""
    return model.model_validate(
        {
            name: value.astimezone(UTC) if isinstance(value, datetime) else value
            for name, value in row.items()
        }
    )


def _update_all(columns: list[str], key: str) -> str:
    return ", ".join(f"{column} = EXCLUDED.{column}" for column in columns if column != key)


async def _upgrade(connection: Connection, migrations: Sequence[Step]) -> SchemaUpgrade:
    """Run the missing steps in the connection's transaction, one instance at a time."""
    await connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
    await connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        "version integer PRIMARY KEY, upgraded_at timestamptz NOT NULL DEFAULT now())"
    )
    cursor = await connection.execute(
        "SELECT coalesce(max(version), 0) AS version FROM schema_version"
    )
    row = await cursor.fetchone()
    before = after = int(row["version"]) if row else 0
    for after, step in missing_steps(before, migrations):
        for statement in step:
            await connection.execute(statement)
        await connection.execute("INSERT INTO schema_version (version) VALUES (%s)", (after,))
    return SchemaUpgrade(before, after)


class PostgresCatalog:
    def __init__(
        self,
        pool: AsyncConnectionPool[Connection],
        upgrade: SchemaUpgrade,
        borrow: _BorrowCheck,
        endpoints: Sequence[str] = (),
    ) -> None:
        self._pool = pool
        self._endpoints = tuple(endpoints)
        self._on_events: Callable[[], None] | None = None
        # The connections whose open transaction wrote an event.
        self._wrote_events: set[int] = set()
        self.schema_upgrade = upgrade
        self._borrow = borrow

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_size: int = 10,
        wait: float = 5.0,
        migrations: Sequence[Step] = MIGRATIONS,
        endpoints: Sequence[str] = (),
    ) -> PostgresCatalog:
        """Bring the schema up to date, then open the pool; CatalogUnavailable if the server
        cannot be reached, with libpq's reason (refused, authentication, no such database).

        `wait`: seconds a call waits for a free connection before it fails.
        `endpoints`: the webhook URLs; each state change writes its event for each of
        them in its transaction, and with none no event is written.
        """
        options: dict[str, Any] = {"prepare_threshold": None, "row_factory": dict_row}
        if "connect_timeout" not in conninfo_to_dict(url):
            options["connect_timeout"] = CONNECT_TIMEOUT
        try:
            connection = await psycopg.AsyncConnection.connect(url, **options)
        except psycopg.OperationalError as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else "no answer"
            raise CatalogUnavailable(
                f"cannot connect to the PostgreSQL catalog (MEDIAGATE_DATABASE_URL): {reason}"
            ) from error
        async with connection:  # committed, then closed
            upgrade = await _upgrade(connection, migrations)
        borrow = _BorrowCheck()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url,
            kwargs={**options, "autocommit": True},
            min_size=1,
            max_size=pool_size,
            timeout=wait,
            # Not a `reset` callback to note returns: with one the pool gives each
            # connection back from a worker task, later, and grows meanwhile.
            check=borrow.check,
            name="catalog",
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=STARTUP_WAIT)
        except BaseException as error:
            await pool.close()
            if isinstance(error, psycopg.OperationalError):
                raise CatalogUnavailable(
                    "the PostgreSQL catalog (MEDIAGATE_DATABASE_URL) stopped answering at start-up"
                ) from error
            raise
        return cls(pool, upgrade, borrow, endpoints)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """A pooled connection in autocommit: each statement is its own transaction."""
        try:
            async with self._pool.connection() as connection:
                try:
                    yield connection
                finally:
                    self._borrow.returned(connection)
        except psycopg.errors.DiskFull as error:
            raise StorageFull(f"catalog: {error}") from error
        except psycopg.OperationalError as error:
            log.warning("catalog.unavailable", error=str(error).strip())
            raise CatalogUnavailable("the catalog database does not answer") from error

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Connection]:
        """A pooled connection in one transaction, committed on success and rolled back
        on error: for a method of several statements."""
        async with self._connection() as connection:
            try:
                async with connection.transaction():
                    yield connection
            except BaseException:
                self._wrote_events.discard(id(connection))
                raise
            if id(connection) in self._wrote_events:
                self._wrote_events.discard(id(connection))
                self._events_committed()

    def on_events_written(self, callback: Callable[[], None]) -> None:
        self._on_events = callback

    def _events_committed(self) -> None:
        if self._on_events is not None:
            self._on_events()

    async def _rows(self, sql: str, *parameters: Any) -> list[DictRow]:
        """One statement, in one round trip."""
        async with self._connection() as connection:
            return await (await connection.execute(sql, parameters)).fetchall()

    async def _changed(self, sql: str, *parameters: Any) -> int:
        """One statement, in one round trip."""
        async with self._connection() as connection:
            return (await connection.execute(sql, parameters)).rowcount

    async def ping(self) -> None:
        await self._rows("SELECT 1")

    def _event_insert(self, event: Event) -> tuple[str, tuple[Any, ...]]:
        """One statement writing the event once per endpoint, and its parameters."""
        return (
            "INSERT INTO events (id, endpoint, media_id, type, body, state, created_at, next_at) "
            "SELECT %s, endpoint, %s, %s, %s, %s, %s, %s FROM unnest(%s::text[]) AS endpoint",
            (
                event.id,
                event.media_id,
                event.type.value,
                event.body,
                DeliveryState.PENDING.value,
                event.created_at,
                event.created_at,
                list(self._endpoints),
            ),
        )

    async def _write_event(self, connection: Connection, event: Event) -> None:
        """The event, once per endpoint, in the caller's transaction."""
        self._wrote_events.add(id(connection))
        await connection.execute(*self._event_insert(event))

    async def add_session(self, session: UploadSession) -> None:
        insert = (
            f"INSERT INTO sessions ({', '.join(SESSION_COLUMNS)}) "
            f"VALUES ({_placeholders(SESSION_COLUMNS)})"
        )
        if not self._endpoints:
            await self._changed(insert, *_values(session, SESSION_COLUMNS))
            return
        # The session and its event in one statement (atomic on its own): one round trip,
        # as without webhooks, rather than BEGIN, two INSERTs and COMMIT.
        events, parameters = self._event_insert(
            session_event(EventType.UPLOAD_CREATED, session, _now())
        )
        await self._changed(
            f"WITH created AS ({insert}) {events}", *_values(session, SESSION_COLUMNS), *parameters
        )
        self._events_committed()

    async def get_session(self, session_id: str) -> UploadSession | None:
        rows = await self._rows("SELECT * FROM sessions WHERE id = %s", session_id)
        return _record(UploadSession, rows[0]) if rows else None

    async def set_session_state(self, session_id: str, state: SessionState) -> None:
        update = "UPDATE sessions SET state = %s WHERE id = %s"
        if not self._endpoints or state is not SessionState.EXPIRED:
            await self._changed(update, state.value, session_id)
            return
        async with self._transaction() as connection:
            before = await _session_where(connection, "id = %s FOR UPDATE", session_id)
            await connection.execute(update, (state.value, session_id))
            if before is not None and before.state is not state:
                await self._write_event(
                    connection, session_event(EventType.UPLOAD_EXPIRED, before, _now())
                )

    async def replace_upload(self, session_id: str, upload_id: str, *, error: str) -> None:
        async with self._transaction() as connection:
            await connection.execute("DELETE FROM chunks WHERE session_id = %s", (session_id,))
            await connection.execute(
                "UPDATE sessions SET upload_id = %s, state = %s, last_error = %s WHERE id = %s",
                (upload_id, SessionState.OPEN.value, error, session_id),
            )
            await connection.execute(
                "UPDATE media SET state = %s, error = %s "
                "WHERE id = (SELECT media_id FROM sessions WHERE id = %s)",
                (MediaState.FAILED.value, error, session_id),
            )
            if self._endpoints:
                session = await _session_where(connection, "id = %s", session_id)
                media = await _media_row(connection, session.media_id) if session else None
                if media is not None:
                    await self._write_event(
                        connection,
                        media_event(EventType.MEDIA_FAILED, media, session, _now(), reason=error),
                    )

    async def note_error(self, session_id: str, error: str) -> None:
        async with self._transaction() as connection:
            await connection.execute(
                "UPDATE sessions SET last_error = %s WHERE id = %s", (error, session_id)
            )
            await connection.execute(
                "UPDATE media SET error = %s "
                "WHERE id = (SELECT media_id FROM sessions WHERE id = %s)",
                (error, session_id),
            )

    async def name_session(self, session_id: str, filename: str, content_type: str) -> None:
        await self._changed(
            "UPDATE sessions SET filename = %s, content_type = %s WHERE id = %s AND state = %s",
            filename,
            content_type,
            session_id,
            SessionState.OPEN.value,
        )

    async def delete_session(self, session_id: str) -> None:
        await self._changed("DELETE FROM sessions WHERE id = %s", session_id)

    async def put_chunk(self, session_id: str, chunk: Chunk) -> int:
        try:
            async with self._transaction() as connection:
                await connection.execute(
                    f"INSERT INTO chunks (session_id, {', '.join(CHUNK_COLUMNS)}) "
                    f"VALUES (%s, {_placeholders(CHUNK_COLUMNS)}) "
                    f"ON CONFLICT (session_id, number) DO UPDATE SET "
                    f"{_update_all(CHUNK_COLUMNS, 'number')}",
                    (session_id, *_values(chunk, CHUNK_COLUMNS)),
                )
                cursor = await connection.execute(
                    "SELECT count(*) AS received FROM chunks "
                    "WHERE session_id = %s AND pending IS NULL",
                    (session_id,),
                )
                row = await cursor.fetchone()
        except psycopg.errors.ForeignKeyViolation:  # the session is gone
            raise NotFound(f"no upload session {session_id}") from None
        return int(row["received"]) if row else 0

    async def drop_chunk(self, session_id: str, number: int) -> None:
        # A DELETE that matches no row writes nothing, so its commit costs no WAL flush.
        await self._changed(
            "DELETE FROM chunks WHERE session_id = %s AND number = %s "
            "AND (SELECT state FROM sessions WHERE id = %s) = %s",
            session_id,
            number,
            session_id,
            SessionState.OPEN.value,
        )

    async def chunks(self, session_id: str) -> list[Chunk]:
        rows = await self._rows(
            f"SELECT {', '.join(CHUNK_COLUMNS)} FROM chunks "
            "WHERE session_id = %s AND pending IS NULL ORDER BY number",
            session_id,
        )
        return [_record(Chunk, row) for row in rows]

    async def complete_session(self, session_id: str, media: Media) -> None:
        if media.state is MediaState.FINALIZING:
            state = SessionState.FINALIZING
        else:
            state = SessionState.COMPLETED
        announce = bool(self._endpoints) and media.state is MediaState.READY
        async with self._transaction() as connection:
            if announce:
                before = await _media_row(connection, media.id, lock=True)
                announce = before is None or before.state is not MediaState.READY
            await connection.execute(
                f"INSERT INTO media ({', '.join(MEDIA_COLUMNS)}) "
                f"VALUES ({_placeholders(MEDIA_COLUMNS)}) "
                f"ON CONFLICT (id) DO UPDATE SET {_update_all(MEDIA_COLUMNS, 'id')}",
                _values(media, MEDIA_COLUMNS),
            )
            if announce:
                session = await _session_where(connection, "id = %s", session_id)
                await self._write_event(
                    connection, media_event(EventType.MEDIA_READY, media, session, _now())
                )
            if state is SessionState.COMPLETED:
                await connection.execute("DELETE FROM chunks WHERE session_id = %s", (session_id,))
                await connection.execute(
                    "DELETE FROM chunk_leases WHERE session_id = %s", (session_id,)
                )
            await connection.execute(
                "UPDATE sessions SET state = %s, last_error = NULL WHERE id = %s",
                (state.value, session_id),
            )

    async def sessions_in_state(self, state: SessionState) -> list[UploadSession]:
        rows = await self._rows(
            "SELECT * FROM sessions WHERE state = %s ORDER BY created_at", state.value
        )
        return [_record(UploadSession, row) for row in rows]

    async def count_open_sessions(self, user_id: str) -> int:
        rows = await self._rows(
            "SELECT count(*) AS open FROM sessions WHERE user_id = %s AND state IN (%s, %s)",
            user_id,
            SessionState.OPEN.value,
            SessionState.FINALIZING.value,
        )
        return int(rows[0]["open"])

    async def expired_sessions(self, now: datetime) -> list[UploadSession]:
        rows = await self._rows(
            "SELECT * FROM sessions WHERE state = %s AND expires_at <= %s ORDER BY expires_at",
            SessionState.OPEN.value,
            now,
        )
        return [_record(UploadSession, row) for row in rows]

    async def get_media(self, media_id: str) -> Media | None:
        rows = await self._rows("SELECT * FROM media WHERE id = %s", media_id)
        return _record(Media, rows[0]) if rows else None

    async def delete_media(self, media_id: str) -> None:
        if not self._endpoints:
            await self._changed("DELETE FROM media WHERE id = %s", media_id)
            return
        async with self._transaction() as connection:
            row = await _one(connection, "DELETE FROM media WHERE id = %s RETURNING *", media_id)
            if row is not None:
                session = await _session_where(connection, "media_id = %s", media_id)
                await self._write_event(
                    connection,
                    media_event(EventType.MEDIA_DELETED, _record(Media, row), session, _now()),
                )

    async def list_media(
        self, user_id: str, limit: int, before: tuple[datetime, str] | None
    ) -> list[Media]:
        if before is None:
            rows = await self._rows(
                "SELECT * FROM media WHERE user_id = %s ORDER BY created_at DESC, id DESC LIMIT %s",
                user_id,
                limit,
            )
        else:
            created_at, media_id = before
            rows = await self._rows(
                "SELECT * FROM media WHERE user_id = %s AND (created_at, id) < (%s, %s) "
                "ORDER BY created_at DESC, id DESC LIMIT %s",
                user_id,
                created_at,
                media_id,
                limit,
            )
        return [_record(Media, row) for row in rows]

    async def add_media(self, media: Media) -> bool:
        added = await self._changed(
            f"INSERT INTO media ({', '.join(MEDIA_COLUMNS)}) "
            f"VALUES ({_placeholders(MEDIA_COLUMNS)}) ON CONFLICT (id) DO NOTHING",
            *_values(media, MEDIA_COLUMNS),
        )
        return added == 1

    async def move_media(
        self, media_id: str, *, source: StorageKind, target: StorageKind, checksum: str
    ) -> bool:
        update = (
            "UPDATE media SET storage = %s, checksum = %s "
            "WHERE id = %s AND storage = %s AND state = %s"
        )
        values = (target.value, checksum, media_id, source.value, MediaState.READY.value)
        if not self._endpoints:
            return await self._changed(update, *values) == 1
        async with self._transaction() as connection:
            row = await _one(connection, f"{update} RETURNING *", *values)
            if row is not None:
                session = await _session_where(connection, "media_id = %s", media_id)
                await self._write_event(
                    connection,
                    media_event(EventType.MEDIA_MIGRATED, _record(Media, row), session, _now()),
                )
        return row is not None

    async def media_in_storage(
        self, storage: StorageKind, *, user_id: str | None, after: str | None, limit: int
    ) -> list[Media]:
        owner = "" if user_id is None else "AND user_id = %s "
        rows = await self._rows(
            f"SELECT * FROM media WHERE storage = %s AND state = %s AND id > %s {owner}"
            "ORDER BY id LIMIT %s",
            storage.value,
            MediaState.READY.value,
            after or "",
            *([] if user_id is None else [user_id]),
            limit,
        )
        return [_record(Media, row) for row in rows]

    async def add_tus_upload(self, upload: TusUpload) -> None:
        await self._changed(
            f"INSERT INTO tus_uploads ({', '.join(TUS_COLUMNS)}) "
            f"VALUES ({_placeholders(TUS_COLUMNS)})",
            *_values(upload, TUS_COLUMNS),
        )

    async def get_tus_upload(self, session_id: str) -> TusUpload | None:
        rows = await self._rows("SELECT * FROM tus_uploads WHERE session_id = %s", session_id)
        return _record(TusUpload, rows[0]) if rows else None

    async def take_partials(self, final_id: str, partial_ids: list[str]) -> bool:
        async with self._transaction() as connection:
            # Locked in one order, so two finals sharing partials cannot deadlock; the
            # next statement sees every take committed before the locks were granted.
            await connection.execute(
                "SELECT 1 FROM tus_uploads WHERE session_id = ANY(%s) "
                "ORDER BY session_id FOR UPDATE",
                (partial_ids,),
            )
            taken = await _one(
                connection,
                "SELECT 1 FROM tus_uploads JOIN sessions ON sessions.id = tus_uploads.part_of "
                "WHERE tus_uploads.session_id = ANY(%s) AND sessions.id <> %s "
                "AND sessions.state <> %s LIMIT 1",
                partial_ids,
                final_id,
                SessionState.EXPIRED.value,
            )
            if taken is None:
                await connection.execute(
                    "UPDATE tus_uploads SET part_of = %s WHERE session_id = ANY(%s)",
                    (final_id, partial_ids),
                )
        return taken is None

    async def set_length(self, session_id: str, size: int, total_chunks: int) -> None:
        async with self._transaction() as connection:
            await connection.execute(
                "DELETE FROM chunks WHERE session_id = %s AND size + coalesce("
                "start, number * (SELECT chunk_size FROM sessions WHERE id = %s)) > %s",
                (session_id, session_id, size),
            )
            await connection.execute(
                "UPDATE sessions SET size = %s, total_chunks = %s WHERE id = %s",
                (size, total_chunks, session_id),
            )
            await connection.execute(
                "UPDATE tus_uploads SET length_deferred = false WHERE session_id = %s",
                (session_id,),
            )

    async def record_tail(
        self, session_id: str, *, start: int, size: int, storage: StorageKind, pending: str | None
    ) -> None:
        async with self._transaction() as connection:
            await connection.execute(
                "UPDATE tus_uploads SET tail_start = %s, tail_size = %s, tail_storage = %s "
                "WHERE session_id = %s",
                (start, size, storage.value, session_id),
            )
            if pending is not None:
                await connection.execute(
                    "UPDATE chunks SET pending = NULL WHERE session_id = %s AND pending = %s",
                    (session_id, pending),
                )

    # --- the rules of several instances (core/session_locks.py) ---------------------

    async def take_chunk_lease(
        self, session_id: str, number: int, owner: str, seconds: float, *, first: bool
    ) -> LeaseTake:
        async with self._transaction() as connection:
            # FOR SHARE conflicts with the FOR UPDATE of `claim`: either the claim
            # sees this lease or this sees the claim (docs/architecture.md).
            row = await _one(
                connection, "SELECT state FROM sessions WHERE id = %s FOR SHARE", session_id
            )
            if row is None:
                return LeaseTake.GONE
            if row["state"] != SessionState.OPEN.value or await _one(
                connection,
                "SELECT 1 FROM claims WHERE kind = 'session' AND item = %s AND expires_at > now()",
                session_id,
            ):
                return LeaseTake.CLOSED
            taken = await _one(
                connection,
                "INSERT INTO chunk_leases (session_id, number, owner, expires_at) "
                "VALUES (%s, %s, %s, now() + make_interval(secs => %s)) "
                "ON CONFLICT (session_id, number) DO UPDATE SET owner = EXCLUDED.owner, "
                "expires_at = EXCLUDED.expires_at, wanted_by = NULL, wanted_until = NULL "
                "WHERE (chunk_leases.owner IS NULL OR chunk_leases.expires_at <= now()) "
                "AND (chunk_leases.wanted_by IS NULL OR chunk_leases.wanted_by = EXCLUDED.owner "
                "OR chunk_leases.wanted_until <= now()) RETURNING owner",
                session_id,
                number,
                owner,
                seconds,
            )
            if taken is not None:
                # Forgotten in the same commit, before the first byte of the new write.
                await connection.execute(
                    "DELETE FROM chunks WHERE session_id = %s AND number = %s",
                    (session_id, number),
                )
                return LeaseTake.HELD
            # The newest attempt marks the chunk wanted (replacing an older waiter's
            # mark); a waiter keeps its mark alive while it is still the newest.
            mine = "" if first else "AND wanted_by = %s "
            marked = await _one(
                connection,
                "UPDATE chunk_leases SET wanted_by = %s, "
                "wanted_until = now() + make_interval(secs => %s) "
                f"WHERE session_id = %s AND number = %s {mine}RETURNING 1",
                owner,
                seconds,
                session_id,
                number,
                *([] if first else [owner]),
            )
            return LeaseTake.WAITING if marked is not None else LeaseTake.SUPERSEDED

    async def renew_chunk_lease(
        self, session_id: str, number: int, owner: str, seconds: float
    ) -> LeaseRenewal:
        async with self._transaction() as connection:
            row = await _one(
                connection,
                "UPDATE chunk_leases SET expires_at = now() + make_interval(secs => %s) "
                "WHERE session_id = %s AND number = %s AND owner = %s RETURNING wanted_by",
                seconds,
                session_id,
                number,
                owner,
            )
        if row is None:
            return LeaseRenewal.LOST
        return LeaseRenewal.HELD if row["wanted_by"] is None else LeaseRenewal.WANTED

    async def release_chunk_lease(self, session_id: str, number: int, owner: str) -> None:
        await self._changed(
            "UPDATE chunk_leases SET owner = NULL "
            "WHERE session_id = %s AND number = %s AND owner = %s",
            session_id,
            number,
            owner,
        )

    async def record_chunk(self, session_id: str, chunk: Chunk, owner: str) -> int | None:
        try:
            async with self._transaction() as connection:
                held = await _one(
                    connection,
                    "SELECT 1 FROM chunk_leases "
                    "WHERE session_id = %s AND number = %s AND owner = %s FOR UPDATE",
                    session_id,
                    chunk.number,
                    owner,
                )
                if held is None:
                    if await _one(connection, "SELECT 1 FROM sessions WHERE id = %s", session_id):
                        return None
                    raise NotFound(f"no upload session {session_id}")  # its leases went with it
                await connection.execute(
                    f"INSERT INTO chunks (session_id, {', '.join(CHUNK_COLUMNS)}) "
                    f"VALUES (%s, {_placeholders(CHUNK_COLUMNS)}) "
                    f"ON CONFLICT (session_id, number) DO UPDATE SET "
                    f"{_update_all(CHUNK_COLUMNS, 'number')}",
                    (session_id, *_values(chunk, CHUNK_COLUMNS)),
                )
                await connection.execute(
                    "UPDATE chunk_leases SET owner = NULL "
                    "WHERE session_id = %s AND number = %s AND owner = %s",
                    (session_id, chunk.number, owner),
                )
                row = await _one(
                    connection,
                    "SELECT count(*) AS received FROM chunks "
                    "WHERE session_id = %s AND pending IS NULL",
                    session_id,
                )
        except psycopg.errors.ForeignKeyViolation:  # the session is gone
            raise NotFound(f"no upload session {session_id}") from None
        return int(row["received"]) if row else 0

    async def claim(
        self, kind: str, item: str, owner: str, seconds: float, *, idle_session: bool = False
    ) -> ClaimTake:
        async with self._transaction() as connection:
            if kind == "session":
                locked = await _one(
                    connection, "SELECT 1 FROM sessions WHERE id = %s FOR UPDATE", item
                )
                if locked is None:
                    return ClaimTake.GONE
                # A statement after the row lock: it sees every lease committed before.
                if idle_session and await _one(
                    connection,
                    "SELECT 1 FROM chunk_leases WHERE session_id = %s "
                    "AND owner IS NOT NULL AND expires_at > now() LIMIT 1",
                    item,
                ):
                    return ClaimTake.CHUNKS
            taken = await _one(
                connection,
                "INSERT INTO claims (kind, item, owner, expires_at) "
                "VALUES (%s, %s, %s, now() + make_interval(secs => %s)) "
                "ON CONFLICT (kind, item) DO UPDATE SET owner = EXCLUDED.owner, "
                "expires_at = EXCLUDED.expires_at, wanted_by = NULL, wanted_until = NULL "
                "WHERE claims.expires_at <= now() RETURNING owner",
                kind,
                item,
                owner,
                seconds,
            )
        return ClaimTake.CLAIMED if taken is not None else ClaimTake.BUSY

    async def take_claim(
        self, kind: str, item: str, owner: str, seconds: float, *, first: bool
    ) -> LeaseTake:
        async with self._transaction() as connection:
            # A conflicting row stays locked to the end of the transaction, taken or not:
            # its holder's release cannot slip between this and the mark below.
            taken = await _one(
                connection,
                "INSERT INTO claims (kind, item, owner, expires_at) "
                "VALUES (%s, %s, %s, now() + make_interval(secs => %s)) "
                "ON CONFLICT (kind, item) DO UPDATE SET owner = EXCLUDED.owner, "
                "expires_at = EXCLUDED.expires_at, wanted_by = NULL, wanted_until = NULL "
                "WHERE claims.expires_at <= now() AND (claims.wanted_by IS NULL "
                "OR claims.wanted_by = EXCLUDED.owner OR claims.wanted_until <= now()) "
                "RETURNING owner",
                kind,
                item,
                owner,
                seconds,
            )
            if taken is not None:
                return LeaseTake.HELD
            mine = "" if first else "AND wanted_by = %s "
            marked = await _one(
                connection,
                "UPDATE claims SET wanted_by = %s, "
                "wanted_until = now() + make_interval(secs => %s) "
                f"WHERE kind = %s AND item = %s {mine}RETURNING 1",
                owner,
                seconds,
                kind,
                item,
                *([] if first else [owner]),
            )
        return LeaseTake.WAITING if marked is not None else LeaseTake.SUPERSEDED

    async def renew_claim(self, kind: str, item: str, owner: str, seconds: float) -> LeaseRenewal:
        rows = await self._rows(
            "UPDATE claims SET expires_at = now() + make_interval(secs => %s) "
            "WHERE kind = %s AND item = %s AND owner = %s RETURNING wanted_by",
            seconds,
            kind,
            item,
            owner,
        )
        if not rows:
            return LeaseRenewal.LOST
        return LeaseRenewal.HELD if rows[0]["wanted_by"] is None else LeaseRenewal.WANTED

    async def release_claim(self, kind: str, item: str, owner: str) -> None:
        async with self._transaction() as connection:
            # A wanted claim is kept, expired and owned by nobody (''), so that the one
            # who wants it takes it next and no late renewal of the releaser revives it.
            await connection.execute(
                "DELETE FROM claims WHERE kind = %s AND item = %s AND owner = %s "
                "AND wanted_by IS NULL",
                (kind, item, owner),
            )
            await connection.execute(
                "UPDATE claims SET owner = '', expires_at = now() "
                "WHERE kind = %s AND item = %s AND owner = %s",
                (kind, item, owner),
            )

    async def shared_value(self, name: str, proposed: str) -> str:
        async with self._transaction() as connection:
            await connection.execute(
                "INSERT INTO shared_values (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO NOTHING",
                (name, proposed),
            )
            row = await _one(connection, "SELECT value FROM shared_values WHERE name = %s", name)
        assert row is not None
        return str(row["value"])

    async def claim_events(self, now: datetime, hold: float, limit: int) -> list[Delivery]:
        """Pending deliveries due at `now`, each the first pending one of its media at its
        endpoint, by seq; each is held (not due) for `hold` seconds, while it is sent.
        SKIP LOCKED: instances claiming at once take different ones."""
        async with self._transaction() as connection:
            rows = await (
                await connection.execute(
                    "UPDATE events SET next_at = %s WHERE seq IN ("
                    "SELECT seq FROM events AS e WHERE state = %s AND next_at <= %s AND "
                    f"{FIRST_OF_MEDIA} ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED) "
                    "RETURNING *",
                    (
                        now + timedelta(seconds=hold),
                        DeliveryState.PENDING.value,
                        now,
                        DeliveryState.PENDING.value,
                        limit,
                    ),
                )
            ).fetchall()
        return sorted((_delivery(row) for row in rows), key=lambda delivery: delivery.seq)

    async def settle_event(
        self, seq: int, state: DeliveryState, *, next_at: datetime | None, error: str | None
    ) -> None:
        """Record an attempt: delivered, gone, dead, or pending again from `next_at`."""
        await self._changed(
            "UPDATE events SET state = %s, attempts = attempts + 1, "
            "next_at = coalesce(%s, next_at), last_error = %s WHERE seq = %s",
            state.value,
            next_at,
            error,
            seq,
        )

    async def events_in_state(self, state: DeliveryState, limit: int) -> list[Delivery]:
        rows = await self._rows(
            "SELECT * FROM events WHERE state = %s ORDER BY seq LIMIT %s", state.value, limit
        )
        return [_delivery(row) for row in rows]

    async def count_events(self) -> dict[DeliveryState, int]:
        rows = await self._rows("SELECT state, count(*) AS n FROM events GROUP BY state")
        return {DeliveryState(row["state"]): int(row["n"]) for row in rows}

    async def prune_events(self, before: datetime) -> int:
        """Forget the deliveries done (delivered or gone) of events older than `before`."""
        return await self._changed(
            "DELETE FROM events WHERE state IN (%s, %s) AND created_at < %s",
            DeliveryState.DELIVERED.value,
            DeliveryState.GONE.value,
            before,
        )

    async def requeue_event(self, event_id: str, now: datetime) -> int:
        """Send a dead event again (at each endpoint where it is dead), with a new retry
        window from `now`; how many deliveries that makes."""
        return await self._changed(
            "UPDATE events SET state = %s, attempts = 0, created_at = %s, next_at = %s "
            "WHERE id = %s AND state = %s",
            DeliveryState.PENDING.value,
            now,
            now,
            event_id,
            DeliveryState.DEAD.value,
        )

    async def close(self) -> None:
        await self._pool.close()

    async def unprobed_media(self, limit: int) -> list[Media]:
        rows = await self._rows(
            "SELECT * FROM media WHERE state = %s AND facts IS NULL AND probe_error IS NULL "
            "ORDER BY created_at LIMIT %s",
            MediaState.READY.value,
            limit,
        )
        return [_record(Media, row) for row in rows]

    async def record_probe(self, media: Media) -> bool:
        recorded = await self._changed(
            "UPDATE media SET facts = %s, probe_error = %s, poster_key = %s "
            "WHERE id = %s AND facts IS NULL AND probe_error IS NULL",
            media.facts,
            media.probe_error,
            media.poster_key,
            media.id,
        )
        return recorded == 1


class _BorrowCheck:
    """The pool's check of a connection it lends, so that a dead one is replaced instead
    of failing a request, at the cost of a round trip only where one may be dead: a new
    connection, one idle for IDLE_CHECK seconds, or one the server wrote to while it sat
    in the pool (a server that restarts or ends the session, pg_terminate_backend or
    idle_session_timeout, says so and closes the socket). A busy server's borrows cost a
    poll(2) each, not a round trip."""

    def __init__(self) -> None:
        self._returned: WeakKeyDictionary[Connection, float] = WeakKeyDictionary()

    def returned(self, connection: Connection) -> None:
        self._returned[connection] = time.monotonic()

    async def check(self, connection: Connection) -> None:
        returned = self._returned.get(connection)
        if returned is None or time.monotonic() - returned >= IDLE_CHECK or _spoken_to(connection):
            await AsyncConnectionPool.check_connection(connection)


def _spoken_to(connection: Connection) -> bool:
    """Whether the server wrote to the connection (or closed it) since its last answer."""
    socket = select.poll()
    socket.register(connection.fileno(), select.POLLIN)
    return bool(socket.poll(0))


async def _one(connection: Connection, sql: str, *parameters: Any) -> DictRow | None:
    return await (await connection.execute(sql, parameters)).fetchone()


async def _session_where(connection: Connection, where: str, key: str) -> UploadSession | None:
    row = await _one(connection, f"SELECT * FROM sessions WHERE {where}", key)
    return _record(UploadSession, row) if row else None


async def _media_row(connection: Connection, media_id: str, *, lock: bool = False) -> Media | None:
    sql = "SELECT * FROM media WHERE id = %s" + (" FOR UPDATE" if lock else "")
    row = await _one(connection, sql, media_id)
    return _record(Media, row) if row else None


# A delivery waits for the earlier pending ones of its media at its endpoint.
FIRST_OF_MEDIA = (
    "NOT EXISTS (SELECT 1 FROM events AS before WHERE before.endpoint = e.endpoint "
    "AND before.media_id = e.media_id AND before.state = %s AND before.seq < e.seq)"
)


def _delivery(row: DictRow) -> Delivery:
    return Delivery(
        seq=row["seq"],
        id=row["id"],
        endpoint=row["endpoint"],
        media_id=row["media_id"],
        type=row["type"],
        body=row["body"],
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        created_at=row["created_at"].astimezone(UTC),
        last_error=row["last_error"],
    )


def _now() -> datetime:
    return datetime.now(UTC)
