"""The catalog's statements, written once for SQLite and PostgreSQL.

`SQLCatalog` implements every method of the `Catalog` roles against a small driver
that each database provides (catalog/sqlite.py, catalog/postgres.py):

- `_fetch_one`, `_fetch_all`, `_execute` run one statement alone (on PostgreSQL one
  round trip, in autocommit);
- `_in_transaction(work)` runs `work(tx)` as one transaction, its statements through
  the `Tx` it is given.

Statements use `?` placeholders (PostgreSQL's driver turns them into `%s`) and Python
values (each driver stores datetimes and enums its way); rows come back as dicts.
What stays per database: the schema steps (DDL), the connection, the error mapping,
and the row locks (`for_update`, `skip_locked`), which SQLite does without: its
writer holds the whole file from BEGIN IMMEDIATE on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from mediagate.errors import NotFound, SessionExpired, SessionNotOpen
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
Row = dict[str, Any]

SESSION_COLUMNS = list(UploadSession.model_fields)
CHUNK_COLUMNS = list(Chunk.model_fields)
MEDIA_COLUMNS = list(Media.model_fields)
TUS_COLUMNS = list(TusUpload.model_fields)

# A delivery waits for the earlier pending ones of its media at its endpoint.
FIRST_OF_MEDIA = (
    "NOT EXISTS (SELECT 1 FROM events AS before WHERE before.endpoint = e.endpoint "
    "AND before.media_id = e.media_id AND before.state = ? AND before.seq < e.seq)"
)


class Tx(Protocol):
    """The statements of one transaction."""

    # Set by a statement that wrote an event: after the commit, the outbox is told.
    wrote_events: bool

    async def fetch_one(self, sql: str, *parameters: Any) -> Row | None: ...

    async def fetch_all(self, sql: str, *parameters: Any) -> list[Row]: ...

    async def execute(self, sql: str, *parameters: Any) -> int:
        """Run the statement; how many rows it changed."""


class ParentGone(Exception):
    """A row refers to one that is not there (a foreign key), raised by the drivers."""


def plain(value: Any) -> Any:
    """A parameter as both drivers store it: an enum by its value."""
    return value.value if isinstance(value, StrEnum) else value


def marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


def _insert(table: str, columns: list[str], prefix: Sequence[str] = ()) -> str:
    names = [*prefix, *columns]
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks(names)})"


def _update_all(columns: list[str], key: str) -> str:
    return ", ".join(f"{column} = EXCLUDED.{column}" for column in columns if column != key)


def row_of(model: Any, columns: list[str]) -> tuple[Any, ...]:
    values = model.model_dump()
    return tuple(values[column] for column in columns)


INSERT_SESSION = _insert("sessions", SESSION_COLUMNS)
UPSERT_CHUNK = (
    f"{_insert('chunks', CHUNK_COLUMNS, ['session_id'])} "
    f"ON CONFLICT (session_id, number) DO UPDATE SET {_update_all(CHUNK_COLUMNS, 'number')}"
)
INSERT_MEDIA = _insert("media", MEDIA_COLUMNS)
UPSERT_MEDIA = f"{INSERT_MEDIA} ON CONFLICT (id) DO UPDATE SET {_update_all(MEDIA_COLUMNS, 'id')}"
INSERT_TUS = _insert("tus_uploads", TUS_COLUMNS)
EVENT_COLUMNS = ["id", "endpoint", "media_id", "type", "body", "state", "created_at", "next_at"]


class SQLCatalog(ABC):
    """The `Catalog` roles on a SQL database; a subclass is its driver."""

    # The clause that locks the rows a SELECT reads until the commit, and the one that
    # skips rows locked by others; nothing where a writer holds the whole database.
    for_update = ""
    skip_locked = ""
    # What else a completed session forgets, in its transaction: statements of its id.
    completed_forgets: tuple[str, ...] = ()

    def __init__(self, endpoints: Sequence[str]) -> None:
        self._endpoints = tuple(endpoints)
        self._on_events: Callable[[], None] | None = None

    # --- the driver ---------------------------------------------------------------

    @abstractmethod
    async def _fetch_one(self, sql: str, *parameters: Any) -> Row | None: ...

    @abstractmethod
    async def _fetch_all(self, sql: str, *parameters: Any) -> list[Row]: ...

    @abstractmethod
    async def _execute(self, sql: str, *parameters: Any) -> int: ...

    @abstractmethod
    async def _in_transaction(self, work: Callable[[Tx], Coroutine[Any, Any, T]]) -> tuple[T, Tx]:
        """`work` in one transaction, committed if it returns, rolled back if it raises."""

    # --- shared -------------------------------------------------------------------

    async def _transaction(self, work: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        result, tx = await self._in_transaction(work)
        if tx.wrote_events and self._on_events is not None:
            self._on_events()
        return result

    def on_events_written(self, callback: Callable[[], None]) -> None:
        self._on_events = callback

    def _event_insert(self, event: Event) -> tuple[str, list[Any]]:
        """One statement writing the event once per endpoint, and its parameters.

        Only with endpoints: without any, a method writes no event and skips the reads
        that its event would need, so each caller checks `self._endpoints` first."""
        row = f"({marks(EVENT_COLUMNS)})"
        sql = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES "
        sql += ", ".join(row for _ in self._endpoints)
        parameters: list[Any] = []
        for endpoint in self._endpoints:
            parameters += [event.id, endpoint, event.media_id, event.type, event.body]
            parameters += [DeliveryState.PENDING, event.created_at, event.created_at]
        return sql, parameters

    async def _write_event(self, tx: Tx, event: Event) -> None:
        """The event, once per endpoint, in the caller's transaction."""
        tx.wrote_events = True
        sql, parameters = self._event_insert(event)
        await tx.execute(sql, *parameters)

    async def ping(self) -> None:
        await self._fetch_one("SELECT 1")

    # --- sessions and chunks --------------------------------------------------------

    async def add_session(self, session: UploadSession) -> None:
        values = row_of(session, SESSION_COLUMNS)
        if not self._endpoints:
            await self._execute(INSERT_SESSION, *values)
            return

        await self._insert_with_event(
            INSERT_SESSION, values, session_event(EventType.UPLOAD_CREATED, session, _now())
        )

    async def _insert_with_event(self, insert: str, values: Sequence[Any], event: Event) -> None:
        """A row and the event announcing it, atomically."""

        async def add(tx: Tx) -> None:
            await tx.execute(insert, *values)
            await self._write_event(tx, event)

        await self._transaction(add)

    async def get_session(self, session_id: str) -> UploadSession | None:
        row = await self._fetch_one("SELECT * FROM sessions WHERE id = ?", session_id)
        return UploadSession.model_validate(row) if row else None

    async def set_session_state(
        self,
        session_id: str,
        state: SessionState,
        *,
        expected: SessionState | tuple[SessionState, ...],
    ) -> bool:
        leaving = expected if isinstance(expected, tuple) else (expected,)
        if state in leaving:
            raise ValueError(f"a change to {state} must leave another state")
        update = f"UPDATE sessions SET state = ? WHERE id = ? AND state IN ({marks(leaving)})"
        parameters = (state, session_id, *leaving)
        if not self._endpoints or state is not SessionState.EXPIRED:
            return await self._execute(update, *parameters) == 1

        async def expire(tx: Tx) -> bool:
            row = await tx.fetch_one(f"{update} RETURNING *", *parameters)
            if row is None:
                return False
            session = UploadSession.model_validate(row)
            await self._write_event(tx, session_event(EventType.UPLOAD_EXPIRED, session, _now()))
            return True

        return await self._transaction(expire)

    async def replace_upload(self, session_id: str, upload_id: str, *, error: str) -> None:
        async def replace(tx: Tx) -> None:
            await _change_live_session(
                tx,
                session_id,
                "upload_id = ?, state = ?, last_error = ?",
                upload_id,
                SessionState.OPEN,
                error,
            )
            await tx.execute("DELETE FROM chunks WHERE session_id = ?", session_id)
            await tx.execute(
                "UPDATE media SET state = ?, error = ? "
                "WHERE id = (SELECT media_id FROM sessions WHERE id = ?)",
                MediaState.FAILED,
                error,
                session_id,
            )
            if not self._endpoints:
                return
            session = await _session_where(tx, "id = ?", session_id)
            media = await _media_row(tx, session.media_id) if session else None
            if media is not None:
                event = media_event(EventType.MEDIA_FAILED, media, session, _now(), reason=error)
                await self._write_event(tx, event)

        await self._transaction(replace)

    async def note_error(self, session_id: str, error: str) -> None:
        async def note(tx: Tx) -> None:
            await tx.execute("UPDATE sessions SET last_error = ? WHERE id = ?", error, session_id)
            await tx.execute(
                "UPDATE media SET error = ? "
                "WHERE id = (SELECT media_id FROM sessions WHERE id = ?)",
                error,
                session_id,
            )

        await self._transaction(note)

    async def name_session(self, session_id: str, filename: str, content_type: str) -> None:
        await self._execute(
            "UPDATE sessions SET filename = ?, content_type = ? WHERE id = ? AND state = ?",
            filename,
            content_type,
            session_id,
            SessionState.OPEN,
        )

    async def delete_session(self, session_id: str) -> None:
        await self._execute("DELETE FROM sessions WHERE id = ?", session_id)

    async def put_chunk(self, session_id: str, chunk: Chunk) -> int:
        async def put(tx: Tx) -> int:
            await tx.execute(UPSERT_CHUNK, session_id, *row_of(chunk, CHUNK_COLUMNS))
            return await received(tx, session_id)

        try:
            return await self._transaction(put)
        except ParentGone:
            raise NotFound(f"no upload session {session_id}") from None

    async def drop_chunk(self, session_id: str, number: int) -> None:
        # A DELETE that matches no row writes nothing, so its commit costs no flush.
        await self._execute(
            "DELETE FROM chunks WHERE session_id = ? AND number = ? "
            "AND (SELECT state FROM sessions WHERE id = ?) = ?",
            session_id,
            number,
            session_id,
            SessionState.OPEN,
        )

    async def chunks(self, session_id: str) -> list[Chunk]:
        rows = await self._fetch_all(
            f"SELECT {', '.join(CHUNK_COLUMNS)} FROM chunks "
            "WHERE session_id = ? AND pending IS NULL ORDER BY number",
            session_id,
        )
        return [Chunk.model_validate(row) for row in rows]

    async def complete_session(self, session_id: str, media: Media) -> None:
        if media.state is MediaState.FINALIZING:
            state = SessionState.FINALIZING
        else:
            state = SessionState.COMPLETED

        async def complete(tx: Tx) -> None:
            await _change_live_session(tx, session_id, "state = ?, last_error = NULL", state)
            announce = bool(self._endpoints) and media.state is MediaState.READY
            if announce:
                before = await _media_row(tx, media.id, lock=self.for_update)
                announce = before is None or before.state is not MediaState.READY
            await tx.execute(UPSERT_MEDIA, *row_of(media, MEDIA_COLUMNS))
            if announce:
                session = await _session_where(tx, "id = ?", session_id)
                await self._write_event(
                    tx, media_event(EventType.MEDIA_READY, media, session, _now())
                )
            if state is SessionState.COMPLETED:
                await tx.execute("DELETE FROM chunks WHERE session_id = ?", session_id)
                for forget in self.completed_forgets:
                    await tx.execute(forget, session_id)

        await self._transaction(complete)

    async def sessions_in_state(self, state: SessionState) -> list[UploadSession]:
        rows = await self._fetch_all(
            "SELECT * FROM sessions WHERE state = ? ORDER BY created_at", state
        )
        return [UploadSession.model_validate(row) for row in rows]

    async def count_sessions(self, state: SessionState) -> int:
        row = await self._fetch_one("SELECT count(*) AS n FROM sessions WHERE state = ?", state)
        return int(row["n"]) if row else 0

    async def count_open_sessions(self, user_id: str) -> int:
        row = await self._fetch_one(
            "SELECT count(*) AS n FROM sessions WHERE user_id = ? AND state IN (?, ?)",
            user_id,
            SessionState.OPEN,
            SessionState.FINALIZING,
        )
        return int(row["n"]) if row else 0

    async def expired_sessions(self, now: datetime) -> list[UploadSession]:
        rows = await self._fetch_all(
            "SELECT * FROM sessions WHERE state = ? AND expires_at <= ? ORDER BY expires_at",
            SessionState.OPEN,
            now,
        )
        return [UploadSession.model_validate(row) for row in rows]

    # --- media ------------------------------------------------------------------------

    async def get_media(self, media_id: str) -> Media | None:
        row = await self._fetch_one("SELECT * FROM media WHERE id = ?", media_id)
        return Media.model_validate(row) if row else None

    async def delete_media(self, media_id: str) -> None:
        if not self._endpoints:
            await self._execute("DELETE FROM media WHERE id = ?", media_id)
            return

        async def delete(tx: Tx) -> None:
            row = await tx.fetch_one("DELETE FROM media WHERE id = ? RETURNING *", media_id)
            if row is not None:
                session = await _session_where(tx, "media_id = ?", media_id)
                event = media_event(
                    EventType.MEDIA_DELETED, Media.model_validate(row), session, _now()
                )
                await self._write_event(tx, event)

        await self._transaction(delete)

    async def list_media(
        self, user_id: str, limit: int, before: tuple[datetime, str] | None
    ) -> list[Media]:
        if before is None:
            rows = await self._fetch_all(
                "SELECT * FROM media WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                user_id,
                limit,
            )
        else:
            created_at, media_id = before
            rows = await self._fetch_all(
                "SELECT * FROM media WHERE user_id = ? AND (created_at, id) < (?, ?) "
                "ORDER BY created_at DESC, id DESC LIMIT ?",
                user_id,
                created_at,
                media_id,
                limit,
            )
        return [Media.model_validate(row) for row in rows]

    async def add_media(self, media: Media) -> bool:
        added = await self._execute(
            f"{INSERT_MEDIA} ON CONFLICT (id) DO NOTHING", *row_of(media, MEDIA_COLUMNS)
        )
        return added == 1

    async def move_media(
        self, media_id: str, *, source: StorageKind, target: StorageKind, checksum: str
    ) -> bool:
        update = (
            "UPDATE media SET storage = ?, checksum = ? WHERE id = ? AND storage = ? AND state = ?"
        )
        parameters = (target, checksum, media_id, source, MediaState.READY)
        if not self._endpoints:
            return await self._execute(update, *parameters) == 1

        async def move(tx: Tx) -> bool:
            row = await tx.fetch_one(f"{update} RETURNING *", *parameters)
            if row is None:
                return False
            session = await _session_where(tx, "media_id = ?", media_id)
            event = media_event(
                EventType.MEDIA_MIGRATED, Media.model_validate(row), session, _now()
            )
            await self._write_event(tx, event)
            return True

        return await self._transaction(move)

    async def media_in_storage(
        self, storage: StorageKind, *, user_id: str | None, after: str | None, limit: int
    ) -> list[Media]:
        owner = "" if user_id is None else "AND user_id = ? "
        rows = await self._fetch_all(
            f"SELECT * FROM media WHERE storage = ? AND state = ? AND id > ? {owner}"
            "ORDER BY id LIMIT ?",
            storage,
            MediaState.READY,
            after or "",
            *([] if user_id is None else [user_id]),
            limit,
        )
        return [Media.model_validate(row) for row in rows]

    async def unprobed_media(self, limit: int) -> list[Media]:
        rows = await self._fetch_all(
            "SELECT * FROM media WHERE state = ? AND facts IS NULL AND probe_error IS NULL "
            "ORDER BY created_at LIMIT ?",
            MediaState.READY,
            limit,
        )
        return [Media.model_validate(row) for row in rows]

    async def record_probe(self, media: Media) -> bool:
        recorded = await self._execute(
            "UPDATE media SET facts = ?, probe_error = ?, poster_key = ? "
            "WHERE id = ? AND facts IS NULL AND probe_error IS NULL",
            media.facts,
            media.probe_error,
            media.poster_key,
            media.id,
        )
        return recorded == 1

    # --- tus records -------------------------------------------------------------------

    async def add_tus_upload(self, upload: TusUpload) -> None:
        await self._execute(INSERT_TUS, *row_of(upload, TUS_COLUMNS))

    async def get_tus_upload(self, session_id: str) -> TusUpload | None:
        row = await self._fetch_one("SELECT * FROM tus_uploads WHERE session_id = ?", session_id)
        return TusUpload.model_validate(row) if row else None

    async def take_partials(self, final_id: str, partial_ids: list[str]) -> bool:
        partials = marks(partial_ids)

        async def take(tx: Tx) -> bool:
            if self.for_update:
                # Locked in one order, so two finals sharing partials cannot deadlock; the
                # next statement sees every take committed before the locks were granted.
                await tx.fetch_all(
                    f"SELECT 1 FROM tus_uploads WHERE session_id IN ({partials}) "
                    f"ORDER BY session_id{self.for_update}",
                    *partial_ids,
                )
            taken = await tx.fetch_one(
                "SELECT 1 FROM tus_uploads JOIN sessions ON sessions.id = tus_uploads.part_of "
                f"WHERE tus_uploads.session_id IN ({partials}) AND sessions.id <> ? "
                "AND sessions.state <> ? LIMIT 1",
                *partial_ids,
                final_id,
                SessionState.EXPIRED,
            )
            if taken is None:
                await tx.execute(
                    f"UPDATE tus_uploads SET part_of = ? WHERE session_id IN ({partials})",
                    final_id,
                    *partial_ids,
                )
            return taken is None

        return await self._transaction(take)

    async def set_length(self, session_id: str, size: int, total_chunks: int) -> None:
        async def fix(tx: Tx) -> None:
            await tx.execute(
                "DELETE FROM chunks WHERE session_id = ? AND size + coalesce("
                "start, number * (SELECT chunk_size FROM sessions WHERE id = ?)) > ?",
                session_id,
                session_id,
                size,
            )
            await tx.execute(
                "UPDATE sessions SET size = ?, total_chunks = ? WHERE id = ?",
                size,
                total_chunks,
                session_id,
            )
            await tx.execute(
                "UPDATE tus_uploads SET length_deferred = ? WHERE session_id = ?",
                False,
                session_id,
            )

        await self._transaction(fix)

    async def record_tail(
        self, session_id: str, *, start: int, size: int, storage: StorageKind, pending: str | None
    ) -> None:
        async def record(tx: Tx) -> None:
            await tx.execute(
                "UPDATE tus_uploads SET tail_start = ?, tail_size = ?, tail_storage = ? "
                "WHERE session_id = ?",
                start,
                size,
                storage,
                session_id,
            )
            if pending is not None:
                await tx.execute(
                    "UPDATE chunks SET pending = NULL WHERE session_id = ? AND pending = ?",
                    session_id,
                    pending,
                )

        await self._transaction(record)

    # --- the outbox (events.py) ----------------------------------------------------------

    async def claim_events(self, now: datetime, hold: float, limit: int) -> list[Delivery]:
        """Pending deliveries due at `now`, each the first pending one of its media at its
        endpoint, by seq; each is held (not due) for `hold` seconds, while it is sent.
        Instances claiming at once take different ones (`skip_locked`)."""

        async def claim(tx: Tx) -> list[Row]:
            return await tx.fetch_all(
                "UPDATE events SET next_at = ? WHERE seq IN ("
                "SELECT seq FROM events AS e WHERE state = ? AND next_at <= ? AND "
                f"{FIRST_OF_MEDIA} ORDER BY seq LIMIT ?{self.skip_locked}) RETURNING *",
                now + timedelta(seconds=hold),
                DeliveryState.PENDING,
                now,
                DeliveryState.PENDING,
                limit,
            )

        rows = await self._transaction(claim)
        return sorted((_delivery(row) for row in rows), key=lambda delivery: delivery.seq)

    async def settle_event(
        self, seq: int, state: DeliveryState, *, next_at: datetime | None, error: str | None
    ) -> None:
        """Record an attempt: delivered, gone, dead, or pending again from `next_at`."""
        await self._execute(
            "UPDATE events SET state = ?, attempts = attempts + 1, "
            "next_at = coalesce(?, next_at), last_error = ? WHERE seq = ?",
            state,
            next_at,
            error,
            seq,
        )

    async def events_in_state(self, state: DeliveryState, limit: int) -> list[Delivery]:
        rows = await self._fetch_all(
            "SELECT * FROM events WHERE state = ? ORDER BY seq LIMIT ?", state, limit
        )
        return [_delivery(row) for row in rows]

    async def count_events(self) -> dict[DeliveryState, int]:
        rows = await self._fetch_all("SELECT state, count(*) AS n FROM events GROUP BY state")
        return {DeliveryState(row["state"]): int(row["n"]) for row in rows}

    async def prune_events(self, before: datetime) -> int:
        """Forget the deliveries done (delivered or gone) of events older than `before`."""
        return await self._execute(
            "DELETE FROM events WHERE state IN (?, ?) AND created_at < ?",
            DeliveryState.DELIVERED,
            DeliveryState.GONE,
            before,
        )

    async def requeue_event(self, event_id: str, now: datetime) -> int:
        """Send a dead event again (at each endpoint where it is dead), with a new retry
        window from `now`; how many deliveries that makes."""
        return await self._execute(
            "UPDATE events SET state = ?, attempts = 0, created_at = ?, next_at = ? "
            "WHERE id = ? AND state = ?",
            DeliveryState.PENDING,
            now,
            now,
            event_id,
            DeliveryState.DEAD,
        )


async def _change_live_session(tx: Tx, session_id: str, assignments: str, *values: Any) -> None:
    """Update a session that still holds its upload (open or finalizing); raise, having
    changed nothing, if a racing change (expiry, completion, abort) came first."""
    changed = await tx.execute(
        f"UPDATE sessions SET {assignments} WHERE id = ? AND state IN (?, ?)",
        *values,
        session_id,
        SessionState.OPEN,
        SessionState.FINALIZING,
    )
    if changed:
        return
    row = await tx.fetch_one("SELECT state FROM sessions WHERE id = ?", session_id)
    if row is None:
        raise NotFound(f"no upload session {session_id}")
    if row["state"] == SessionState.EXPIRED:
        raise SessionExpired(f"upload session {session_id} has expired")
    raise SessionNotOpen(f"upload session {session_id} is {row['state']}")


async def received(tx: Tx, session_id: str) -> int:
    row = await tx.fetch_one(
        "SELECT count(*) AS n FROM chunks WHERE session_id = ? AND pending IS NULL", session_id
    )
    return int(row["n"]) if row else 0


async def _session_where(tx: Tx, where: str, key: str) -> UploadSession | None:
    row = await tx.fetch_one(f"SELECT * FROM sessions WHERE {where}", key)
    return UploadSession.model_validate(row) if row else None


async def _media_row(tx: Tx, media_id: str, *, lock: str = "") -> Media | None:
    row = await tx.fetch_one(f"SELECT * FROM media WHERE id = ?{lock}", media_id)
    return Media.model_validate(row) if row else None


def _delivery(row: Row) -> Delivery:
    created_at = row["created_at"]
    return Delivery(
        seq=row["seq"],
        id=row["id"],
        endpoint=row["endpoint"],
        media_id=row["media_id"],
        type=row["type"],
        body=row["body"],
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        created_at=datetime.fromisoformat(created_at)
        if isinstance(created_at, str)
        else created_at,
        last_error=row["last_error"],
    )


def _now() -> datetime:
    return datetime.now(UTC)
