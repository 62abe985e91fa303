"""tus 1.0 uploads as upload sessions of the engine.

A tus upload is an `UploadSession` whose parts are the session's chunks
(`chunk_size` from `plan_chunks(Upload-Length)`), plus a `TusUpload` record
for what tus adds (the metadata to echo, a deferred length). Its offset is

    offset = end of the chunks received contiguously from 0
           + bytes of the tail spooled on disk for the next chunk

A PATCH at that offset is cut at the part boundaries as it streams: the part
it starts in is sent from the spooled tail followed by the head of the body
(one stream), each following whole part goes from the body straight into the
engine (`put_chunk`, an S3 `UploadPart` of known length), and a remainder
that does not fill its part is appended to the tail and flushed before the
PATCH is answered. A body of unknown length (chunked transfer encoding) is
spooled first, one part at a time, and each part sent once it is whole.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import structlog

from mediagate.catalog.base import Catalog
from mediagate.core.chunk_locks import ChunkLease
from mediagate.core.chunk_stream import ExpectedDigests, ReadSource
from mediagate.core.chunking import MAX_PART, MAX_PARTS, MIN_PART
from mediagate.core.engine import UploadEngine
from mediagate.core.library import MediaLibrary
from mediagate.errors import (
    BadRequest,
    ChecksumMismatch,
    ChunkIncomplete,
    FileTooLarge,
    Forbidden,
    NotFound,
    OffsetMismatch,
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
from mediagate.storage.base import PartCopying, Stores
from mediagate.storage.local import FilePartBody

log = structlog.get_logger("mediagate.tus")

PARTIAL = "partial"
FINAL = "final"
CHECKSUM_ALGORITHMS = {"sha1": hashlib.sha1, "md5": hashlib.md5, "sha256": hashlib.sha256}


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
    """A PATCH's body: counted against its declared length and hashed in the one pass."""

    def __init__(self, read: ReadSource, length: int | None, checksum: Checksum | None) -> None:
        self._read = read
        self.remaining = length
        self._hasher = checksum.hasher() if checksum is not None else None

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
        return piece

    def digest(self) -> bytes | None:
        return self._hasher.digest() if self._hasher is not None else None


class PartSource:
    """One part's bytes: the tail spooled earlier, then `need` bytes of the body."""

    def __init__(self, spooled: FilePartBody | None, body: PatchBody, need: int) -> None:
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
        piece = await self._body.read(min(n, self._need))
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
    ) -> None:
        self._engine = engine
        self._catalog = catalog
        self._stores = stores
        self._library = library
        self._tails = engine.tails
        self.max_size = max_size
        self._chunk_size = chunk_size

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
    ) -> TusState:
        if length is not None and length > self.max_size:
            raise FileTooLarge(f"Upload-Length {length} is over the limit of {self.max_size}")
        session = await self._engine.initiate(
            user_id,
            filename=filename,
            size=self.deferred_max_size if length is None else length,
            content_type=content_type,
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
            await self._engine.complete(user_id, session.id)
        return await self.state(user_id, session.id)

    async def state(self, user_id: str, upload_id: str) -> TusState:
        session, upload = await self._load(user_id, upload_id)
        parts_end, tail = await self._position(session)
        if not upload.length_deferred and session.state is SessionState.OPEN:
            if parts_end == session.size:
                # Every part is safe but the upload was not completed (its
                # PATCH failed at the end): complete it now, so that a client
                # that sees the full offset also finds its media.
                await self._engine.complete(user_id, upload_id)
                await self._tails.discard(upload_id)
                session, upload = await self._load(user_id, upload_id)
        return TusState(session, upload, parts_end + tail)

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
            if upload.concat and upload.concat.startswith(FINAL):
                raise Forbidden("a final upload is made by concatenation; it takes no PATCH")
            if upload_length is not None:
                session, upload = await self._set_length(session, upload, upload_length)
            parts_end, tail = await self._position(session)
            if offset != parts_end + tail:
                raise OffsetMismatch(
                    f"Upload-Offset is {offset}, the upload is at {parts_end + tail}",
                    offset=parts_end + tail,
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
            body = PatchBody(read, body_length, checksum)
            await self._receive(user_id, session, parts_end, tail, body, checksum)
            return await self.state(user_id, upload_id)

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
        """A final upload made of finished partial uploads, in order; they are removed after."""
        if not partial_ids:
            raise BadRequest("Upload-Concat: final names no partial upload")
        media = [await self._finished_partial(user_id, upload_id) for upload_id in partial_ids]
        size = sum(item.size for item in media)
        if size > self.max_size:
            raise FileTooLarge(f"the partial uploads add up to {size}, over {self.max_size}")
        session = await self._engine.initiate(
            user_id, filename=filename, size=size, content_type=content_type
        )
        await self._catalog.add_tus_upload(
            TusUpload(session_id=session.id, metadata=metadata, concat=concat)
        )
        parts = [item for item in media if item.size]
        store = self._stores[session.storage]
        if isinstance(store, PartCopying) and _copyable(parts):
            # Each partial becomes one part, copied inside S3: no byte passes through here.
            await self._catalog.set_length(session.id, size, len(parts))
            for number, item in enumerate(parts):
                etag = await store.copy_part(
                    session.key, session.upload_id, number=number, source_key=item.key
                )
                chunk = Chunk(number=number, size=item.size, storage=store.kind, etag=etag)
                await self._catalog.put_chunk(session.id, chunk)
        else:
            # Through this server; empty partials are skipped (S3 refuses to read from byte 0 of
            # an empty object).
            reader = _JoinedObjects([self._stores[item.storage].read(item.key) for item in parts])
            body = PatchBody(reader.read, size, None)
            await self._receive(user_id, session, 0, 0, body, None)
        state = await self.state(user_id, session.id)
        for item in media:
            await self._library.delete(user_id, item.id)
        log.info("tus.concatenated", session_id=session.id, partials=len(media), size=size)
        return state

    async def _finished_partial(self, user_id: str, upload_id: str) -> Media:
        session, upload = await self._load(user_id, upload_id)
        if upload.concat != PARTIAL:
            raise BadRequest(f"upload {upload_id} is not a partial upload")
        media = await self._catalog.get_media(session.media_id)
        if session.state is not SessionState.COMPLETED or media is None:
            raise BadRequest(f"partial upload {upload_id} is not finished")
        if media.state is not MediaState.READY:
            raise BadRequest(f"partial upload {upload_id} is still being finalized")
        return media

    async def terminate(self, user_id: str, upload_id: str) -> None:
        # Takes over from a PATCH still running (stalled, say), once it has ended, so
        # that it leaves no tail behind.
        async with self._lock(upload_id):
            await self._load(user_id, upload_id)
            await self._engine.abort(user_id, upload_id)

    def _lock(self, upload_id: str) -> AbstractAsyncContextManager[ChunkLease]:
        """One request at a time per upload, on every instance, the newest taking over:
        a PATCH still reading its body (stalled, or its client reconnected and sent it
        again) is asked to let go, keeps what any cut PATCH keeps, and answers 409."""
        return self._engine.locks.upload(upload_id)

    async def _receive(
        self,
        user_id: str,
        session: UploadSession,
        parts_end: int,
        tail: int,
        body: PatchBody,
        checksum: Checksum | None,
    ) -> None:
        """Send the body's whole parts on and spool what is left; undo it all on a bad checksum."""
        written: list[int] = []
        position = parts_end + tail
        try:
            last = parts_end // session.chunk_size
            if tail and tail == session.chunk_length(last):
                # The length this PATCH set ends the file where the tail does.
                whole = self._tails.body(session.id, parts_end, tail)
                await self._put_part(user_id, session, last, PartSource(whole, body, 0))
                written.append(last)
            while position < session.size and body.remaining != 0:
                number = position // session.chunk_size
                part_start = session.chunk_offset(number)
                spooled = position - part_start
                need = session.chunk_length(number) - spooled
                if body.remaining is not None and body.remaining >= need:
                    head = self._tails.body(session.id, part_start, spooled) if spooled else None
                    await self._put_part(user_id, session, number, PartSource(head, body, need))
                else:
                    limit = need if body.remaining is None else body.remaining
                    added = await self._tails.append(
                        session.id, part_start, body.read, fresh=not spooled, limit=limit
                    )
                    if added < need:
                        position += added
                        break
                    whole = self._tails.body(session.id, part_start, spooled + added)
                    await self._put_part(user_id, session, number, PartSource(whole, body, 0))
                written.append(number)
                position = part_start + session.chunk_length(number)
            if body.remaining is None and await body.read(1):
                raise FileTooLarge(f"the body goes past the upload's length {session.size}")
            if checksum is not None and body.digest() != checksum.digest:
                raise ChecksumMismatch(
                    f"the body's {checksum.algorithm} does not match Upload-Checksum"
                )
        except BaseException:
            if checksum is not None:
                # Nothing of a PATCH that could not be verified is kept.
                await asyncio.shield(self._undo(session, written, parts_end, tail))
            raise
        unaligned = position < session.size and position % session.chunk_size
        await self._tails.discard(
            session.id, keep=position - position % session.chunk_size if unaligned else None
        )

    async def _put_part(
        self, user_id: str, session: UploadSession, number: int, source: ReadSource
    ) -> None:
        await self._engine.put_chunk(
            user_id, session.id, number, source, declared_length=None, expected=ExpectedDigests()
        )

    async def _undo(
        self, session: UploadSession, written: list[int], parts_end: int, tail: int
    ) -> None:
        # The tails go first: once the parts are dropped, a tail starting where
        # they ended must not be found and counted.
        await self._tails.discard(session.id, keep=parts_end)
        await self._tails.truncate(session.id, parts_end, tail)
        for number in written:
            await self._catalog.drop_chunk(session.id, number)

    async def _set_length(
        self, session: UploadSession, upload: TusUpload, length: int
    ) -> tuple[UploadSession, TusUpload]:
        if not upload.length_deferred:
            if length != session.size:
                raise BadRequest(f"Upload-Length is {session.size} and cannot change")
            return session, upload
        parts_end, tail = await self._position(session)
        if length < parts_end + tail:
            raise BadRequest(f"Upload-Length {length} is below the offset {parts_end + tail}")
        if length > session.size:
            raise FileTooLarge(f"Upload-Length {length} is over the limit of {session.size}")
        total = -(-length // session.chunk_size)
        await self._catalog.set_length(session.id, length, total)
        return await self._load(session.user_id, session.id)

    async def _load(self, user_id: str, upload_id: str) -> tuple[UploadSession, TusUpload]:
        session = await self._engine.owned_session(user_id, upload_id)
        upload = await self._catalog.get_tus_upload(upload_id)
        if upload is None:
            raise NotFound(f"no tus upload {upload_id}")
        return session, upload

    async def _position(self, session: UploadSession) -> tuple[int, int]:
        """Where the contiguous parts end, and how many bytes the tail after them holds."""
        if session.state is not SessionState.OPEN:
            return session.size, 0
        received = {chunk.number for chunk in await self._catalog.chunks(session.id)}
        count = 0
        while count in received:
            count += 1
        if count >= session.total_chunks:
            return session.size, 0
        parts_end = session.chunk_offset(count)
        return parts_end, await self._tails.size(session.id, parts_end)


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
