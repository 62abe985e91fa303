"""tus 1.0 uploads as upload sessions of the engine.

A tus upload is an `UploadSession` whose parts are cut where its PATCHes
allow, plus a `TusUpload` record for what tus adds (the metadata to echo, a
deferred length, the tail). Its offset is

    offset = end of the parts recorded contiguously from 0 (each at its offset)
           + the size of the tail recorded at that end

Parts differ in size: a PATCH's bytes go to the store as parts as soon as the
PATCH's known length makes one (`chunking.tus_part`: up to the planned part
size, at least S3's smallest part, within 10,000 parts), the first of them
led by the tail left by the PATCH before (streamed back from where it waits);
the bytes too few for a part become the new tail (`core/tus_tails.py`: an
object in the bucket, never local disk unless S3 fails). A body of unknown
length (chunked transfer encoding) is gathered in memory one smallest part at
a time (at most 5 MiB for an upload under ~48 GiB), each sent once gathered.

The parts of a PATCH with `Upload-Checksum` are recorded pending: they do
not count anywhere until the checksum matched, when one commit makes them
count together with the new tail. A crash or a mismatch leaves them pending
(ignored, replaced by the next PATCH), and the upload's offset where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from mediagate.catalog.base import Catalog
from mediagate.core.chunk_locks import ChunkLease
from mediagate.core.chunk_stream import ReadSource
from mediagate.core.chunking import (
    MAX_PART,
    MAX_PARTS,
    MIN_PART,
    MiB,
    smallest_part,
    tus_part,
)
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
    Forbidden,
    NotFound,
    OffsetMismatch,
    PartialTaken,
    Problem,
    TooMuchHeld,
    UploadIncomplete,
)
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
from mediagate.storage.base import PartCopying, Remainders, Stores

log = structlog.get_logger("mediagate.tus")

PARTIAL = "partial"
FINAL = "final"
CHECKSUM_ALGORITHMS = {"sha1": hashlib.sha1, "md5": hashlib.md5, "sha256": hashlib.sha256}
UNTYPED = "application/octet-stream"


@dataclass(frozen=True)
class Checksum:
    """An Upload-Checksum: the algorithm's name and the digest the body must have."""

    algorithm: str
    digest: bytes

    def hasher(self) -> Any:
        return CHECKSUM_ALGORITHMS[self.algorithm]()


@dataclass(frozen=True)
class TusState:
    session: UploadSession
    upload: TusUpload
    offset: int

    @property
    def length(self) -> int | None:
        return None if self.upload.length_deferred else self.session.size

    @property
    def finished(self) -> bool:
        return self.session.state in (SessionState.COMPLETED, SessionState.FINALIZING)


class PatchBody:
    """A PATCH's body: counted against its declared length and hashed in the one pass;
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


@dataclass(frozen=True)
class Position:
    """Where a tus upload stands: its counted parts, where they end, and the tail after."""

    parts: int
    parts_end: int
    tail: Tail | None

    @property
    def offset(self) -> int:
        return self.parts_end + (self.tail.size if self.tail else 0)


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


class TusUploads:
    def __init__(
        self,
        engine: UploadEngine,
        catalog: Catalog,
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
        self.max_size = max_size
        self._chunk_size = chunk_size
        self._memory_per_user = memory_per_user
        # Bytes each user's bodies of unknown length may hold now, in this process.
        self._held: dict[str, int] = {}

    @property
    def deferred_max_size(self) -> int:
        """The most a deferred-length upload may hold: its parts are sized in advance."""
        return min(self.max_size, max(self._chunk_size, MIN_PART) * MAX_PARTS)

    async def create(
        self,
        user_id: str,
        *,
        length: int | None,
        metadata: str,
        filename: str,
        content_type: str,
        partial: bool = False,
        fields: Mapping[str, str] | None = None,
        caller: str | None = None,
    ) -> TusState:
        """`fields`: the metadata decoded, and `caller`, for the pre-create hook."""
        if length is not None and length > self.max_size:
            raise FileTooLarge(f"Upload-Length {length} is over the limit of {self.max_size}")
        upload_id = new_id()
        session = await self._engine.initiate(
            user_id,
            filename=filename or upload_id,
            size=self.deferred_max_size if length is None else length,
            content_type=content_type,
            protocol=UploadProtocol.TUS,
            session_id=upload_id,
            metadata=fields,
            caller=caller,
        )
        upload = TusUpload(
            session_id=session.id,
            metadata=metadata,
            length_deferred=length is None,
            concat=PARTIAL if partial else None,
        )
        await self._catalog.add_tus_upload(upload)
        log.info("tus.created", session_id=session.id, length=length)
        if length == 0:
            await self._engine.complete(user_id, session.id, via=UploadProtocol.TUS)
        return await self.state(user_id, session.id)

    async def state(self, user_id: str, upload_id: str) -> TusState:
        session, upload = await self._load(user_id, upload_id)
        position = await self._position(session, upload)
        if not upload.length_deferred and session.state is SessionState.OPEN:
            if position.parts_end == session.size:
                # Every part is safe but the upload was not completed (its
                # PATCH failed at the end): complete it now, so that a client
                # that sees the full offset also finds its media.
                await self._catalog.set_length(session.id, session.size, position.parts)
                await self._engine.complete(user_id, upload_id, via=UploadProtocol.TUS)
                await self._tails.discard(session)
                session, upload = await self._load(user_id, upload_id)
        if upload.part_of is not None and session.state is SessionState.COMPLETED:
            # A partial a final waits for: its completion may be the last it needs.
            await self._finish_final(user_id, upload.part_of)
        elif _is_final(upload) and session.state is SessionState.OPEN:
            # Also the way a final whose partials finished during a crash gets made.
            if await self._finish_final(user_id, upload_id):
                return await self.state(user_id, upload_id)
            return TusState(session, upload, await self._finished_prefix(user_id, upload))
        return TusState(session, upload, position.offset)

    async def write(
        self,
        user_id: str,
        upload_id: str,
        *,
        offset: int,
        read: ReadSource,
        body_length: int | None,
        checksum: Checksum | None,
        upload_length: int | None,
    ) -> TusState:
        async with self._lock(upload_id) as lease:
            read = lease.guard(read)
            session, upload = await self._load(user_id, upload_id)
            if _is_final(upload):
                raise Forbidden("a final upload is made by concatenation; it takes no PATCH")
            if upload_length is not None:
                session, upload = await self._set_length(session, upload, upload_length)
            position = await self._position(session, upload)
            if offset != position.offset:
                raise OffsetMismatch(
                    f"Upload-Offset is {offset}, the upload is at {position.offset}",
                    offset=position.offset,
                )
            if session.state is not SessionState.OPEN:
                if body_length != 0:
                    raise FileTooLarge("the upload is complete; it takes no more bytes")
                return await self.state(user_id, upload_id)
            end = None if body_length is None else offset + body_length
            if end is not None and end > session.size:
                raise FileTooLarge(
                    f"the body would end at {end}, past the upload's length {session.size}"
                )
            body = PatchBody(read, body_length, checksum, keep=SNIFF_BYTES if offset == 0 else 0)
            with self._holding(user_id, self._gathered(session, position, body)):
                await self._receive(
                    user_id, session, position, body, checksum, ends=not upload.length_deferred
                )
            await self._name_by_bytes(session, body.head)
            return await self.state(user_id, upload_id)

    def _gathered(self, session: UploadSession, position: Position, body: PatchBody) -> int:
        """The most a PATCH's body is gathered in memory at once: nothing if its length
        is known, else a smallest part (the share of the 10,000 parts never grows)."""
        if body.remaining is not None:
            return 0
        start, number = position.parts_end, position.parts
        minimum = smallest_part(session.size, number, start, self._store_minimum(session))
        return min(max(minimum, min(session.chunk_size, MIN_PART)), session.size - start)

    def _store_minimum(self, session: UploadSession) -> int:
        return MIN_PART if isinstance(self._stores[session.storage], Remainders) else 1

    @contextlib.contextmanager
    def _holding(self, user_id: str, size: int) -> Iterator[None]:
        held = self._held.get(user_id, 0)
        if size and held + size > self._memory_per_user:
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

    async def concatenate(
        self,
        user_id: str,
        partial_ids: list[str],
        *,
        concat: str,
        metadata: str,
        filename: str,
        content_type: str,
    ) -> TusState:
        """A final upload made of partial uploads, in order; they are removed after.
        Partials still being written (concatenation-unfinished) make a final that waits:
        the completion of its last partial (any instance) or a HEAD on it makes it.

        Each partial goes into one final only: the final's session takes them in the
        catalog before any byte moves, so finals racing for a partial (on any
        instance) end in one final and clean refusals."""
        if not partial_ids:
            raise BadRequest("Upload-Concat: final names no partial upload")
        twice = sorted({upload_id for upload_id in partial_ids if partial_ids.count(upload_id) > 1})
        if twice:
            raise BadRequest(f"Upload-Concat: final names {', '.join(twice)} more than once")
        sizes = [await self._partial_size(user_id, upload_id) for upload_id in partial_ids]
        size = sum(sizes)
        if size > self.max_size:
            raise FileTooLarge(f"the partial uploads add up to {size}, over {self.max_size}")
        final_id = new_id()
        session = await self._engine.initiate(
            user_id,
            filename=filename or final_id,
            size=size,
            content_type=content_type,
            protocol=UploadProtocol.TUS,
            session_id=final_id,
        )
        upload = TusUpload(session_id=session.id, metadata=metadata, concat=concat)
        await self._catalog.add_tus_upload(upload)
        try:
            if not await self._catalog.take_partials(session.id, partial_ids):
                raise PartialTaken("a partial upload named is already part of another final upload")
            async with self._engine.locks.exclusive(FINAL, session.id) as alone:
                media = await self._ready_partials(user_id, upload) if alone else None
                if media is not None:
                    await self._join(user_id, session, media, size)
        except BaseException:
            # Nothing of it was handed out: gone, its partials free for another final.
            await asyncio.shield(self._drop_final(user_id, session.id))
            raise
        if media is not None:
            await self._drop_partials(user_id, media)
            log.info("tus.concatenated", session_id=session.id, partials=len(media), size=size)
        else:
            log.info("tus.final_waits", session_id=session.id, partials=len(partial_ids))
        return await self.state(user_id, session.id)

    async def _partial_size(self, user_id: str, upload_id: str) -> int:
        """The length of a partial upload a final may name: finished, or of known length."""
        session, upload = await self._load(user_id, upload_id)
        if upload.concat != PARTIAL:
            raise BadRequest(f"upload {upload_id} is not a partial upload")
        if session.state is SessionState.OPEN:
            if upload.length_deferred:
                raise BadRequest(
                    f"partial upload {upload_id} has no Upload-Length yet: a final needs its length"
                )
            return session.size
        if session.state is SessionState.EXPIRED:
            raise NotFound(f"partial upload {upload_id} has expired")
        if await self._catalog.get_media(session.media_id) is None:
            raise PartialTaken(
                f"partial upload {upload_id} is part of a final upload already (or was deleted)"
            )
        return session.size

    async def _ready_partials(self, user_id: str, final: TusUpload) -> list[Media] | None:
        """The media of a final's partials, in order, if every one is finished and ready."""
        media = []
        for upload_id in final_partial_ids(final.concat or ""):
            session, _ = await self._load(user_id, upload_id)
            item = await self._catalog.get_media(session.media_id)
            if item is None or item.state is not MediaState.READY:
                return None
            media.append(item)
        return media

    async def _finished_prefix(self, user_id: str, final: TusUpload) -> int:
        """A waiting final's offset: its partials finished in order from the first."""
        offset = 0
        for upload_id in final_partial_ids(final.concat or ""):
            session, _ = await self._load(user_id, upload_id)
            if session.state is not SessionState.COMPLETED:
                break
            offset += session.size
        return offset

    async def _finish_final(self, user_id: str, final_id: str) -> bool:
        """Make a waiting final if all its partials are ready; whether it was made here.
        A failure leaves it waiting (the next HEAD on it tries again): the partial whose
        completion tried it is complete all the same."""
        try:
            session, upload = await self._load(user_id, final_id)
            if session.state is not SessionState.OPEN:
                return False
            async with self._engine.locks.exclusive(FINAL, final_id) as alone:
                if not alone:
                    return False  # being made, here or on another instance
                session, upload = await self._load(user_id, final_id)
                media = await self._ready_partials(user_id, upload)
                if session.state is not SessionState.OPEN or media is None:
                    return False
                await self._join(user_id, session, media, session.size)
        except NotFound:
            return False  # the final (or a partial) was removed: it cannot be made
        except Exception as error:
            log.warning("tus.final_not_made", session_id=final_id, error=str(error))
            return False
        await self._drop_partials(user_id, media)
        log.info("tus.concatenated", session_id=final_id, partials=len(media), size=session.size)
        return True

    async def _drop_partials(self, user_id: str, media: list[Media]) -> None:
        for item in media:
            try:
                await self._library.delete(user_id, item.id)
            except Problem as error:  # the final is made: this answer must say so
                log.warning("tus.partial_kept", media_id=item.id, error=str(error))

    async def _join(
        self, user_id: str, session: UploadSession, media: list[Media], size: int
    ) -> TusState:
        parts = [item for item in media if item.size]
        store = self._stores[session.storage]
        if isinstance(store, PartCopying) and _copyable(parts):
            # Each partial becomes one part, copied inside S3: no byte passes through here.
            await self._catalog.set_length(session.id, size, len(parts))
            start = 0
            for number, item in enumerate(parts):
                etag = await store.copy_part(
                    session.key, session.upload_id, number=number, source_key=item.key
                )
                chunk = Chunk(
                    number=number, size=item.size, storage=store.kind, etag=etag, start=start
                )
                await self._catalog.put_chunk(session.id, chunk)
                start += item.size
        else:
            # Through this server; empty partials are skipped (S3 refuses to read from byte 0 of
            # an empty object).
            reader = _JoinedObjects([self._stores[item.storage].read(item.key) for item in parts])
            body = PatchBody(reader.read, size, None, keep=SNIFF_BYTES)
            await self._receive(user_id, session, Position(0, 0, None), body, None, ends=True)
            await self._name_by_bytes(session, body.head)
        return await self.state(user_id, session.id)

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

    async def _drop_final(self, user_id: str, session_id: str) -> None:
        try:
            await self._engine.abort(user_id, session_id, via=UploadProtocol.TUS)
        except Problem as error:  # made meanwhile (finalizing), or the catalog is away
            log.warning("tus.final_kept", session_id=session_id, error=str(error))

    async def media(self, user_id: str, upload_id: str) -> Media:
        """The media a finished upload made (completing one whose every byte is in)."""
        state = await self.state(user_id, upload_id)
        if not state.finished:
            length = "an unknown length" if state.length is None else f"{state.length} bytes"
            raise UploadIncomplete(
                f"the upload is at {state.offset} of {length}; its file is there once complete",
                offset=state.offset,
            )
        return await self._library.get(user_id, state.session.media_id)

    async def terminate(self, user_id: str, upload_id: str) -> None:
        """Remove an upload and what it holds. A finished upload is its file: its media
        is deleted as the media API deletes it (a finalizing one with its parts)."""
        # Takes over from a PATCH still running (stalled, say), once it has ended, so
        # that it leaves no tail behind.
        async with self._lock(upload_id):
            session, _ = await self._load(user_id, upload_id)
            if session.state not in (SessionState.COMPLETED, SessionState.FINALIZING):
                await self._engine.abort(user_id, upload_id, via=UploadProtocol.TUS)
                return
            with contextlib.suppress(NotFound):  # deleted through the media API already
                await self._library.delete(user_id, session.media_id)
            await self._catalog.delete_session(session.id)
            log.info("tus.terminated_finished", session_id=session.id, media_id=session.media_id)

    def _lock(self, upload_id: str) -> contextlib.AbstractAsyncContextManager[ChunkLease]:
        """One request at a time per upload, on every instance, the newest taking over:
        a PATCH still reading its body (stalled, or its client reconnected and sent it
        again) is asked to let go, keeps what any cut PATCH keeps, and answers 409."""
        return self._engine.locks.upload(upload_id)

    async def _receive(
        self,
        user_id: str,
        session: UploadSession,
        position: Position,
        body: PatchBody,
        checksum: Checksum | None,
        *,
        ends: bool,
    ) -> None:
        """Send the body on as parts and leave the rest as the new tail; with a checksum,
        none of it counts unless the checksum matches."""
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
                        user_id,
                        session.id,
                        Span(number, start, size),
                        PartSource(reader, source, size - held),
                        pending=pending,
                    )
                finally:
                    if reader is not None:
                        await reader.aclose()
                number, start, tail = number + 1, start + size, None
            if body.remaining is None and await body.read(1):
                raise FileTooLarge(f"the body goes past the upload's length {session.size}")
            if checksum is not None and body.digest() != checksum.digest:
                raise ChecksumMismatch(
                    f"the body's {checksum.algorithm} does not match Upload-Checksum"
                )
        except BaseException:
            if new_tail is not None:
                await asyncio.shield(self._tails.drop(session, new_tail))
            raise
        kept = new_tail or tail
        await self._catalog.record_tail(
            session.id,
            start=kept.start if kept else start,
            size=kept.size if kept else 0,
            storage=kept.storage if kept else session.storage,
            pending=pending,
        )
        if position.tail is not None and position.tail != kept:
            await self._tails.drop(session, position.tail)

    async def _set_length(
        self, session: UploadSession, upload: TusUpload, length: int
    ) -> tuple[UploadSession, TusUpload]:
        if not upload.length_deferred:
            if length != session.size:
                raise BadRequest(f"Upload-Length is {session.size} and cannot change")
            return session, upload
        offset = (await self._position(session, upload)).offset
        if length < offset:
            raise BadRequest(f"Upload-Length {length} is below the offset {offset}")
        if length > session.size:
            raise FileTooLarge(f"Upload-Length {length} is over the limit of {session.size}")
        # Chunks past the new end (left pending by a PATCH that failed) go with it.
        total = -(-length // session.chunk_size)
        await self._catalog.set_length(session.id, length, total)
        return await self._load(session.user_id, session.id)

    async def _load(self, user_id: str, upload_id: str) -> tuple[UploadSession, TusUpload]:
        session = await self._engine.owned_session(user_id, upload_id)
        upload = await self._catalog.get_tus_upload(upload_id)
        if upload is None:
            raise NotFound(f"no tus upload {upload_id}")
        return session, upload

    async def _position(self, session: UploadSession, upload: TusUpload) -> Position:
        """The parts counted contiguously from 0, each at its offset, and the tail after."""
        if session.state is not SessionState.OPEN:
            return Position(session.total_chunks, session.size, None)
        parts = end = 0
        for chunk in await self._catalog.chunks(session.id):
            if chunk.number != parts or chunk.offset(session.chunk_size) != end:
                break
            parts, end = parts + 1, end + chunk.size
        tail = Tail.of(upload)
        return Position(parts, end, tail if tail is not None and tail.start == end else None)


def _is_final(upload: TusUpload) -> bool:
    return upload.concat is not None and upload.concat.startswith(FINAL)


def final_partial_ids(concat: str) -> list[str]:
    """The partial upload ids a final's Upload-Concat (`final;{url} {url} …`) names."""
    _, _, urls = concat.partition(";")
    ids = []
    for url in urls.split():
        _, found, upload_id = url.rstrip("/").rpartition("/api/v1/tus/")
        if not found or not upload_id or "/" in upload_id:
            raise BadRequest(f"Upload-Concat names {url!r}, which is not a tus upload URL")
        ids.append(upload_id)
    return ids


def _copyable(parts: list[Media]) -> bool:
    """Whether S3 can take each partial as one part: all in S3, and each but the
    last at least 5 MiB (S3's smallest part), none over 5 GiB."""
    return (
        0 < len(parts) <= MAX_PARTS
        and all(item.storage is StorageKind.S3 for item in parts)
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
