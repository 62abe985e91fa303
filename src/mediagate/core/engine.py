"""The upload engine: sessions, chunk accounting and completion.

A chunk's bytes take one way through: request → `put_chunk` → `ChunkStream`
(count, hash if asked) → `BlobStore.put_part`. The engine keeps only what it
must remember in the catalog, and is the only place that decides whether a
chunk counts as received.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from mediagate.catalog.base import Catalog
from mediagate.core.chunk_stream import ChunkStream, ExpectedDigests, ReadSource
from mediagate.core.chunking import plan_chunks
from mediagate.core.errors import (
    ChunkLengthMismatch,
    ChunkOutOfRange,
    FileDigestMismatch,
    MissingChunks,
    NotFound,
    SessionExpired,
    SessionNotOpen,
)
from mediagate.core.keys import new_id, object_key, sanitize_filename
from mediagate.core.models import Chunk, Media, SessionState, StorageKind, UploadSession
from mediagate.storage.base import NewObject, Stores

log = structlog.get_logger("mediagate.upload")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class RunningDigest:
    """SHA-256 of the file's first `next_chunk` chunks, fed while they stream in.

    Chunks that arrive in order are hashed as they pass, for free; once one
    arrives out of order the rest is read back from the store at complete.
    """

    next_chunk: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)


@dataclass
class SessionGate:
    """In-process coordination of one session's requests.

    One writer per chunk number (a client retrying while its first attempt is
    still being read must not interleave with it), and complete waits for the
    chunks in flight and keeps new ones out.
    """

    chunk_locks: dict[int, asyncio.Lock] = field(default_factory=dict)
    in_flight: int = 0
    completing: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    complete_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    digest: RunningDigest | None = field(default_factory=RunningDigest)

    def __post_init__(self) -> None:
        self.idle.set()

    def chunk_lock(self, number: int) -> asyncio.Lock:
        return self.chunk_locks.setdefault(number, asyncio.Lock())


@dataclass(frozen=True)
class ChunkReceipt:
    chunk: Chunk
    received_chunks: int


@dataclass(frozen=True)
class SessionStatus:
    session: UploadSession
    received: list[int]
    bytes_received: int


class UploadEngine:
    def __init__(
        self,
        catalog: Catalog,
        stores: Stores,
        *,
        default_storage: StorageKind,
        key_prefix: str,
        chunk_size: int,
        session_ttl: timedelta,
        clock: Clock = utc_now,
    ) -> None:
        self._catalog = catalog
        self._stores = stores
        self._default_storage = default_storage
        self._key_prefix = key_prefix
        self._chunk_size = chunk_size
        self._session_ttl = session_ttl
        self._clock = clock
        self._gates: dict[str, SessionGate] = {}

    async def initiate(
        self,
        user_id: str,
        *,
        filename: str,
        size: int,
        content_type: str,
        chunk_size: int | None = None,
        sha256: str | None = None,
    ) -> UploadSession:
        plan = plan_chunks(size, chunk_size or self._chunk_size)
        media_id = new_id()
        filename = sanitize_filename(filename)
        key = object_key(self._key_prefix, user_id, media_id, filename)
        store = self._stores[self._default_storage]
        upload_id = await store.start_upload(
            NewObject(key=key, content_type=content_type, owner=user_id, filename=filename)
        )
        now = self._clock()
        session = UploadSession(
            id=new_id(),
            user_id=user_id,
            filename=filename,
            content_type=content_type,
            size=size,
            chunk_size=plan.chunk_size,
            total_chunks=plan.total_chunks,
            sha256=sha256.lower() if sha256 else None,
            storage=store.kind,
            key=key,
            upload_id=upload_id,
            state=SessionState.OPEN,
            created_at=now,
            expires_at=now + self._session_ttl,
            media_id=media_id,
        )
        await self._catalog.add_session(session)
        log.info(
            "upload.initiated",
            session_id=session.id,
            user_id=user_id,
            size=size,
            chunks=plan.total_chunks,
            storage=store.kind.value,
        )
        return session

    async def status(self, user_id: str, session_id: str) -> SessionStatus:
        session = await self._owned_session(user_id, session_id)
        chunks = await self._catalog.chunks(session_id)
        return SessionStatus(
            session=session,
            received=[chunk.number for chunk in chunks],
            bytes_received=sum(chunk.size for chunk in chunks),
        )

    async def put_chunk(
        self,
        user_id: str,
        session_id: str,
        number: int,
        source: ReadSource,
        *,
        declared_length: int | None,
        expected: ExpectedDigests,
    ) -> ChunkReceipt:
        session = await self._open_session(user_id, session_id)
        if not 0 <= number < session.total_chunks:
            raise ChunkOutOfRange(
                f"chunk {number} is not in 0..{session.total_chunks - 1}",
                total_chunks=session.total_chunks,
            )
        length = session.chunk_length(number)
        if declared_length is not None and declared_length != length:
            raise ChunkLengthMismatch(
                f"chunk {number} must be {length} bytes, the request declares {declared_length}",
                expected_size=length,
            )
        gate = self._gate(session_id)
        if gate.completing:
            raise SessionNotOpen("the session is being completed")
        gate.in_flight += 1
        gate.idle.clear()
        try:
            async with gate.chunk_lock(number):
                return await self._receive_chunk(session, gate, number, length, source, expected)
        finally:
            gate.in_flight -= 1
            if gate.in_flight == 0:
                gate.idle.set()

    async def _receive_chunk(
        self,
        session: UploadSession,
        gate: SessionGate,
        number: int,
        length: int,
        source: ReadSource,
        expected: ExpectedDigests,
    ) -> ChunkReceipt:
        digest = gate.digest if session.sha256 else None
        in_order = digest is not None and digest.next_chunk == number
        if digest is not None and number < digest.next_chunk:
            # A chunk already hashed is being replaced: the running digest no
            # longer describes the file, so complete reads everything back.
            gate.digest = digest = None
        file_hasher = digest.hasher.copy() if digest is not None and in_order else None
        stream = ChunkStream(source, length, expected, also_hash=file_hasher)
        store = self._stores[session.storage]
        try:
            etag = await store.put_part(
                session.key,
                session.upload_id,
                number=number,
                offset=session.chunk_offset(number),
                length=length,
                body=stream,
            )
        except Exception:
            # Whatever the store held for this number may now be partly
            # overwritten, so the chunk counts as missing until sent again.
            await self._catalog.drop_chunk(session.id, number)
            if stream.failure is not None:
                raise stream.failure from None
            raise
        if file_hasher is not None and gate.digest is digest and digest.next_chunk == number:
            digest.hasher = file_hasher
            digest.next_chunk = number + 1
        chunk = Chunk(number=number, size=length, etag=etag, md5=stream.md5, sha256=stream.sha256)
        received = await self._catalog.put_chunk(session.id, chunk)
        return ChunkReceipt(chunk=chunk, received_chunks=received)

    async def abort(self, user_id: str, session_id: str) -> None:
        session = await self._owned_session(user_id, session_id)
        if session.state is SessionState.COMPLETED:
            raise SessionNotOpen("the session is completed; delete the media instead")
        await self._stores[session.storage].abort_upload(session.key, session.upload_id)
        await self._catalog.delete_session(session_id)
        self._gates.pop(session_id, None)
        log.info("upload.aborted", session_id=session_id, user_id=user_id)

    async def complete(self, user_id: str, session_id: str) -> Media:
        session = await self._owned_session(user_id, session_id)
        gate = self._gate(session_id)
        async with gate.complete_lock:
            session = await self._owned_session(user_id, session_id)
            if session.state is SessionState.COMPLETED:
                # A retried complete (its first answer was lost) gets the same media.
                media = await self._catalog.get_media(session.media_id)
                if media is None:
                    raise NotFound("the media of this session has been deleted")
                return media
            self._check_open(session)
            gate.completing = True
            try:
                await gate.idle.wait()
                media = await self._assemble(session, gate)
            except Exception as error:
                log.warning(
                    "upload.complete_failed",
                    session_id=session_id,
                    user_id=user_id,
                    error=str(error),
                )
                raise
            finally:
                gate.completing = False
        self._gates.pop(session_id, None)
        log.info(
            "upload.completed",
            session_id=session_id,
            media_id=media.id,
            user_id=user_id,
            size=media.size,
            storage=media.storage.value,
        )
        return media

    async def _assemble(self, session: UploadSession, gate: SessionGate) -> Media:
        chunks = await self._catalog.chunks(session.id)
        received = {chunk.number for chunk in chunks}
        missing = [n for n in range(session.total_chunks) if n not in received]
        if missing:
            raise MissingChunks(
                f"{len(missing)} of {session.total_chunks} chunks are missing",
                missing_chunks=missing,
            )
        digest = gate.digest if session.sha256 else None
        hashed_all = digest is not None and digest.next_chunk == session.total_chunks
        if hashed_all and digest.hasher.hexdigest() != session.sha256:
            raise FileDigestMismatch(
                f"the file's SHA-256 is {digest.hasher.hexdigest()}, "
                f"initiate declared {session.sha256}; re-send the wrong chunks and complete again",
            )
        store = self._stores[session.storage]
        stored = await store.complete_upload(
            session.key, session.upload_id, [chunk.etag for chunk in chunks]
        )
        etag = stored.etag.strip('"')
        checksum = f"sha256:{session.sha256}" if session.sha256 else f"etag:{etag}"
        if session.sha256 and not hashed_all:
            await self._verify_read_back(session, digest)
        media = Media(
            id=session.media_id,
            user_id=session.user_id,
            filename=session.filename,
            content_type=session.content_type,
            size=stored.size,
            checksum=checksum,
            storage=session.storage,
            key=session.key,
            created_at=self._clock(),
        )
        await self._catalog.complete_session(session.id, media)
        return media

    async def _verify_read_back(self, session: UploadSession, digest: RunningDigest | None) -> None:
        """Hash what was not hashed on the way in; on a mismatch, reopen the session."""
        start_chunk = digest.next_chunk if digest is not None else 0
        hasher = digest.hasher if digest is not None else hashlib.sha256()
        store = self._stores[session.storage]
        if start_chunk < session.total_chunks:
            async for piece in store.read(session.key, session.chunk_offset(start_chunk)):
                hasher.update(piece)
        actual = hasher.hexdigest()
        if actual == session.sha256:
            return
        await store.delete(session.key)
        upload_id = await store.start_upload(
            NewObject(
                key=session.key,
                content_type=session.content_type,
                owner=session.user_id,
                filename=session.filename,
            )
        )
        await self._catalog.replace_upload(session.id, upload_id)
        self._gates.pop(session.id, None)
        raise FileDigestMismatch(
            f"the file's SHA-256 is {actual}, initiate declared {session.sha256}; "
            "the session stays open but every chunk must be sent again",
        )

    def _gate(self, session_id: str) -> SessionGate:
        return self._gates.setdefault(session_id, SessionGate())

    async def _owned_session(self, user_id: str, session_id: str) -> UploadSession:
        session = await self._catalog.get_session(session_id)
        if session is None or session.user_id != user_id:
            raise NotFound(f"no upload session {session_id}")
        return session

    async def _open_session(self, user_id: str, session_id: str) -> UploadSession:
        session = await self._owned_session(user_id, session_id)
        self._check_open(session)
        return session

    def _check_open(self, session: UploadSession) -> None:
        if session.state is SessionState.EXPIRED or session.expires_at <= self._clock():
            raise SessionExpired(f"the session expired at {session.expires_at.isoformat()}")
        if session.state is not SessionState.OPEN:
            raise SessionNotOpen(f"the session is {session.state.value}")
