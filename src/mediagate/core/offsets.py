"""Uploads appended at an offset: the engine that tus and the IETF draft stand on.

An offsets upload is an `UploadSession` whose parts are cut where its
requests allow, plus a `TusUpload` record for what such an upload adds (a
deferred length, the tail, and the protocol's own fields). Its offset is

    offset = end of the parts recorded contiguously from 0 (each at its offset)
           + the size of the tail recorded at that end

Parts differ in size: a body's bytes go to the store as parts as soon as its
known length makes one (`chunking.tus_part`: up to the planned part size, at
least S3's smallest part, within 10,000 parts), the first of them led by the
tail left by the request before (streamed back from where it waits); the
bytes too few for a part become the new tail (`core/tus_tails.py`: an object
in the bucket, never local disk unless S3 fails). A body of unknown length
(chunked transfer encoding) is gathered in memory one smallest part at a time
(at most 5 MiB for an upload under ~48 GiB), each sent once gathered.

The parts of a body with a digest to match are recorded pending: they do not
count anywhere until the digest matched, when one commit makes them count
together with the new tail. A crash or a mismatch leaves them pending
(ignored, replaced by the next request), and the upload's offset where it was.

This module is the one door for an offsets upload's chunk records: every
part is written and recorded under `SessionLocks` by the attempt that holds it
(`engine.put_part`, `_copy_parts`), a request's tail and pending parts count
through `SessionLocks.commit` only while it holds the upload, and the length is
its own; the protocols above never touch the catalog's chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from mediagate.catalog.base import TusRecords, UploadRecords
from mediagate.core.chunk_locks import ChunkLease
from mediagate.core.chunk_stream import ReadSource
from mediagate.core.chunking import MAX_PART, MAX_PARTS, MIN_PART, MiB, smallest_part, tus_part
from mediagate.core.engine import Span, UploadEngine
from mediagate.core.keys import new_id
from mediagate.core.library import MediaLibrary
from mediagate.core.sniff import SNIFF_BYTES, sniff
from mediagate.core.tus_tails import Tail, TailReader
from mediagate.errors import (
    BadRequest,
    ChecksumMismatch,
    ChunkIncomplete,
    FileTooLarge,
    NotFound,
    OffsetMismatch,
    TooMuchHeld,
)
from mediagate.models import (
    Chunk,
    Media,
    SessionState,
    TusUpload,
    UploadProtocol,
    UploadSession,
)
from mediagate.storage.base import PartCopying, Remainders, Stores

log = structlog.get_logger("mediagate.offsets")

UNTYPED = "application/octet-stream"


# Told the upload's offset each time a part counts (the IETF draft's progress 104s).
Progress = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class Checksum:
    """A digest a body must have: the hashlib algorithm's name and the digest."""

    algorithm: str
    digest: bytes

    def hasher(self) -> Any:
        return hashlib.new(self.algorithm)


@dataclass(frozen=True)
class Position:
    """Where an upload stands: its counted parts, where they end, and the tail after."""

    parts: int
    parts_end: int
    tail: Tail | None

    @property
    def offset(self) -> int:
        return self.parts_end + (self.tail.size if self.tail else 0)


@dataclass(frozen=True)
class Upload:
    """An offsets upload as it stands: its session, its record, its position."""

    session: UploadSession
    record: TusUpload
    position: Position

    @property
    def offset(self) -> int:
        return self.position.offset

    @property
    def length(self) -> int | None:
        return None if self.record.length_deferred else self.session.size

    @property
    def finished(self) -> bool:
        return self.session.state in (SessionState.COMPLETED, SessionState.FINALIZING)


class PatchBody:
    """A request's body: counted against its declared length and hashed in the one pass;
    its first `keep` bytes kept in `head`."""

    def __init__(
        self, read: ReadSource, length: int | None, checksum: Checksum | None, keep: int = 0
    ) -> None:
        self._read = read
        self.remaining = length
        self._hasher = checksum.hasher() if checksum is not None else None
        self._keep = keep
        self.head = bytearray()

    async def read(self, n: int) -> bytes:
        if self.remaining == 0:
            return b""
        piece = await self._read(n if self.remaining is None else min(n, self.remaining))
        if self.remaining is not None:
            if not piece:
                raise ChunkIncomplete(f"the body ended {self.remaining} bytes short")
            self.remaining -= len(piece)
        if self._hasher is not None:
            self._hasher.update(piece)
        if len(self.head) < self._keep:
            self.head += piece[: self._keep - len(self.head)]
        return piece

    async def gather(self, n: int) -> bytearray:
        """Up to `n` bytes, fewer only where the body ends."""
        held = bytearray()
        while len(held) < n:
            piece = await self.read(n - len(held))
            if not piece:
                break
            held += piece
        return held

    def digest(self) -> bytes | None:
        return self._hasher.digest() if self._hasher is not None else None


class HeldBytes:
    """Bytes gathered in memory, as a `ReadSource`."""

    def __init__(self, data: bytearray) -> None:
        self._data = memoryview(data)

    async def read(self, n: int) -> bytes:
        piece, self._data = self._data[:n], self._data[n:]
        return bytes(piece)


class PartSource:
    """One part's bytes: the tail left earlier, then `need` bytes of the body."""

    def __init__(self, spooled: TailReader | None, body: ReadSource, need: int) -> None:
        self._spooled = spooled
        self._body = body
        self._need = need

    async def __call__(self, n: int) -> bytes:
        if self._spooled is not None:
            if piece := await self._spooled.read(n):
                return piece
            self._spooled = None
        if self._need == 0:
            return b""
        piece = await self._body(min(n, self._need))
        self._need -= len(piece)
        return piece


class OffsetRecords(UploadRecords, TusRecords, Protocol):
    """What the offsets engine reads and records: sessions, their chunks and media, and
    each upload's offsets record."""


class OffsetUploads:
    def __init__(
        self,
        engine: UploadEngine,
        catalog: OffsetRecords,
        stores: Stores,
        library: MediaLibrary,
        *,
        max_size: int,
        chunk_size: int,
        memory_per_user: int = 32 * MiB,
    ) -> None:
        self._engine = engine
        self._catalog = catalog
        self._stores = stores
        self._library = library
        self._tails = engine.tails
        self._locks = engine.locks
        self.max_size = max_size
        self._chunk_size = chunk_size
        self._memory_per_user = memory_per_user
        # Bytes each user's bodies of unknown length may hold now, in this process.
        self._held: dict[str, int] = {}

    @property
    def deferred_max_size(self) -> int:
        """The most an upload of deferred length may hold: its parts are sized in advance."""
        return min(self.max_size, max(self._chunk_size, MIN_PART) * MAX_PARTS)

    async def start(
        self,
        user_id: str,
        record: TusUpload,
        *,
        protocol: UploadProtocol,
        length: int | None,
        filename: str,
        content_type: str,
        fields: Mapping[str, str] | None = None,
        caller: str | None = None,
        sha256: str | None = None,
    ) -> UploadSession:
        """A new upload (complete at once if empty); `record` is its protocol's fields
        (its session id is set here). `fields` and `caller` are for the pre-create hook;
        `sha256`, the whole file's, is checked on completion."""
        if length is not None and length > self.max_size:
            raise FileTooLarge(f"Upload-Length {length} is over the limit of {self.max_size}")
        upload_id = new_id()
        session = await self._engine.initiate(
            user_id,
            filename=filename or upload_id,
            size=self.deferred_max_size if length is None else length,
            content_type=content_type,
            protocol=protocol,
            session_id=upload_id,
            metadata=fields,
            caller=caller,
            sha256=sha256,
        )
        record = record.model_copy(
            update={"session_id": session.id, "length_deferred": length is None}
        )
        await self._catalog.add_tus_upload(record)
        log.info("offsets.created", session_id=session.id, length=length, protocol=protocol.value)
        if length == 0:
            await self._engine.complete(user_id, session.id, via=protocol)
        return session

    async def start_joined(
        self,
        user_id: str,
        record: TusUpload,
        *,
        protocol: UploadProtocol,
        size: int,
        filename: str,
        content_type: str,
    ) -> UploadSession:
        """A new upload of known length whose bytes come from stored media (`join`)."""
        upload_id = new_id()
        session = await self._engine.initiate(
            user_id,
            filename=filename or upload_id,
            size=size,
            content_type=content_type,
            protocol=protocol,
            session_id=upload_id,
        )
        await self._catalog.add_tus_upload(record.model_copy(update={"session_id": session.id}))
        return session

    async def load(self, user_id: str, upload_id: str, protocol: UploadProtocol) -> Upload:
        """The upload as it stands. One whose every part is safe but that was not
        completed (its request failed at the end) is completed now, so that a client
        that sees the full offset also finds its media."""
        session, record = await self._load(user_id, upload_id, protocol)
        return await self._settle(user_id, session, record, await self._position(session, record))

    async def record(self, user_id: str, upload_id: str, protocol: UploadProtocol) -> TusUpload:
        """The upload's record alone (its session is the user's, in any state)."""
        return (await self._load(user_id, upload_id, protocol))[1]

    async def session(self, user_id: str, upload_id: str, protocol: UploadProtocol) -> Upload:
        """The upload's session and record, its position as the catalog says (no repair)."""
        session, record = await self._load(user_id, upload_id, protocol)
        return Upload(session, record, await self._position(session, record))

    def hold(self, upload_id: str) -> contextlib.AbstractAsyncContextManager[ChunkLease]:
        """One request at a time per upload, on every instance, the newest taking over:
        a request still reading its body (stalled, or its client reconnected and sent it
        again) is asked to let go, keeps what any cut request keeps, and answers 409."""
        return self._locks.upload(upload_id)

    def exclusive(self, kind: str, item: str) -> contextlib.AbstractAsyncContextManager[bool]:
        return self._locks.exclusive(kind, item)

    async def take_partials(self, final_id: str, upload_ids: list[str]) -> bool:
        """Make the uploads part of `final_id`, all or none (`TusRecords.take_partials`)."""
        return await self._catalog.take_partials(final_id, upload_ids)

    async def media(self, media_id: str) -> Media | None:
        """The media an upload made, in any state; None once deleted."""
        return await self._catalog.get_media(media_id)

    async def abort(self, user_id: str, upload_id: str, protocol: UploadProtocol) -> None:
        """Remove an unfinished upload and what it holds."""
        await self._engine.abort(user_id, upload_id, via=protocol)

    async def terminate(
        self, user_id: str, upload_id: str, protocol: UploadProtocol, *, keep_media: bool = False
    ) -> None:
        """Remove an upload and what it holds. A finished upload's media is deleted as
        the media API deletes it (a finalizing one with its parts), unless `keep_media`."""
        # Takes over from a request still running (stalled, say), once it has ended, so
        # that it leaves no tail behind.
        async with self.hold(upload_id):
            session, _ = await self._load(user_id, upload_id, protocol)
            if session.state not in (SessionState.COMPLETED, SessionState.FINALIZING):
                await self._engine.abort(user_id, upload_id, via=protocol)
                return
            if not keep_media:
                with contextlib.suppress(NotFound):  # deleted through the media API already
                    await self._library.delete(user_id, session.media_id)
            await self._catalog.delete_session(session.id)
            log.info(
                "offsets.terminated_finished", session_id=session.id, media_id=session.media_id
            )

    async def append(
        self,
        user_id: str,
        upload: Upload,
        read: ReadSource,
        lease: ChunkLease,
        *,
        offset: int,
        body_length: int | None,
        checksum: Checksum | None,
        upload_length: int | None,
        progress: Progress | None = None,
    ) -> Upload:
        """Take a body at `offset` of an upload held (`hold`, `lease`) and loaded under that
        hold; what it wrote counts only if the hold still holds at its end.
        An upload whose last byte this was is completed. `progress` hears the offset each
        time a part counts (never for a body with a checksum: nothing counts before its end)."""
        session, record = upload.session, upload.record
        if upload_length is not None:
            session, record = await self._set_length(session, record, upload_length)
        position = await self._position(session, record)
        if offset != position.offset:
            raise OffsetMismatch(
                f"Upload-Offset is {offset}, the upload is at {position.offset}",
                offset=position.offset,
            )
        if session.state is not SessionState.OPEN:
            if body_length != 0:
                raise FileTooLarge("the upload is complete; it takes no more bytes")
            return Upload(session, record, position)
        end = None if body_length is None else offset + body_length
        if end is not None and end > session.size:
            raise FileTooLarge(
                f"the body would end at {end}, past the upload's length {session.size}"
            )
        body = PatchBody(
            lease.guard(read), body_length, checksum, keep=SNIFF_BYTES if offset == 0 else 0
        )
        with self._holding(user_id, self._gathered(session, position, body)):
            position = await self._receive(
                session,
                position,
                body,
                checksum,
                ends=not record.length_deferred,
                progress=None if checksum else progress,
                lease=lease,
            )
        await self._name_by_bytes(session, body.head)
        return await self._settle(user_id, session, record, position)

    async def join(self, user_id: str, session: UploadSession, media: list[Media]) -> Upload:
        """Fill a new upload (`start_joined`) with the bytes of `media`, in order."""
        parts = [item for item in media if item.size]
        store = self._stores[session.storage]
        if isinstance(store, PartCopying) and _copyable(session, parts):
            await self._copy_parts(session, store, parts)
        else:
            # Through this server; empty media are skipped (S3 refuses to read from byte 0
            # of an empty object).
            reader = _JoinedObjects([self._stores[item.storage].read(item.key) for item in parts])
            body = PatchBody(reader.read, session.size, None, keep=SNIFF_BYTES)
            await self._receive(session, Position(0, 0, None), body, None, ends=True)
            await self._name_by_bytes(session, body.head)
        return await self.load(user_id, session.id, session.protocol)

    async def _copy_parts(
        self, session: UploadSession, store: PartCopying, parts: list[Media]
    ) -> None:
        """Each media becomes one part, copied inside the store: no byte passes through
        here; each recorded by the attempt that holds it, as a written part is."""
        await self._catalog.set_length(session.id, session.size, len(parts))
        start = 0
        for number, item in enumerate(parts):
            async with self._locks.chunk(session.id, number) as lease:
                etag = await store.copy_part(
                    session.key, session.upload_id, number=number, source_key=item.key
                )
                chunk = Chunk(
                    number=number,
                    size=item.size,
                    storage=session.storage,
                    etag=etag,
                    writer=lease.owner,
                    start=start,
                )
                await self._locks.record(session.id, chunk, lease)
            start += item.size

    def _gathered(self, session: UploadSession, position: Position, body: PatchBody) -> int:
        """The most a body is gathered in memory at once: nothing if its length is
        known, else a smallest part (the share of the 10,000 parts never grows)."""
        if body.remaining is not None:
            return 0
        start, number = position.parts_end, position.parts
        minimum = smallest_part(session.size, number, start, self._store_minimum(session))
        return min(max(minimum, min(session.chunk_size, MIN_PART)), session.size - start)

    def _store_minimum(self, session: UploadSession) -> int:
        return MIN_PART if isinstance(self._stores[session.storage], Remainders) else 1

    @contextlib.contextmanager
    def _holding(self, user_id: str, size: int) -> Iterator[None]:
        if not size:
            yield  # a body of known length holds nothing (nor may it drop others' count)
            return
        held = self._held.get(user_id, 0)
        if held + size > self._memory_per_user:
            raise TooMuchHeld(
                f"your PATCHes without Content-Length hold {held} bytes here, and this one "
                f"needs {size} more, over MEDIAGATE_TUS_MEMORY_PER_USER "
                f"({self._memory_per_user}); send Content-Length, or fewer at once"
            )
        self._held[user_id] = held + size
        try:
            yield
        finally:
            left = self._held[user_id] - size
            if left:
                self._held[user_id] = left
            else:
                del self._held[user_id]

    async def _name_by_bytes(self, session: UploadSession, head: bytearray) -> None:
        """An upload named from its id gets the extension its first bytes tell (and their
        content type, if none was declared). Only the media's name: its key stays."""
        kind = sniff(bytes(head)) if head and session.filename == session.id else None
        if kind is None:
            return
        content_type = kind.content_type if session.content_type == UNTYPED else None
        await self._catalog.name_session(
            session.id, session.id + kind.extension, content_type or session.content_type
        )

    async def _settle(
        self, user_id: str, session: UploadSession, record: TusUpload, position: Position
    ) -> Upload:
        if (
            not record.length_deferred
            and session.state is SessionState.OPEN
            and position.parts_end == session.size
        ):
            await self._catalog.set_length(session.id, session.size, position.parts)
            await self._engine.complete(user_id, session.id, via=session.protocol)
            await self._tails.discard(session)
            session, record = await self._load(user_id, session.id, session.protocol)
            position = await self._position(session, record)
        return Upload(session, record, position)

    async def _receive(
        self,
        session: UploadSession,
        position: Position,
        body: PatchBody,
        checksum: Checksum | None,
        *,
        ends: bool,
        progress: Progress | None = None,
        lease: ChunkLease | None = None,
    ) -> Position:
        """Send the body on as parts and leave the rest as the new tail; with a checksum,
        none of it counts unless the checksum matches, nor without the upload's `lease`
        at the end. Where the upload then stands."""
        pending = new_id() if checksum is not None else None
        number, start, tail = position.parts, position.parts_end, position.tail
        new_tail: Tail | None = None
        store_minimum = self._store_minimum(session)
        try:
            while start < session.size:
                held = tail.size if tail else 0
                source: ReadSource = body.read
                if body.remaining is None:
                    # Of unknown length: gathered in memory, one smallest part at most.
                    gather = self._gathered(session, Position(number, start, None), body)
                    data = await body.gather(max(gather - held, 0))
                    source = HeldBytes(data).read
                    available = held + len(data)
                else:
                    available = held + body.remaining
                size = tus_part(
                    size=session.size,
                    number=number,
                    start=start,
                    target=session.chunk_size,
                    available=available,
                    ends=ends and start + available == session.size,
                    store_minimum=store_minimum,
                )
                if size is None and available == held:
                    break  # nothing new: the tail stays as it is
                reader = self._tails.reader(session, tail) if tail else None
                try:
                    if reader is not None:
                        await reader.start()
                    if size is None:
                        need = available - held
                        new_tail = await self._tails.put(
                            session, start, available, PartSource(reader, source, need)
                        )
                        break
                    await self._engine.put_part(
                        session,
                        Span(number, start, size),
                        PartSource(reader, source, size - held),
                        pending=pending,
                    )
                finally:
                    if reader is not None:
                        await reader.aclose()
                number, start, tail = number + 1, start + size, None
                if progress is not None and start < session.size:
                    await progress(start)
            if body.remaining is None and await body.read(1):
                raise FileTooLarge(f"the body goes past the upload's length {session.size}")
            if checksum is not None and body.digest() != checksum.digest:
                raise ChecksumMismatch(
                    f"the body's {checksum.algorithm} does not match Upload-Checksum"
                )
            kept = new_tail or tail
            await self._locks.commit(
                session.id,
                lease,
                start=kept.start if kept else start,
                size=kept.size if kept else 0,
                storage=kept.storage if kept else session.storage,
                pending=pending,
            )
        except BaseException:
            if new_tail is not None:
                await asyncio.shield(self._tails.drop(session, new_tail))
            raise
        if position.tail is not None and position.tail != kept:
            await self._tails.drop(session, position.tail)
        return Position(number, start, kept)

    async def _set_length(
        self, session: UploadSession, record: TusUpload, length: int
    ) -> tuple[UploadSession, TusUpload]:
        if not record.length_deferred:
            if length != session.size:
                raise BadRequest(f"Upload-Length is {session.size} and cannot change")
            return session, record
        offset = (await self._position(session, record)).offset
        if length < offset:
            raise BadRequest(f"Upload-Length {length} is below the offset {offset}")
        if length > session.size:
            raise FileTooLarge(f"Upload-Length {length} is over the limit of {session.size}")
        # Chunks past the new end (left pending by a request that failed) go with it.
        total = -(-length // session.chunk_size)
        await self._catalog.set_length(session.id, length, total)
        return await self._load(session.user_id, session.id, session.protocol)

    async def _load(
        self, user_id: str, upload_id: str, protocol: UploadProtocol
    ) -> tuple[UploadSession, TusUpload]:
        session = await self._engine.owned_session(user_id, upload_id)
        record = await self._catalog.get_tus_upload(upload_id)
        if record is None or session.protocol is not protocol:
            raise NotFound(f"no {protocol.value} upload {upload_id}")
        return session, record

    async def _position(self, session: UploadSession, record: TusUpload) -> Position:
        """The parts counted contiguously from 0, each at its offset, and the tail after."""
        if session.state is not SessionState.OPEN:
            return Position(session.total_chunks, session.size, None)
        parts = end = 0
        for chunk in await self._catalog.chunks(session.id):
            if chunk.number != parts or chunk.offset(session.chunk_size) != end:
                break
            parts, end = parts + 1, end + chunk.size
        tail = Tail.of(record)
        return Position(parts, end, tail if tail is not None and tail.start == end else None)


def _copyable(session: UploadSession, parts: list[Media]) -> bool:
    """Whether the store can take each media as one part: all in the upload's store, and
    each but the last at least 5 MiB (S3's smallest part), none over 5 GiB."""
    return (
        0 < len(parts) <= MAX_PARTS
        and all(item.storage is session.storage for item in parts)
        and all(MIN_PART <= item.size <= MAX_PART for item in parts[:-1])
        and parts[-1].size <= MAX_PART
    )


class _JoinedObjects:
    """Stored objects read one after the other, as one `ReadSource`."""

    def __init__(self, objects: list[AsyncIterator[bytes]]) -> None:
        self._objects = objects
        self._piece = b""

    async def read(self, n: int) -> bytes:
        while not self._piece and self._objects:
            try:
                self._piece = await anext(self._objects[0])
            except StopAsyncIteration:
                self._objects.pop(0)
        piece, self._piece = self._piece[:n], self._piece[n:]
        return piece
