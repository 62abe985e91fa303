"""Direct uploads: the client PUTs its parts straight into S3 at URLs this server signs.

The server keeps control of everything but the bytes: it makes the session (its
key, the same layout as every media; its S3 multipart upload), signs a URL for one
part of that user's open session at a time, valid for minutes, and at complete
lists the parts in S3 itself, checks them and records them as the session's chunks
before the engine finishes it like any other (object size, pre-finish hook, media,
events). Expiry and abort discard the S3 upload as for every session.

A direct upload of known size is planned like a native one: the chunks the client
cannot PUT to the bucket (cut off from it, S3 failing for it) it sends through the
server's chunk API into the same S3 upload, and complete takes both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from mediagate.catalog.base import DirectRecords
from mediagate.core.chunking import MAX_PARTS
from mediagate.core.engine import UploadEngine
from mediagate.errors import (
    ChunkLengthMismatch,
    ChunkOutOfRange,
    DirectUploadNotOffered,
    DirectUploadUnavailable,
    FileTooLarge,
    MissingChunks,
    SessionNotOpen,
    StorageUnavailable,
    WrongProtocol,
)
from mediagate.models import (
    Chunk,
    Media,
    SessionState,
    StorageKind,
    UploadProtocol,
    UploadSession,
)
from mediagate.storage.base import BlobStore, DirectParts, ListedPart

log = structlog.get_logger("mediagate.upload")

# How long a signed part URL is good for (seconds): long enough for one part on a
# slow link (a 64 MiB part at 1 Mbit/s takes 9 minutes), short enough that a leaked
# URL is soon of no use. A part's PUT that starts in time may take longer.
PART_URL_EXPIRY = 900


class DirectUploads:
    def __init__(
        self,
        engine: UploadEngine,
        catalog: DirectRecords,
        primary: BlobStore,
        *,
        max_size: int,
    ) -> None:
        """`primary`: the store new uploads go to; direct uploads are offered when a
        client can PUT its parts itself (S3; a local-only server has no bucket)."""
        self._engine = engine
        self._catalog = catalog
        self._max_size = max_size
        self._primary = primary
        self._direct = primary if isinstance(primary, DirectParts) else None

    def _store(self) -> DirectParts:
        if self._direct is None:
            raise DirectUploadNotOffered(
                "this server keeps uploads on its own disk: upload through it "
                "(POST /api/v1/media/upload/initiate or tus)"
            )
        return self._direct

    async def create(
        self,
        user_id: str,
        *,
        filename: str,
        content_type: str,
        size: int | None,
        chunk_size: int | None = None,
        metadata: Mapping[str, str],
        caller: str | None,
    ) -> UploadSession:
        """A session whose parts go to S3 directly. `size` None (or 0): unknown until
        complete, the parts' sizes are the client's (a session of size 0 has none planned)."""
        self._store()
        try:
            session = await self._engine.initiate(
                user_id,
                filename=filename,
                size=size or 0,
                content_type=content_type,
                chunk_size=chunk_size,
                protocol=UploadProtocol.DIRECT,
                metadata=metadata,
                caller=caller,
            )
        except StorageUnavailable as error:
            raise _unavailable(error) from None
        if session.storage is not self._primary.kind:
            # S3 failed and the engine fell back to local disk, where no client can PUT.
            await self._engine.abort(user_id, session.id, via=UploadProtocol.DIRECT)
            raise _unavailable(None)
        log.info("direct.created", session_id=session.id, size=size)
        return session

    async def sign_part(
        self,
        user_id: str,
        session_id: str,
        number: int,
        *,
        length: int | None = None,
        content_md5: str | None = None,
    ) -> str:
        """A URL to PUT part `number` (0-based) of the user's open direct session."""
        store = self._store()
        session = await self._open(user_id, session_id)
        limit = session.total_chunks if session.size else MAX_PARTS
        if not 0 <= number < limit:
            raise ChunkOutOfRange(
                f"part {number + 1} is not in 1..{limit}", total_chunks=session.total_chunks
            )
        if session.size and length is not None and length != session.chunk_length(number):
            raise ChunkLengthMismatch(
                f"part {number + 1} must be {session.chunk_length(number)} bytes, not {length}",
                expected_size=session.chunk_length(number),
            )
        try:
            return await store.presigned_part_url(
                session.key,
                session.upload_id,
                number=number,
                expires_in=PART_URL_EXPIRY,
                length=length,
                content_md5=content_md5,
            )
        except StorageUnavailable as error:
            raise _unavailable(error) from None

    async def parts(self, user_id: str, session_id: str) -> list[ListedPart]:
        """The parts S3 holds of the user's open direct session."""
        store = self._store()
        session = await self._open(user_id, session_id)
        return await store.list_parts(session.key, session.upload_id)

    async def complete(
        self, user_id: str, session_id: str, claimed: Sequence[tuple[int, str]] | None
    ) -> Media:
        """List the parts in S3, check them (and against `claimed`, the client's
        (number, ETag) list, if given), record them and finish the session."""
        store = self._store()
        session = await self._engine.owned_session(user_id, session_id)
        _check_direct(session)
        if session.state is not SessionState.OPEN:
            # Completed already (the answer was lost) or finalizing: the engine says so.
            return await self._engine.complete(user_id, session_id, via=UploadProtocol.DIRECT)
        recorded = {chunk.number: chunk for chunk in await self._catalog.chunks(session.id)}
        if session.size and len(recorded) == session.total_chunks:
            # Every chunk came through the server: nothing to ask S3, which may be away
            # (the chunks spilled to local disk, and the media finalizes later).
            listed = []
        else:
            listed = await store.list_parts(session.key, session.upload_id)
        if claimed is not None:
            _check_claimed(claimed, listed, recorded)
        unplanned = not session.size
        if unplanned:
            chunks = _unplanned_chunks(listed, session.storage, self._max_size)
            await self._catalog.set_length(session.id, sum(c.size for c in chunks), len(chunks))
        else:
            chunks = _planned_chunks(session, listed, recorded)
        for chunk in chunks:
            await self._catalog.put_chunk(session.id, chunk)
        try:
            return await self._engine.complete(user_id, session_id, via=UploadProtocol.DIRECT)
        except Exception:
            if unplanned:
                # Unknown again, and its chunks forgotten: the next complete lists anew.
                current = await self._catalog.get_session(session_id)
                if current is not None and current.state is SessionState.OPEN:
                    await self._catalog.set_length(session_id, 0, 0)
            raise

    async def abort(self, user_id: str, session_id: str) -> None:
        await self._engine.abort(user_id, session_id, via=UploadProtocol.DIRECT)

    async def _open(self, user_id: str, session_id: str) -> UploadSession:
        session = await self._engine.owned_session(user_id, session_id)
        _check_direct(session)
        if session.state is not SessionState.OPEN:
            raise SessionNotOpen(f"the session is {session.state.value}")
        return session


def _unavailable(error: StorageUnavailable | None) -> DirectUploadUnavailable:
    if error is not None:
        log.warning("direct.unavailable", error=str(error))
    return DirectUploadUnavailable(
        "S3 cannot be used for direct uploads now: upload through the server "
        "(POST /api/v1/media/upload/initiate or tus) or try again later"
    )


def _check_direct(session: UploadSession) -> None:
    if session.protocol is not UploadProtocol.DIRECT:
        raise WrongProtocol(f"session {session.id} is not a direct upload")


def _check_claimed(
    claimed: Sequence[tuple[int, str]], listed: Sequence[ListedPart], recorded: Mapping[int, Chunk]
) -> None:
    """The parts the client says it sent must be the ones S3 (or the server) holds."""
    held = {part.number: part.etag.strip('"') for part in listed}
    held |= {number: chunk.etag.strip('"') for number, chunk in recorded.items()}
    missing = [number for number, etag in claimed if held.get(number) != etag.strip('"')]
    if missing:
        raise MissingChunks(
            f"{len(missing)} of the parts listed are not in S3 as listed (a different ETag, "
            "or none): send them again",
            missing_chunks=missing,
        )


def _planned_chunks(
    session: UploadSession, listed: Sequence[ListedPart], recorded: Mapping[int, Chunk]
) -> list[Chunk]:
    """The S3 parts of a session of known size that the catalog has no chunk for (those
    sent through the server are recorded already), each of its planned length."""
    chunks = []
    for part in listed:
        if part.number in recorded or part.number >= session.total_chunks:
            continue
        if part.size != session.chunk_length(part.number):
            raise ChunkLengthMismatch(
                f"part {part.number + 1} has {part.size} bytes, it must have "
                f"{session.chunk_length(part.number)}: send it again",
                expected_size=session.chunk_length(part.number),
            )
        chunks.append(
            Chunk(number=part.number, size=part.size, storage=session.storage, etag=part.etag)
        )
    return chunks


def _unplanned_chunks(
    listed: Sequence[ListedPart], storage: StorageKind, max_size: int
) -> list[Chunk]:
    """The parts of a session whose size the client never said, as its chunks: numbered
    1..N without a gap, all of one size but the last (no larger), at most `max_size`."""
    numbers = [part.number for part in listed]
    gaps = sorted(set(range(max(numbers, default=-1) + 1)) - set(numbers))
    if gaps:
        raise MissingChunks(
            f"{len(gaps)} parts are missing before the last one", missing_chunks=gaps
        )
    size = sum(part.size for part in listed)
    if size > max_size:
        raise FileTooLarge(
            f"the parts hold {size} bytes; this server takes files of at most {max_size} bytes",
            max_size=max_size,
        )
    first = listed[0].size if listed else 0
    for part in listed[:-1]:
        if part.size != first:
            raise ChunkLengthMismatch(
                f"part {part.number + 1} has {part.size} bytes, part 1 has {first}: every "
                "part but the last must have the same size",
                expected_size=first,
            )
    if listed and listed[-1].size > first:
        raise ChunkLengthMismatch(
            f"the last part has {listed[-1].size} bytes, more than the others' {first}",
            expected_size=first,
        )
    chunks = []
    for part in listed:
        chunks.append(
            Chunk(
                number=part.number,
                size=part.size,
                storage=storage,
                etag=part.etag,
                start=part.number * first,
            )
        )
    return chunks
