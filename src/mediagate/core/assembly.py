"""Turning a session whose chunks are all safe into one stored object.

Where the bytes end up follows the fallback rules:
- a local session, or an S3 session whose every chunk was spilled to local
  disk: the local staging file is published as a local media;
- otherwise on S3: spilled chunks are uploaded as their parts, then the
  multipart upload is completed.

The media is recorded as `finalizing` before the first of these steps, and
each step may be repeated: if S3 is unavailable, or the server dies, midway,
`maintenance` finishes the session later (docs/architecture.md, Crash safety).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime

import structlog

from mediagate import metrics
from mediagate.catalog.base import UploadRecords
from mediagate.core.file_digest import RunningDigest
from mediagate.core.hooks import Hooks
from mediagate.core.probing import MediaProber
from mediagate.errors import (
    BodyReadTimeout,
    CatalogUnavailable,
    FileDigestMismatch,
    HookUnavailable,
    MissingChunks,
    NotMedia,
    Problem,
    StorageFull,
    StorageUnavailable,
    UploadRefused,
)
from mediagate.models import Chunk, Media, MediaState, StorageKind, UploadSession
from mediagate.storage.base import NewObject, StoredObject, StoreRoles

log = structlog.get_logger("mediagate.upload")


# What a later try may get past: the store, the catalog or the disk away or full, a
# read that stalled, the application's pre-finish hook silent. Anything else (a spilled
# chunk's file gone, a chunk's record missing, S3 refusing the parts or no longer knowing
# the upload) stays as it is.
RETRYABLE: tuple[type[Problem], ...] = (
    StorageUnavailable,
    CatalogUnavailable,
    StorageFull,
    BodyReadTimeout,
    HookUnavailable,
)


def worth_retrying(problem: Problem) -> bool:
    """Whether finishing a session again later may succeed where it just failed."""
    return isinstance(problem, RETRYABLE)


def new_object(session: UploadSession) -> NewObject:
    return NewObject(
        key=session.key,
        content_type=session.content_type,
        owner=session.user_id,
        filename=session.filename,
    )


class Assembler:
    def __init__(
        self,
        catalog: UploadRecords,
        roles: StoreRoles,
        clock: Callable[[], datetime],
        hooks: Hooks | None = None,
        prober: MediaProber | None = None,
    ) -> None:
        self._catalog = catalog
        self._hooks = hooks
        self._prober = prober
        self._stores = roles.by_kind
        self._clock = clock
        self._spill = roles.spill

    async def assemble(
        self, session: UploadSession, chunks: list[Chunk], digest: RunningDigest | None
    ) -> Media:
        """Store the file and record its media: ready, or finalizing if S3 is away."""
        if session.sha256 and _hashed_all(session, digest):
            assert digest is not None
            if digest.hasher.hexdigest() != session.sha256:
                raise FileDigestMismatch(
                    f"the file's SHA-256 is {digest.hasher.hexdigest()}, initiate declared "
                    f"{session.sha256}; re-send the wrong chunks and complete again"
                )
        # Recorded before the first step that cannot be undone (the staging
        # file's rename, S3's complete): from here the session takes no chunk,
        # and whatever a crash interrupts, the background finalizer finishes.
        media = await self._record_finalizing(session)
        try:
            return await self.finish(session, chunks, digest)
        except StorageUnavailable as error:
            log.warning("upload.finalizing", session_id=session.id, error=str(error))
            return media
        except FileDigestMismatch:
            # Answered 422 now, with the session reopened: no failed media
            # under an id this client was never given.
            await self._catalog.delete_media(media.id)
            raise

    async def finish(
        self, session: UploadSession, chunks: list[Chunk], digest: RunningDigest | None
    ) -> Media:
        """Publish a finalizing session's file and record it ready; each step may be
        repeated after a crash."""
        if len(chunks) != session.total_chunks:
            # Never publish a file with a hole (S3 completes a multipart upload
            # whose part numbers skip one without complaint).
            raise MissingChunks(
                f"{session.total_chunks - len(chunks)} of {session.total_chunks} chunks "
                "are no longer recorded"
            )
        if self._stays_spilled(session, chunks):
            stored = await self._publish_spilled(session, chunks)
            storage = self._spill.kind
        else:
            stored = await self._publish_parts(session, chunks)
            storage = session.storage
        if session.sha256 and not _hashed_all(session, digest):
            await self.verify_read_back(session, storage, digest)
        media = self._media(session, size=stored.size, checksum=None, storage=storage)
        if self._prober is not None:
            media = await self._probe(self._prober, session, media)
        if self._hooks is not None:
            await self._pre_finish(self._hooks, session, stored, storage)
        return await self.record_ready(session, stored, storage, probed=media)

    async def _probe(self, prober: MediaProber, session: UploadSession, media: Media) -> Media:
        """What probing finds in the stored file, before the media is ready (so that
        media.ready carries it); what the policy refuses is deleted (docs/media.md)."""
        media = await prober.probe(media)
        refusal = prober.policy.refusal(media.media_facts(), media.probe_error)
        if refusal is not None:
            await self._catalog.delete_session(session.id)
            await self._catalog.delete_media(session.media_id)
            for key in filter(None, (media.key, media.poster_key)):
                try:
                    await self._stores[media.storage].delete(key)
                except StorageUnavailable as error:
                    log.warning(
                        "upload.refused_object_kept", session_id=session.id, error=str(error)
                    )
            log.info("upload.refused", session_id=session.id, reason="not-media")
            raise NotMedia(refusal)
        return media

    async def _pre_finish(
        self, hooks: Hooks, session: UploadSession, stored: StoredObject, storage: StorageKind
    ) -> None:
        """Ask the application; a refusal deletes the file, the session and its media
        (docs/integration.md, "Hooks"). No decision leaves the session finalizing: the
        background finalizer asks again."""
        try:
            await hooks.pre_finish(
                {
                    "user_id": session.user_id,
                    "media_id": session.media_id,
                    "upload_id": session.id,
                    "filename": session.filename,
                    "size": stored.size,
                    "content_type": session.content_type,
                    "storage": storage.value,
                    "sha256": session.sha256,
                    "protocol": session.protocol.value,
                }
            )
        except UploadRefused:
            # The session goes first: from then on nothing can finish it again.
            await self._catalog.delete_session(session.id)
            await self._catalog.delete_media(session.media_id)
            try:
                await self._stores[storage].delete(session.key)
            except StorageUnavailable as error:
                log.warning("upload.refused_object_kept", session_id=session.id, error=str(error))
            log.info("upload.refused", session_id=session.id, hook="pre-finish")
            raise

    def _stays_spilled(self, session: UploadSession, chunks: list[Chunk]) -> bool:
        """A session of the spill store, or one whose every chunk was spilled."""
        spill = self._spill.kind
        if session.storage is spill:
            return True
        return bool(chunks) and all(chunk.storage is spill for chunk in chunks)

    async def _publish_spilled(self, session: UploadSession, chunks: list[Chunk]) -> StoredObject:
        etags = [chunk.etag for chunk in chunks]
        stored = await self._spill.complete_upload(session.key, session.local_upload_id, etags)
        if session.storage is self._spill.kind:
            return stored
        log.warning("upload.fallback", session_id=session.id, reason="all chunks spilled")
        metrics.fallback("all_chunks_spilled")
        try:
            await self._stores[session.storage].abort_upload(session.key, session.upload_id)
        except StorageUnavailable:
            pass  # the bucket's abort-incomplete-uploads rule removes its parts later
        return stored

    async def _publish_parts(self, session: UploadSession, chunks: list[Chunk]) -> StoredObject:
        """Upload spilled chunks as their parts, then complete the multipart upload."""
        store = self._stores[session.storage]
        etags = []
        for chunk in chunks:
            if chunk.storage is self._spill.kind:
                offset = chunk.offset(session.chunk_size)
                chunk = chunk.model_copy(update={"storage": session.storage})
                chunk.etag = await store.put_part(
                    session.key,
                    session.upload_id,
                    number=chunk.number,
                    offset=offset,
                    length=chunk.size,
                    body=self._spill.part_body(session.local_upload_id, offset, chunk.size),
                )
                # Recorded at once, so a restart does not move this part again.
                await self._catalog.put_chunk(session.id, chunk)
            etags.append(chunk.etag)
        stored = await store.complete_upload(session.key, session.upload_id, etags)
        await self._spill.abort_upload(session.key, session.local_upload_id)
        return stored

    async def _record_finalizing(self, session: UploadSession) -> Media:
        media = self._media(
            session,
            size=session.size,
            checksum=None,
            storage=session.storage,
            state=MediaState.FINALIZING,
        )
        await self._catalog.complete_session(session.id, media)
        return media

    async def record_ready(
        self,
        session: UploadSession,
        stored: StoredObject,
        storage: StorageKind,
        probed: Media | None = None,
    ) -> Media:
        if session.sha256:
            checksum = f"sha256:{session.sha256}"
        else:
            checksum = f"etag:{stored.etag.strip(chr(34))}"
        media = self._media(session, size=stored.size, checksum=checksum, storage=storage)
        if probed is not None:
            media = media.model_copy(
                update={
                    "facts": probed.facts,
                    "probe_error": probed.probe_error,
                    "poster_key": probed.poster_key,
                }
            )
        await self._catalog.complete_session(session.id, media)
        return media

    def _media(
        self,
        session: UploadSession,
        *,
        size: int,
        checksum: str | None,
        storage: StorageKind,
        state: MediaState = MediaState.READY,
    ) -> Media:
        return Media(
            id=session.media_id,
            user_id=session.user_id,
            filename=session.filename,
            content_type=session.content_type,
            size=size,
            checksum=checksum,
            storage=storage,
            key=session.key,
            created_at=self._clock(),
            state=state,
            app_metadata=session.app_metadata,
        )

    async def verify_read_back(
        self, session: UploadSession, storage: StorageKind, digest: RunningDigest | None
    ) -> None:
        """Hash what was not hashed on the way in; on a mismatch, reopen the session."""
        start_chunk = digest.next_chunk if digest is not None else 0
        hasher = digest.hasher if digest is not None else hashlib.sha256()
        store = self._stores[storage]
        if start_chunk < session.total_chunks:
            async for piece in store.read(session.key, session.chunk_offset(start_chunk)):
                hasher.update(piece)
        actual = hasher.hexdigest()
        if actual == session.sha256:
            return
        error = (
            f"the file's SHA-256 is {actual}, initiate declared {session.sha256}; "
            "the session is open again and every chunk must be sent again"
        )
        # Reopened (durably) before the object goes: a crash in between leaves
        # a stale object that nothing serves and the next complete overwrites,
        # never a session pointing at an upload that no longer exists.
        upload_id = await self._stores[session.storage].start_upload(new_object(session))
        await self._catalog.replace_upload(session.id, upload_id, error=error)
        try:
            await store.delete(session.key)
        except StorageUnavailable as failure:
            log.warning("upload.stale_object_kept", session_id=session.id, error=str(failure))
        raise FileDigestMismatch(error)


def _hashed_all(session: UploadSession, digest: RunningDigest | None) -> bool:
    return digest is not None and digest.next_chunk == session.total_chunks
