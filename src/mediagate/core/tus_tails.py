"""Where a tus upload keeps the bytes after its last part, too few for a part yet.

S3 takes parts of at least 5 MiB (but the last), so the bytes a PATCH leaves
short of a part wait as a small object in the bucket, as tusd's `{id}.part`
does: `{key_prefix}.tus-tails/{session}/{start}-{size}`. The next PATCH streams
it back in front of its own bytes into the next part. The key names the tail's
start and size, so a new tail never overwrites the one the catalog records
before it is recorded itself (a PATCH whose checksum fails keeps the old one).
When S3 cannot take a tail, it is spilled like a part: written into the
session's local staging file at its offset. No tail touches the local disk
otherwise, so instances need no shared volume for tus.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from mediagate import metrics
from mediagate.core.chunk_stream import ChunkStream, ExpectedDigests, ReadSource
from mediagate.errors import StorageFull, StorageUnavailable
from mediagate.models import StorageKind, TusUpload, UploadSession
from mediagate.storage.base import Remainders, SpillStore, Stores

log = structlog.get_logger("mediagate.tus")

TAILS_FOLDER = ".tus-tails"


@dataclass(frozen=True)
class Tail:
    start: int
    size: int
    storage: StorageKind

    @classmethod
    def of(cls, upload: TusUpload) -> Tail | None:
        if not upload.tail_size:
            return None
        return cls(upload.tail_start, upload.tail_size, upload.tail_storage)


class TusTails:
    def __init__(
        self, stores: Stores, spill: SpillStore, key_prefix: str, *, fallback: bool = True
    ) -> None:
        """`fallback`: whether a tail S3 refuses may go to local disk (MEDIAGATE_FALLBACK)."""
        self._stores = stores
        self._spill = spill
        self._key_prefix = key_prefix
        self._fallback = fallback

    def _folder(self, session_id: str) -> str:
        return f"{self._key_prefix}{TAILS_FOLDER}/{session_id}/"

    def _key(self, session_id: str, tail: Tail) -> str:
        return f"{self._folder(session_id)}{tail.start}-{tail.size}"

    async def put(self, session: UploadSession, start: int, size: int, source: ReadSource) -> Tail:
        """Store `size` bytes of `source` as the tail from `start`: in the bucket, or
        spilled to the local disk if S3 refuses it before its first byte."""
        stream = ChunkStream(source, size, ExpectedDigests())
        store = self._stores[session.storage]
        if isinstance(store, Remainders):
            tail = Tail(start, size, store.kind)
            try:
                await store.put_stream(self._key(session.id, tail), length=size, body=stream)
                return tail
            except StorageUnavailable as error:
                if stream.started or not self._fallback:
                    raise
                try:
                    await self._spill_tail(session, start, size, stream)
                except StorageFull:
                    raise error from None  # S3 may take it once it is back
                log.warning("tus.tail_spilled", session_id=session.id, error=str(error))
                metrics.chunk_spilled()
                return Tail(start, size, self._spill.kind)
        await self._spill_tail(session, start, size, stream)
        return Tail(start, size, self._spill.kind)

    async def _spill_tail(
        self, session: UploadSession, start: int, size: int, stream: ChunkStream
    ) -> None:
        await self._spill.put_part(
            session.key,
            session.local_upload_id,
            number=-1,
            offset=start,
            length=size,
            body=stream,
        )

    def reader(self, session: UploadSession, tail: Tail) -> TailReader:
        if tail.storage is self._spill.kind:
            body = self._spill.part_body(session.local_upload_id, tail.start, tail.size)
            return TailReader(aiter(body), tail.size)
        key = self._key(session.id, tail)
        return TailReader(self._stores[tail.storage].read(key), tail.size)

    async def drop(self, session: UploadSession, tail: Tail) -> None:
        """Remove a tail no longer needed; one left behind goes with the session."""
        store = self._stores[tail.storage]
        if isinstance(store, Remainders):
            with contextlib.suppress(StorageUnavailable):
                await store.delete(self._key(session.id, tail))

    async def discard(self, session: UploadSession) -> None:
        """Remove every tail of the session (also those a crash left)."""
        store = self._stores[session.storage]
        if isinstance(store, Remainders):
            try:
                await store.delete_under(self._folder(session.id))
            except StorageUnavailable as error:
                log.warning("tus.tails_kept", session_id=session.id, error=str(error))


class TailReader:
    """A tail's bytes as a `ReadSource`: exactly its size, or a failure."""

    def __init__(self, pieces: AsyncIterator[bytes], size: int) -> None:
        self._pieces = pieces
        self._remaining = size
        self._piece = b""

    async def start(self) -> None:
        """Fetch the first piece: S3 is asked for the tail before it is asked to take
        the part it leads (while S3 recovers, a probe of the breaker each, in order)."""
        await self._fill()

    async def read(self, n: int) -> bytes:
        if not await self._fill():
            return b""
        piece, self._piece = self._piece[:n], self._piece[n:]
        self._remaining -= len(piece)
        return piece

    async def _fill(self) -> bool:
        while not self._piece:
            try:
                self._piece = await anext(self._pieces)
            except StopAsyncIteration:
                if self._remaining:
                    raise StorageUnavailable(
                        f"a tus tail ended {self._remaining} bytes short"
                    ) from None
                return False
        return True

    async def aclose(self) -> None:
        close = getattr(self._pieces, "aclose", None)
        if close is not None:
            await close()
