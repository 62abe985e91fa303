"""The catalog's roles: the durable record of sessions, chunks and media.

Each caller is typed against the roles it uses (`SessionRecords`, `MediaRecords`,
`TusRecords`, `Outbox`; `SharedCatalog` for several instances); `Catalog` is all of
them, for the composition root.

A chunk is acknowledged to the client only after `put_chunk` returns, so
whatever the catalog has committed survives a crash and is what a restarted
server resumes from. SQLite is the embedded default; the PostgreSQL catalog
implements the same methods (tests/test_catalog.py runs one suite on both).
Every method raises `CatalogUnavailable` when the database cannot be used,
never `StorageUnavailable`, which is about the blob stores.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from mediagate.events import Delivery, DeliveryState
from mediagate.models import (
    Chunk,
    Media,
    SessionState,
    StorageKind,
    TusUpload,
    UploadSession,
)

# The SQLite catalog's file inside the data directory, shared by the server and
# `mediagate migrate`.
CATALOG_FILE = "catalog.sqlite3"


class SessionRecords(Protocol):
    """Upload sessions and their chunks."""

    async def add_session(self, session: UploadSession) -> None: ...

    async def get_session(self, session_id: str) -> UploadSession | None: ...

    async def set_session_state(
        self,
        session_id: str,
        state: SessionState,
        *,
        expected: SessionState | tuple[SessionState, ...],
    ) -> bool:
        """Move the session from the `expected` state (one of them) to `state`: one
        compare-and-set, False and nothing changed if the session is gone or in another
        state (a racing change won). ValueError if `state` is one it expects to leave."""

    async def replace_upload(self, session_id: str, upload_id: str, *, error: str) -> None:
        """Point the session at a fresh store upload, forgetting every chunk, and reopen it.

        In the same transaction `error` becomes the session's `last_error`, and
        its media, if recorded, is marked failed with that error. Only from `open` or
        `finalizing`, as `complete_session`.
        """

    async def note_error(self, session_id: str, error: str) -> None:
        """Set the session's `last_error`, and its media's `error` if it has one."""

    async def name_session(self, session_id: str, filename: str, content_type: str) -> None:
        """Set an open session's filename and content type (its media takes them on)."""

    async def delete_session(self, session_id: str) -> None:
        """Forget the session and its chunks."""

    async def put_chunk(self, session_id: str, chunk: Chunk) -> int:
        """Record (or replace) a received chunk; returns how many the session has.

        Raises NotFound if the session is gone (aborted while the chunk arrived)."""

    async def drop_chunk(self, session_id: str, number: int) -> None:
        """Forget a chunk of an open session, durably (nothing if the session is not
        open: a finalizing one needs all its chunks). Called before each write of
        the chunk, so it must cost no commit when the chunk was never recorded."""

    async def chunks(self, session_id: str) -> list[Chunk]:
        """The session's received chunks, by number; pending ones (of a tus PATCH whose
        checksum is not verified yet, or never was) are not received."""

    async def complete_session(self, session_id: str, media: Media) -> None:
        """Add (or update) the session's media and move the session on, in one transaction.

        A `finalizing` media leaves the session finalizing with its chunks kept;
        a ready one completes the session and forgets its chunks. Either way the
        session's `last_error` is cleared. A compare-and-set: only from `open` or
        `finalizing`; otherwise nothing changes and it raises SessionExpired (a racing
        expiry won), SessionNotOpen (completed) or NotFound (gone).
        """

    async def sessions_in_state(self, state: SessionState) -> list[UploadSession]: ...

    async def count_sessions(self, state: SessionState) -> int:
        """How many sessions (of every user) are in `state`."""

    async def count_open_sessions(self, user_id: str) -> int:
        """How many of the user's sessions still hold an upload: `open` (expired or
        not) or `finalizing`."""

    async def expired_sessions(self, now: datetime) -> list[UploadSession]:
        """Open sessions whose expiry time is at or before `now`."""


class MediaRecords(Protocol):
    """The media: what an upload made, or an import."""

    async def get_media(self, media_id: str) -> Media | None: ...

    async def delete_media(self, media_id: str) -> None: ...

    async def list_media(
        self, user_id: str, limit: int, before: tuple[datetime, str] | None
    ) -> list[Media]:
        """The user's media, newest first, strictly older than `before` (created_at, id)."""

    async def add_media(self, media: Media) -> bool:
        """Add a media that no upload session made (an imported file); False if its id is taken."""

    async def move_media(
        self, media_id: str, *, source: StorageKind, target: StorageKind, checksum: str
    ) -> bool:
        """Switch a ready media from `source` to `target` storage (same key), with its checksum.

        One atomic compare-and-set: False, and nothing changed, if the media is
        gone or no longer in `source` (deleted, or moved by someone else).
        """

    async def media_in_storage(
        self, storage: StorageKind, *, user_id: str | None, after: str | None, limit: int
    ) -> list[Media]:
        """Ready media kept in `storage` (one user's, or everyone's), by id, ids after `after`."""

    async def unprobed_media(self, limit: int) -> list[Media]:
        """Ready media that were never probed (made while probing was off, imported, or
        made by a path that does not probe), oldest first."""

    async def record_probe(self, media: Media) -> bool:
        """Record what probing found in `media` (its facts, probe_error and poster_key), once:
        False, and nothing changed, if it is gone or was probed already."""


class UploadRecords(SessionRecords, MediaRecords, Protocol):
    """What the upload engine keeps: sessions, their chunks and the media they make."""


class TusRecords(Protocol):
    """What a tus upload adds to its session."""

    async def add_tus_upload(self, upload: TusUpload) -> None:
        """Record what a tus upload adds to its (already added) session."""

    async def get_tus_upload(self, session_id: str) -> TusUpload | None:
        """The tus record of a session; None for a session of the native API."""

    async def take_partials(self, final_id: str, partial_ids: list[str]) -> bool:
        """Make the partial uploads part of the final upload `final_id`, all or none, in one
        transaction; False, and nothing changed, if one of them is part of another final
        whose session is not gone nor expired (open, finalizing or completed)."""

    async def set_length(self, session_id: str, size: int, total_chunks: int) -> None:
        """Fix a tus upload's size and chunk count (a deferred length, once; the count
        again when its last part is in), forgetting in the same commit every chunk that
        ends past `size`."""

    async def record_tail(
        self, session_id: str, *, start: int, size: int, storage: StorageKind, pending: str | None
    ) -> None:
        """A tus PATCH is done: record the upload's tail and make the chunks the PATCH
        `pending` wrote count, in one commit (its checksum matched)."""


class DirectRecords(SessionRecords, Protocol):
    """What a direct upload (core/direct.py) keeps: its session and chunks, and the
    length of one whose size the client never said, once its parts are listed."""

    async def set_length(self, session_id: str, size: int, total_chunks: int) -> None:
        """Fix the upload's size and chunk count, forgetting in the same commit every
        chunk that ends past `size`."""


class Outbox(Protocol):
    """The events outbox (events.py). With webhook endpoints, add_session
    (upload.created), set_session_state to expired (upload.expired), complete_session
    with a ready media (media.ready), replace_upload of a recorded media (media.failed),
    delete_media (media.deleted) and move_media (media.migrated) write their event in
    their own transaction, one row per endpoint."""

    async def claim_events(self, now: datetime, hold: float, limit: int) -> list[Delivery]:
        """Pending deliveries due at `now`, each the first pending one of its media at its
        endpoint, by seq, each then held for `hold` seconds (not due) while it is sent;
        instances claiming at once take different ones."""

    async def settle_event(
        self, seq: int, state: DeliveryState, *, next_at: datetime | None, error: str | None
    ) -> None:
        """Record an attempt of a delivery: delivered, gone, dead, or pending from `next_at`."""

    async def events_in_state(self, state: DeliveryState, limit: int) -> list[Delivery]: ...

    async def count_events(self) -> dict[DeliveryState, int]: ...

    def on_events_written(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on the event loop) after each commit that wrote an event."""

    async def prune_events(self, before: datetime) -> int:
        """Forget the deliveries done (delivered or gone) of events older than `before`;
        how many. Dead and pending ones are kept."""

    async def requeue_event(self, event_id: str, now: datetime) -> int:
        """Make a dead event's deliveries pending again, retried for a new window from `now`."""


class Catalog(UploadRecords, TusRecords, DirectRecords, Outbox, Protocol):
    """Every role, for the composition root."""

    async def ping(self) -> None:
        """Return once the catalog answers a trivial query; raise if it cannot."""

    async def close(self) -> None: ...


class LeaseTake(StrEnum):
    """What asking for a chunk lease got."""

    HELD = "held"  # this attempt holds the chunk now
    WAITING = "waiting"  # a live holder was asked to let go; ask again
    SUPERSEDED = "superseded"  # a newer attempt asked after this one
    CLOSED = "closed"  # the session is not open, or claimed (being completed)
    GONE = "gone"  # no such session


class LeaseRenewal(StrEnum):
    HELD = "held"
    WANTED = "wanted"  # still held, but a newer attempt asks for it
    LOST = "lost"  # expired and taken by another attempt


class ClaimTake(StrEnum):
    CLAIMED = "claimed"
    BUSY = "busy"  # someone else's claim is live
    CHUNKS = "chunks"  # a chunk of the session is being written
    GONE = "gone"  # no such session


@runtime_checkable
class SharedCatalog(Protocol):
    """What a catalog shared by several instances adds: leases and claims, timed by the
    database's clock (docs/architecture.md, "Several instances")."""

    async def take_chunk_lease(
        self, session_id: str, number: int, owner: str, seconds: float, *, first: bool
    ) -> LeaseTake:
        """Take the chunk for `owner` if it is free (released, or its holder's lease
        expired), forgetting its recorded chunk in the same commit; otherwise mark it
        wanted by `owner` (`first`) or check `owner` is still the newest to want it.
        Only while the session is open and unclaimed."""

    async def renew_chunk_lease(
        self, session_id: str, number: int, owner: str, seconds: float
    ) -> LeaseRenewal: ...

    async def release_chunk_lease(self, session_id: str, number: int, owner: str) -> None: ...

    async def record_chunk(self, session_id: str, chunk: Chunk, owner: str) -> int | None:
        """`put_chunk`, only if `owner` still holds the chunk's lease (else None, nothing
        recorded), releasing the lease in the same commit; NotFound if the session is
        gone."""

    async def claim(
        self, kind: str, item: str, owner: str, seconds: float, *, idle_session: bool = False
    ) -> ClaimTake:
        """Claim `item` for `owner` unless someone else's claim is live. For kind
        "session", under the session's row lock, and with `idle_session` only if no
        chunk of it is being written."""

    async def take_claim(
        self, kind: str, item: str, owner: str, seconds: float, *, first: bool
    ) -> LeaseTake:
        """Claim `item` for `owner` if it is free (released, or its holder's claim expired)
        and nobody newer wants it; otherwise mark it wanted by `owner` (`first`) or check
        `owner` is still the newest to want it (WAITING, else SUPERSEDED): the newest
        request takes over, as with chunk leases."""

    async def renew_claim(
        self, kind: str, item: str, owner: str, seconds: float
    ) -> LeaseRenewal: ...

    async def release_claim(self, kind: str, item: str, owner: str) -> None:
        """Let go; a claim someone wants goes to them before anyone else."""

    async def shared_value(self, name: str, proposed: str) -> str:
        """The value every instance sees under `name`: `proposed` if it is the first."""
