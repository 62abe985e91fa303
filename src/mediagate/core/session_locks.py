"""The rules that keep an upload correct while several requests work on it.

- one writer per (session, chunk), the newest attempt taking over (`chunk`);
- a chunk is recorded only by the attempt that still holds it (`record`);
- complete, abort and the background work hold the session alone: no chunk is
  written under them, and they do not run under each other (`session`);
- one request at a time per tus upload, the newest taking over (`upload`), and
  what a request appended counts only if it still holds the upload (`commit`);
- one holder of any other named item: the reconciler's round (`exclusive`).

`InProcessSessionLocks` keeps them in this process's memory: enough for the
SQLite catalog, which one process owns. `CatalogSessionLocks` keeps them in a
catalog shared by several instances, as lease rows renewed by a heartbeat
(docs/architecture.md, "Several instances").

Waiting costs the catalog little: of the requests of one instance waiting for
one item, only the newest (for complete: the first) asks the catalog, the
others wait in memory; and it asks again after a back-off that doubles up to
RENEW_INTERVAL (`poll_delay`), within a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import structlog

from mediagate.catalog.base import (
    ClaimTake,
    LeaseRenewal,
    LeaseTake,
    SessionRecords,
    SharedCatalog,
    TusRecords,
)
from mediagate.core.chunk_locks import ChunkLease, InProcessChunkLocks, Lease, superseded
from mediagate.errors import (
    ChunkInFlight,
    NotFound,
    Problem,
    SessionNotOpen,
    UploadLocked,
    UploadSuperseded,
)
from mediagate.models import Chunk, StorageKind

log = structlog.get_logger("mediagate.upload")

# Seconds a lease or claim lives without renewal: how long a dead instance's hold lasts.
LEASE_SECONDS = 10.0
# Seconds between renewals (and between a newer attempt's mark and the holder noticing).
RENEW_INTERVAL = 1.0
# Seconds before a waiter's first ask again; each later wait doubles, up to RENEW_INTERVAL
# (a holder hears that it is wanted at its renewal: asking more often gains nothing).
FIRST_POLL = 0.05
# Seconds a request waits for a hold in the catalog: a holder asked to let go does so at its
# next renewal, and a dead instance's hold runs out after LEASE_SECONDS. complete also waits
# this long for chunks still being written elsewhere, or for another complete.
COMPLETE_WAIT = 30.0


def poll_delay(attempt: int, *, first: float = FIRST_POLL, cap: float = RENEW_INTERVAL) -> float:
    """Seconds a waiter sleeps before its ask number `attempt + 1` (`attempt` from 0)."""
    return min(cap, first * 2.0 ** min(attempt, 32))


def upload_superseded() -> UploadSuperseded:
    return UploadSuperseded(
        "a newer request on this upload took over; the bytes received up to then are kept "
        "(HEAD tells the offset)"
    )


class Purpose(Enum):
    COMPLETE = "complete"  # waits for chunks in flight and for another holder
    ABORT = "abort"  # refused while the session is being completed; chunks in flight lose
    BACKGROUND = "background"  # the sweep, the finalizer: only if nobody works on the session


class SessionBusy(Exception):
    """Background work found the session in use; the next round tries again."""


class SessionLocks(Protocol):
    def chunk(self, session_id: str, number: int) -> AbstractAsyncContextManager[ChunkLease]:
        """Hold chunk `number`, its record forgotten (durably) before this returns:
        whatever stops the write, a crash included, leaves the chunk missing rather than
        listed with a mix of old and new bytes. SessionNotOpen while the session is being
        completed, ChunkSuperseded if a newer attempt came."""

    async def record(self, session_id: str, chunk: Chunk, lease: ChunkLease) -> int:
        """Record the chunk written under `lease` if it still holds it (ChunkSuperseded
        otherwise); how many chunks the session has."""

    def session(self, session_id: str, purpose: Purpose) -> AbstractAsyncContextManager[None]:
        """Hold the session alone for `purpose` (see `Purpose`)."""

    def upload(self, upload_id: str) -> AbstractAsyncContextManager[ChunkLease]:
        """Hold a tus upload for one request, the newest taking over: the holder's body
        reads (through `guard`) fail with UploadSuperseded once a newer request asks, and
        requests waiting in between are superseded too."""

    def exclusive(self, kind: str, item: str) -> AbstractAsyncContextManager[bool]:
        """Hold `item` alone, or False at once if someone holds it."""

    async def commit(
        self,
        upload_id: str,
        lease: ChunkLease | None,
        *,
        start: int,
        size: int,
        storage: StorageKind,
        pending: str | None,
    ) -> None:
        """An offsets upload's request is done: record its tail and make the chunks it
        wrote `pending` count (`TusRecords.record_tail`), only if `lease`, its hold on the
        upload (`upload`), still holds it (UploadSuperseded otherwise; None: work that
        holds the upload otherwise, a tus final being joined)."""


@dataclass
class _Gate:
    in_flight: int = 0
    users: int = 0
    completing: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    complete_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.idle.set()


class OffsetRecords(SessionRecords, TusRecords, Protocol):
    """The records made under the locks: chunk rows, and an offsets upload's tail (`commit`)."""


class InProcessSessionLocks:
    def __init__(self, catalog: OffsetRecords) -> None:
        self._catalog = catalog
        self._chunks = InProcessChunkLocks()
        self._uploads = InProcessChunkLocks(superseded=upload_superseded)
        self._gates: dict[str, _Gate] = {}
        self._exclusive: set[tuple[str, str]] = set()

    def __len__(self) -> int:
        """Sessions and chunks held or waited for (0 when all is quiet: nothing leaks)."""
        return len(self._gates) + len(self._chunks) + len(self._uploads) + len(self._exclusive)

    @contextlib.asynccontextmanager
    async def _using(self, session_id: str) -> AsyncIterator[_Gate]:
        gate = self._gates.setdefault(session_id, _Gate())
        gate.users += 1
        try:
            yield gate
        finally:
            gate.users -= 1
            if gate.users == 0 and self._gates.get(session_id) is gate:
                del self._gates[session_id]

    @contextlib.asynccontextmanager
    async def chunk(self, session_id: str, number: int) -> AsyncIterator[ChunkLease]:
        async with self._using(session_id) as gate:
            if gate.completing:
                raise SessionNotOpen("the session is being completed")
            gate.in_flight += 1
            gate.idle.clear()
            try:
                async with self._chunks.hold(session_id, number) as lease:
                    await self._catalog.drop_chunk(session_id, number)
                    yield lease
            finally:
                gate.in_flight -= 1
                if gate.in_flight == 0:
                    gate.idle.set()

    async def record(self, session_id: str, chunk: Chunk, lease: ChunkLease) -> int:
        return await self._catalog.put_chunk(session_id, chunk)

    @contextlib.asynccontextmanager
    async def session(self, session_id: str, purpose: Purpose) -> AsyncIterator[None]:
        async with self._using(session_id) as gate:
            if purpose is Purpose.BACKGROUND and (
                gate.in_flight or gate.completing or gate.complete_lock.locked()
            ):
                raise SessionBusy(session_id)
            if purpose is Purpose.ABORT and gate.completing:
                # Discarding the upload under complete would leave its media half made.
                raise SessionNotOpen("the session is being completed; delete the media instead")
            async with gate.complete_lock:
                if purpose is not Purpose.COMPLETE:
                    yield
                    return
                gate.completing = True
                try:
                    await gate.idle.wait()
                    yield
                finally:
                    gate.completing = False

    def upload(self, upload_id: str) -> AbstractAsyncContextManager[ChunkLease]:
        return self._uploads.hold(upload_id, 0)

    async def commit(
        self,
        upload_id: str,
        lease: ChunkLease | None,
        *,
        start: int,
        size: int,
        storage: StorageKind,
        pending: str | None,
    ) -> None:
        if lease is not None and lease.superseded:
            raise upload_superseded()
        await self._catalog.record_tail(
            upload_id, start=start, size=size, storage=storage, pending=pending
        )

    @contextlib.asynccontextmanager
    async def exclusive(self, kind: str, item: str) -> AsyncIterator[bool]:
        key = (kind, item)
        if key in self._exclusive:
            yield False
            return
        self._exclusive.add(key)
        try:
            yield True
        finally:
            self._exclusive.discard(key)


class SharedOffsetRecords(TusRecords, SharedCatalog, Protocol):
    """A catalog that several instances share: its leases and claims, and the records
    `commit` makes under them."""


class CatalogSessionLocks:
    """The rules as rows of a catalog that every instance shares."""

    def __init__(self, catalog: SharedOffsetRecords, instance: str) -> None:
        self._catalog = catalog
        self.instance = instance
        # In front of the catalog: only the newest attempt of this process asks it.
        self._chunks = InProcessChunkLocks(owner_prefix=f"{instance}:")
        self._uploads = InProcessChunkLocks(
            owner_prefix=f"{instance}:", superseded=upload_superseded
        )
        # Completes of one session in this process wait in turn, only the first asking.
        self._completes: dict[str, _Queue] = {}
        # Leases released by their chunk's record (no separate release needed).
        self._recorded: set[str] = set()

    def _owner(self) -> str:
        return f"{self.instance}:{uuid.uuid4().hex[:12]}"

    @contextlib.asynccontextmanager
    async def chunk(self, session_id: str, number: int) -> AsyncIterator[ChunkLease]:
        async with self._chunks.hold(session_id, number) as lease:

            def take(first: bool) -> Awaitable[LeaseTake]:
                return self._catalog.take_chunk_lease(
                    session_id, number, lease.owner, LEASE_SECONDS, first=first
                )

            too_long = f"chunk {number} is still being written after {COMPLETE_WAIT:g} s"
            answer = await _take_over(take, lease, lambda: ChunkInFlight(too_long))
            if answer is LeaseTake.GONE:
                raise NotFound(f"no upload session {session_id}")
            if answer is LeaseTake.CLOSED:
                raise SessionNotOpen("the session is being completed")
            if answer is LeaseTake.SUPERSEDED:
                raise superseded()

            async def renew() -> bool:
                renewal = await self._catalog.renew_chunk_lease(
                    session_id, number, lease.owner, LEASE_SECONDS
                )
                if renewal is not LeaseRenewal.HELD:
                    lease.let_go()
                return True  # renewed until the write has returned, wanted or not

            async with _heartbeat(renew):
                try:
                    yield lease
                finally:
                    if lease.owner in self._recorded:
                        self._recorded.discard(lease.owner)  # released by the record's commit
                    else:
                        release = self._catalog.release_chunk_lease(session_id, number, lease.owner)
                        await _quietly(release)

    async def record(self, session_id: str, chunk: Chunk, lease: ChunkLease) -> int:
        received = await self._catalog.record_chunk(session_id, chunk, lease.owner)
        if received is None:
            raise superseded()
        self._recorded.add(lease.owner)
        return received

    @contextlib.asynccontextmanager
    async def session(self, session_id: str, purpose: Purpose) -> AsyncIterator[None]:
        if purpose is not Purpose.COMPLETE:
            async with self._claim_session(session_id, purpose):
                yield
            return
        queue = self._completes.setdefault(session_id, _Queue())
        queue.users += 1
        try:
            async with queue.lock, self._claim_session(session_id, purpose):
                yield
        finally:
            queue.users -= 1
            if queue.users == 0 and self._completes.get(session_id) is queue:
                del self._completes[session_id]

    @contextlib.asynccontextmanager
    async def _claim_session(self, session_id: str, purpose: Purpose) -> AsyncIterator[None]:
        owner = self._owner()
        deadline = asyncio.get_running_loop().time() + COMPLETE_WAIT
        attempt = 0
        while True:
            answer = await self._catalog.claim(
                "session",
                session_id,
                owner,
                LEASE_SECONDS,
                idle_session=purpose is not Purpose.ABORT,
            )
            if answer is ClaimTake.CLAIMED:
                break
            if purpose is Purpose.BACKGROUND:
                raise SessionBusy(session_id)  # or gone: nothing to do either way
            if answer is ClaimTake.GONE:
                raise NotFound(f"no upload session {session_id}")
            if purpose is Purpose.ABORT:
                raise SessionNotOpen("the session is being completed; delete the media instead")
            if asyncio.get_running_loop().time() >= deadline:
                if answer is ClaimTake.CHUNKS:
                    raise ChunkInFlight(
                        f"a chunk is still being written after {COMPLETE_WAIT:g} s; "
                        "complete again once every chunk is answered"
                    )
                raise SessionNotOpen("the session is being completed; ask again later")
            await asyncio.sleep(poll_delay(attempt))
            attempt += 1
        async with self._claimed("session", session_id, owner):
            yield

    @contextlib.asynccontextmanager
    async def upload(self, upload_id: str) -> AsyncIterator[ChunkLease]:
        async with self._uploads.hold(upload_id, 0) as lease:

            def take(first: bool) -> Awaitable[LeaseTake]:
                return self._catalog.take_claim(
                    "tus", upload_id, lease.owner, LEASE_SECONDS, first=first
                )

            too_long = f"another request held the upload for over {COMPLETE_WAIT:g} s"
            if await _take_over(take, lease, lambda: UploadLocked(too_long)) is not (
                LeaseTake.HELD
            ):
                raise lease.error()

            async def renew() -> bool:
                renewal = await self._catalog.renew_claim(
                    "tus", upload_id, lease.owner, LEASE_SECONDS
                )
                if renewal is not LeaseRenewal.HELD:
                    lease.let_go()
                return True  # renewed until the request has let go, wanted or not

            async with _heartbeat(renew):
                try:
                    yield lease
                finally:
                    await _quietly(self._catalog.release_claim("tus", upload_id, lease.owner))

    async def commit(
        self,
        upload_id: str,
        lease: ChunkLease | None,
        *,
        start: int,
        size: int,
        storage: StorageKind,
        pending: str | None,
    ) -> None:
        if lease is not None:
            # The heartbeat hears within RENEW_INTERVAL that another instance wants the
            # upload; asked here, the commit hears it at once.
            renewal = await self._catalog.renew_claim("tus", upload_id, lease.owner, LEASE_SECONDS)
            if lease.superseded or renewal is not LeaseRenewal.HELD:
                raise upload_superseded()
        await self._catalog.record_tail(
            upload_id, start=start, size=size, storage=storage, pending=pending
        )

    @contextlib.asynccontextmanager
    async def exclusive(self, kind: str, item: str) -> AsyncIterator[bool]:
        owner = self._owner()
        if await self._catalog.claim(kind, item, owner, LEASE_SECONDS) is not ClaimTake.CLAIMED:
            yield False
            return
        async with self._claimed(kind, item, owner):
            yield True

    @contextlib.asynccontextmanager
    async def _claimed(self, kind: str, item: str, owner: str) -> AsyncIterator[None]:
        async def renew() -> bool:
            return await self._catalog.renew_claim(kind, item, owner, LEASE_SECONDS) is not (
                LeaseRenewal.LOST
            )

        async with _heartbeat(renew):
            try:
                yield
            finally:
                await _quietly(self._catalog.release_claim(kind, item, owner))


@dataclass
class _Queue:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding or waiting


async def _take_over(
    take: Callable[[bool], Awaitable[LeaseTake]],
    lease: Lease,
    too_long: Callable[[], Problem],
) -> LeaseTake:
    """Ask the catalog for a hold that takes over from its holder until the answer is not
    WAITING, backing off between asks; `lease.error()` once a newer attempt of this process
    came, `too_long()` past the deadline."""
    deadline = asyncio.get_running_loop().time() + COMPLETE_WAIT
    attempt = 0
    while True:
        if lease.superseded:
            raise lease.error()
        answer = await take(attempt == 0)
        if answer is not LeaseTake.WAITING:
            return answer
        if asyncio.get_running_loop().time() >= deadline:
            raise too_long()
        await lease.pause(poll_delay(attempt))
        attempt += 1


@contextlib.asynccontextmanager
async def _heartbeat(renew: Callable[[], Awaitable[bool]]) -> AsyncIterator[None]:
    """Renew a hold every RENEW_INTERVAL while the block runs.

    Stopped by a flag as well as by `cancel()`: a cancellation can be lost on its
    way (Python 3.11's `asyncio.wait_for`, which the PostgreSQL pool waits in,
    drops one that arrives as its wait ends), and a beat that survived it would
    renew, for the life of the process, a hold that nobody has any more. Nor does
    the block's end wait for the beat without bound: a renewal still waiting for
    the catalog finishes on its own and then sees the flag.
    """
    stopped = asyncio.Event()

    async def beat() -> None:
        while not stopped.is_set():
            await asyncio.sleep(RENEW_INTERVAL)
            if stopped.is_set():
                return
            try:
                if not await renew():
                    log.warning("lease.lost")
                    return
            except Exception as error:  # the catalog is away: the next beat tries again
                log.warning("lease.renew_failed", error=str(error))

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        stopped.set()
        task.cancel()
        await asyncio.wait({task}, timeout=RENEW_INTERVAL)


async def _quietly(release: Awaitable[None]) -> None:
    """Release a hold, even from a cancelled request; if the catalog is away, it expires."""
    try:
        await asyncio.shield(release)
    except Exception as error:
        log.warning("lease.release_failed", error=str(error))
