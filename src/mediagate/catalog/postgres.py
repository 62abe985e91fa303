"""PostgreSQL catalog (MEDIAGATE_DATABASE_URL): one database shared by every instance.

Each method is one transaction on a connection borrowed from an async pool and
given back at its end: no session state (SET, temporary tables, advisory locks
held across statements) outlives a method, and server-side prepared statements
are off, so the catalog works behind pgbouncer in transaction mode as well as
straight on the server. The statements are those of the SQLite catalog
(catalog/sql.py); this module is their driver, the schema steps, and what only a
shared catalog does (`SharedCatalog`: leases, claims, shared values).

The pool's connections are in autocommit: a method of one statement (most reads)
is that statement alone, its own transaction, one round trip; a method of several
statements opens an explicit transaction (`_begin`), BEGIN … COMMIT.

A server that cannot be reached (connection refused or lost, no connection
free within MEDIAGATE_DATABASE_TIMEOUT) is `CatalogUnavailable`, a 503 of its own: it is not an
S3 outage, so it never opens the S3 breaker nor sends chunks to local disk.
"""

from __future__ import annotations

import contextlib
import functools
import select
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from mediagate.catalog.base import ClaimTake, LeaseRenewal, LeaseTake
from mediagate.catalog.schema import SchemaUpgrade, Step, missing_steps
from mediagate.catalog.sql import (
    CHUNK_COLUMNS,
    UPSERT_CHUNK,
    ParentGone,
    Row,
    SQLCatalog,
    Tx,
    plain,
    received,
    row_of,
)
from mediagate.errors import CatalogUnavailable, NotFound, StorageFull
from mediagate.events import Event
from mediagate.models import Chunk, SessionState

log = structlog.get_logger("mediagate.catalog")

T = TypeVar("T")
Connection = psycopg.AsyncConnection[DictRow]
Cursor = psycopg.AsyncCursor[DictRow]

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


class PostgresCatalog(SQLCatalog):
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    completed_forgets = ("DELETE FROM chunk_leases WHERE session_id = ?",)

    def __init__(
        self,
        pool: AsyncConnectionPool[Connection],
        upgrade: SchemaUpgrade,
        borrow: _BorrowCheck,
        endpoints: Sequence[str] = (),
    ) -> None:
        super().__init__(endpoints)
        self._pool = pool
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
    async def _begin(self) -> AsyncIterator[_Statements]:
        """A pooled connection in one transaction, committed on success and rolled back
        on error: for a method of several statements."""
        async with self._connection() as connection, connection.transaction():
            yield _Statements(connection)

    async def _in_transaction(self, work: Callable[[Tx], Coroutine[Any, Any, T]]) -> tuple[T, Tx]:
        async with self._begin() as tx:
            result = await work(tx)
        return result, tx

    async def _fetch_one(self, sql: str, *parameters: Any) -> Row | None:
        async with self._connection() as connection:
            return await _Statements(connection).fetch_one(sql, *parameters)

    async def _fetch_all(self, sql: str, *parameters: Any) -> list[Row]:
        async with self._connection() as connection:
            return await _Statements(connection).fetch_all(sql, *parameters)

    async def _execute(self, sql: str, *parameters: Any) -> int:
        async with self._connection() as connection:
            return await _Statements(connection).execute(sql, *parameters)

    async def _insert_with_event(self, insert: str, values: Sequence[Any], event: Event) -> None:
        # One statement (atomic on its own) in one round trip, as without webhooks,
        # rather than BEGIN, two INSERTs and COMMIT.
        events, parameters = self._event_insert(event)
        await self._execute(f"WITH created AS ({insert}) {events}", *values, *parameters)
        if self._on_events is not None:
            self._on_events()

    # --- the rules of several instances (core/session_locks.py) ---------------------

    async def take_chunk_lease(
        self, session_id: str, number: int, owner: str, seconds: float, *, first: bool
    ) -> LeaseTake:
        async with self._begin() as tx:
            # FOR SHARE conflicts with the FOR UPDATE of `claim`: either the claim
            # sees this lease or this sees the claim (docs/architecture.md).
            row = await tx.fetch_one(
                "SELECT state FROM sessions WHERE id = ? FOR SHARE", session_id
            )
            if row is None:
                return LeaseTake.GONE
            if row["state"] != SessionState.OPEN.value or await tx.fetch_one(
                "SELECT 1 FROM claims WHERE kind = 'session' AND item = ? AND expires_at > now()",
                session_id,
            ):
                return LeaseTake.CLOSED
            taken = await tx.fetch_one(
                "INSERT INTO chunk_leases (session_id, number, owner, expires_at) "
                "VALUES (?, ?, ?, now() + make_interval(secs => ?)) "
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
                await tx.execute(
                    "DELETE FROM chunks WHERE session_id = ? AND number = ?", session_id, number
                )
                return LeaseTake.HELD
            # The newest attempt marks the chunk wanted (replacing an older waiter's
            # mark); a waiter keeps its mark alive while it is still the newest.
            mine = "" if first else "AND wanted_by = ? "
            marked = await tx.fetch_one(
                "UPDATE chunk_leases SET wanted_by = ?, "
                "wanted_until = now() + make_interval(secs => ?) "
                f"WHERE session_id = ? AND number = ? {mine}RETURNING 1",
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
        row = await self._fetch_one(
            "UPDATE chunk_leases SET expires_at = now() + make_interval(secs => ?) "
            "WHERE session_id = ? AND number = ? AND owner = ? RETURNING wanted_by",
            seconds,
            session_id,
            number,
            owner,
        )
        if row is None:
            return LeaseRenewal.LOST
        return LeaseRenewal.HELD if row["wanted_by"] is None else LeaseRenewal.WANTED

    async def release_chunk_lease(self, session_id: str, number: int, owner: str) -> None:
        await self._execute(
            "UPDATE chunk_leases SET owner = NULL "
            "WHERE session_id = ? AND number = ? AND owner = ?",
            session_id,
            number,
            owner,
        )

    async def record_chunk(self, session_id: str, chunk: Chunk, owner: str) -> int | None:
        try:
            async with self._begin() as tx:
                held = await tx.fetch_one(
                    "SELECT 1 FROM chunk_leases "
                    "WHERE session_id = ? AND number = ? AND owner = ? FOR UPDATE",
                    session_id,
                    chunk.number,
                    owner,
                )
                if held is None:
                    if await tx.fetch_one("SELECT 1 FROM sessions WHERE id = ?", session_id):
                        return None
                    raise NotFound(f"no upload session {session_id}")  # its leases went with it
                await tx.execute(UPSERT_CHUNK, session_id, *row_of(chunk, CHUNK_COLUMNS))
                await tx.execute(
                    "UPDATE chunk_leases SET owner = NULL "
                    "WHERE session_id = ? AND number = ? AND owner = ?",
                    session_id,
                    chunk.number,
                    owner,
                )
                return await received(tx, session_id)
        except ParentGone:  # the session is gone
            raise NotFound(f"no upload session {session_id}") from None

    async def claim(
        self, kind: str, item: str, owner: str, seconds: float, *, idle_session: bool = False
    ) -> ClaimTake:
        async with self._begin() as tx:
            if kind == "session":
                locked = await tx.fetch_one("SELECT 1 FROM sessions WHERE id = ? FOR UPDATE", item)
                if locked is None:
                    return ClaimTake.GONE
                # A statement after the row lock: it sees every lease committed before.
                if idle_session and await tx.fetch_one(
                    "SELECT 1 FROM chunk_leases WHERE session_id = ? "
                    "AND owner IS NOT NULL AND expires_at > now() LIMIT 1",
                    item,
                ):
                    return ClaimTake.CHUNKS
            taken = await tx.fetch_one(
                "INSERT INTO claims (kind, item, owner, expires_at) "
                "VALUES (?, ?, ?, now() + make_interval(secs => ?)) "
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
        async with self._begin() as tx:
            # A conflicting row stays locked to the end of the transaction, taken or not:
            # its holder's release cannot slip between this and the mark below.
            taken = await tx.fetch_one(
                "INSERT INTO claims (kind, item, owner, expires_at) "
                "VALUES (?, ?, ?, now() + make_interval(secs => ?)) "
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
            mine = "" if first else "AND wanted_by = ? "
            marked = await tx.fetch_one(
                "UPDATE claims SET wanted_by = ?, "
                "wanted_until = now() + make_interval(secs => ?) "
                f"WHERE kind = ? AND item = ? {mine}RETURNING 1",
                owner,
                seconds,
                kind,
                item,
                *([] if first else [owner]),
            )
        return LeaseTake.WAITING if marked is not None else LeaseTake.SUPERSEDED

    async def renew_claim(self, kind: str, item: str, owner: str, seconds: float) -> LeaseRenewal:
        row = await self._fetch_one(
            "UPDATE claims SET expires_at = now() + make_interval(secs => ?) "
            "WHERE kind = ? AND item = ? AND owner = ? RETURNING wanted_by",
            seconds,
            kind,
            item,
            owner,
        )
        if row is None:
            return LeaseRenewal.LOST
        return LeaseRenewal.HELD if row["wanted_by"] is None else LeaseRenewal.WANTED

    async def release_claim(self, kind: str, item: str, owner: str) -> None:
        async with self._begin() as tx:
            # A wanted claim is kept, expired and owned by nobody (''), so that the one
            # who wants it takes it next and no late renewal of the releaser revives it.
            await tx.execute(
                "DELETE FROM claims WHERE kind = ? AND item = ? AND owner = ? "
                "AND wanted_by IS NULL",
                kind,
                item,
                owner,
            )
            await tx.execute(
                "UPDATE claims SET owner = '', expires_at = now() "
                "WHERE kind = ? AND item = ? AND owner = ?",
                kind,
                item,
                owner,
            )

    async def shared_value(self, name: str, proposed: str) -> str:
        async with self._begin() as tx:
            await tx.execute(
                "INSERT INTO shared_values (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                name,
                proposed,
            )
            row = await tx.fetch_one("SELECT value FROM shared_values WHERE name = ?", name)
        assert row is not None
        return str(row["value"])

    async def close(self) -> None:
        await self._pool.close()


class _Statements:
    """The PostgreSQL driver's `Tx`: statements on one connection, `?` written `%s`."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.wrote_events = False

    async def _cursor(self, sql: str, parameters: Sequence[Any]) -> Cursor:
        try:
            return await self._connection.execute(
                _pyformat(sql), [plain(value) for value in parameters]
            )
        except psycopg.errors.ForeignKeyViolation as error:
            raise ParentGone(str(error)) from error

    async def fetch_one(self, sql: str, *parameters: Any) -> Row | None:
        row = await (await self._cursor(sql, parameters)).fetchone()
        return _utc(row) if row is not None else None

    async def fetch_all(self, sql: str, *parameters: Any) -> list[Row]:
        return [_utc(row) for row in await (await self._cursor(sql, parameters)).fetchall()]

    async def execute(self, sql: str, *parameters: Any) -> int:
        return (await self._cursor(sql, parameters)).rowcount


@functools.lru_cache(maxsize=256)
def _pyformat(sql: str) -> str:
    return sql.replace("?", "%s")


def _utc(row: DictRow) -> Row:
    """A row, its timestamps in UTC whatever the server's TimeZone."""
    return {
        name: value.astimezone(UTC) if isinstance(value, datetime) else value
        for name, value in row.items()
    }


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
