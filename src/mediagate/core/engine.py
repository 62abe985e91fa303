"""The upload engine: sessions, chunk accounting, fallback and completion.

A chunk's bytes take one way through: request → `put_chunk` → `ChunkStream`
(count, hash if asked) → `BlobStore.put_part`. The engine is the only place
that decides whether a chunk counts as received, and where it goes when S3
cannot take it: to local disk, acknowledged as safe all the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import structlog

from mediagate import metrics
from mediagate.catalog.base import UploadRecords
from mediagate.core.assembly import Assembler, new_object, worth_retrying
from mediagate.core.chunk_locks import ChunkLease
from mediagate.core.chunk_stream import ChunkStream, ExpectedDigests, ReadSource
from mediagate.core.chunking import MAX_PARTS, plan_chunks
from mediagate.core.file_digest import RunningDigest
from mediagate.core.hooks import Hooks, PreCreate
from mediagate.core.keys import new_id, object_key
from mediagate.core.probing import MediaProber
from mediagate.core.session_locks import Purpose, SessionBusy, SessionLocks
from mediagate.core.tus_tails import TusTails
from mediagate.errors import (
    ChunkLengthMismatch,
    ChunkOutOfRange,
    FileDigestMismatch,
    FileTooLarge,
    MissingChunks,
    NotFound,
    Problem,
    SessionExpired,
    SessionNotOpen,
    StorageFull,
    StorageUnavailable,
    TooManySessions,
    UploadFailed,
    UploadRefused,
    WrongProtocol,
)
from mediagate.filenames import sanitize_filename
from mediagate.models import (
    Chunk,
    Media,
    MediaState,
    SessionState,
    StorageKind,
    UploadProtocol,
    UploadSession,
)
from mediagate.storage.base import BlobStore, Staging, StoreRoles

log = structlog.get_logger("mediagate.upload")

Clock = Callable[[], datetime]

# A staging file no session refers to is removed once untouched this long (seconds).
ORPHAN_STAGING_AGE = 3600.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class Span(NamedTuple):
    """Where a part goes: its number, the file offset of its first byte, its length."""

    number: int
    start: int
    length: int


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
        catalog: UploadRecords,
        roles: StoreRoles,
        *,
        key_prefix: str,
        chunk_size: int,
        session_ttl: timedelta,
        max_upload_size: int | None = None,
        max_open_sessions_per_user: int | None = None,
        clock: Clock = utc_now,
        locks: SessionLocks,
        fallback: bool = True,
        hooks: Hooks | None = None,
        prober: MediaProber | None = None,
    ) -> None:
        """`roles`: new uploads go to the primary store, and with `fallback` what it
        cannot take goes to the spill store (MEDIAGATE_FALLBACK); `hooks`: the
        application's decisions (MEDIAGATE_HOOK_*); `prober`: what finished media are
        (MEDIAGATE_PROBE)."""
        self._catalog = catalog
        self._stores = roles.by_kind
        self._primary = roles.primary
        self._spill = roles.spill
        self._key_prefix = key_prefix
        self._chunk_size = chunk_size
        self._session_ttl = session_ttl
        self._max_upload_size = max_upload_size
        self._max_open_sessions = max_open_sessions_per_user
        self._clock = clock
        self._fallback = fallback
        self._hooks = hooks
        self._assembler = Assembler(catalog, roles, clock, hooks, prober)
        # Who may work on a session when (in this process, or across instances).
        self.locks = locks
        # The running whole-file digest of each session this process hashes;
        # None once it gave up on one (a chunk arrived out of order or again).
        self._digests: dict[str, RunningDigest | None] = {}
        self._finalizing = asyncio.Lock()
        # tus uploads' bytes short of a part; discarded with the session's parts.
        self.tails = TusTails(self._stores, self._spill, key_prefix, fallback=fallback)

    async def initiate(
        self,
        user_id: str,
        *,
        filename: str,
        size: int,
        content_type: str,
        chunk_size: int | None = None,
        sha256: str | None = None,
        protocol: UploadProtocol = UploadProtocol.NATIVE,
        session_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        caller: str | None = None,
    ) -> UploadSession:
        """`metadata` and `caller` (the client's address) are for the pre-create hook."""
        if self._max_upload_size is not None and size > self._max_upload_size:
            raise FileTooLarge(
                f"{size} bytes declared; this server takes files of at most "
                f"{self._max_upload_size} bytes",
                max_size=self._max_upload_size,
            )
        plan = plan_chunks(size, chunk_size or self._chunk_size)
        # Counted in the catalog, so the cap holds across instances; requests
        # racing past it at the same moment can go over it by a few.
        limit = self._max_open_sessions
        if limit is not None and await self._catalog.count_open_sessions(user_id) >= limit:
            raise TooManySessions(
                f"you have {limit} open upload sessions, the most this server allows; "
                "complete or abort some (DELETE /api/v1/media/upload/{session_id})",
                limit=limit,
            )
        app_metadata = None
        if self._hooks is not None:  # the application last: the server's own refusals cost less
            allowed = await self._hooks.pre_create(
                PreCreate(
                    user_id=user_id,
                    filename=filename,
                    size=size,
                    content_type=content_type,
                    metadata=metadata or {},
                    caller=caller,
                    protocol=protocol.value,
                )
            )
            if allowed.max_size is not None and size > allowed.max_size:
                raise FileTooLarge(
                    f"{size} bytes declared; you may upload files of at most "
                    f"{allowed.max_size} bytes",
                    max_size=allowed.max_size,
                )
            filename = allowed.filename or filename
            app_metadata = allowed.app_metadata
        now = self._clock()
        media_id = new_id()
        filename = sanitize_filename(filename)
        session = UploadSession(
            id=session_id or new_id(),
            user_id=user_id,
            filename=filename,
            content_type=content_type,
            size=size,
            chunk_size=plan.chunk_size,
            total_chunks=plan.total_chunks,
            sha256=sha256.lower() if sha256 else None,
            storage=self._primary.kind,
            key=object_key(self._key_prefix, user_id, media_id, filename),
            upload_id="",
            state=SessionState.OPEN,
            created_at=now,
            expires_at=now + self._session_ttl,
            media_id=media_id,
            protocol=protocol,
            app_metadata=app_metadata,
        )
        primary, spill = self._primary, self._spill
        try:
            if isinstance(primary, Staging):
                await primary.check_new_upload(size)
            session.upload_id = await primary.start_upload(new_object(session))
        except StorageUnavailable as error:
            # A primary that stages on its own disk is the spill store itself.
            if isinstance(primary, Staging) or not self._fallback:
                raise
            try:
                await spill.check_new_upload(size)
            except (FileTooLarge, StorageFull) as refused:
                # Not the client's fault: S3 may take the file once it is back.
                log.warning("upload.no_fallback", reason=refused.detail, error=str(error))
                raise error from None
            log.warning("upload.fallback", reason="initiate", error=str(error))
            metrics.fallback("initiate")
            session.storage = spill.kind
            session.upload_id = await spill.start_upload(new_object(session))
        await self._catalog.add_session(session)
        metrics.upload_started(session.storage)
        log.info(
            "upload.initiated",
            session_id=session.id,
            size=size,
            chunks=plan.total_chunks,
            storage=session.storage.value,
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
        if session.protocol is not UploadProtocol.DIRECT or not session.size:
            # A direct upload of known size takes the chunks the client sends through
            # the server when it cannot reach the bucket (docs/api.md, "Direct uploads").
            _check_protocol(session, UploadProtocol.NATIVE)
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
        span = Span(number, session.chunk_offset(number), length)
        # A retry of this chunk takes over from an attempt still arriving
        # (stalled, or its client gone): it need not wait for a timeout.
        async with self.locks.chunk(session_id, number) as lease:
            return await self._receive_chunk(session, span, lease, source, expected)

    async def put_part(
        self,
        session: UploadSession,
        span: Span,
        source: ReadSource,
        *,
        pending: str | None,
    ) -> ChunkReceipt:
        """A part of an offsets upload (core/offsets.py), whose request loaded `session`:
        any size, at the offset it was cut at, recorded as it is (`pending` on a body with
        a digest to match: it counts once the digest matched)."""
        self._check_open(session)
        if session.protocol is UploadProtocol.NATIVE:
            _check_protocol(session, UploadProtocol.TUS)
        if not 0 <= span.number < MAX_PARTS or span.start + span.length > session.size:
            raise ChunkOutOfRange(
                f"part {span.number} ({span.length} bytes at {span.start}) is past the "
                f"upload's {MAX_PARTS} parts or {session.size} bytes",
                total_chunks=session.total_chunks,
            )
        async with self.locks.chunk(session.id, span.number) as lease:
            return await self._receive_chunk(
                session, span, lease, source, ExpectedDigests(), pending=pending, tus=True
            )

    async def _receive_chunk(
        self,
        session: UploadSession,
        span: Span,
        lease: ChunkLease,
        source: ReadSource,
        expected: ExpectedDigests,
        *,
        pending: str | None = None,
        tus: bool = False,
    ) -> ChunkReceipt:
        number = span.number
        digest = self._digests.setdefault(session.id, RunningDigest())
        if session.sha256 is None or (digest is not None and number < digest.next_chunk):
            # A chunk already hashed is being replaced: the running digest no
            # longer describes the file, so complete reads everything back.
            digest = self._digests[session.id] = None
        fed = digest.fork_for(number) if digest is not None else None
        stream = ChunkStream(lease.guard(source), span.length, expected, also_hash=fed)
        try:
            etag, storage = await self._write_chunk(session, span, stream)
        except Exception:
            if stream.failure is not None:
                raise stream.failure from None
            raise
        if digest is not None and fed is not None and self._digests.get(session.id) is digest:
            digest.advance(number, fed, lease.owner)
        chunk = Chunk(
            number=number,
            size=span.length,
            storage=storage,
            etag=etag,
            md5=stream.md5,
            sha256=stream.sha256,
            writer=lease.owner,
            start=span.start if tus else None,
            pending=pending,
        )
        try:
            # Only while this attempt still holds the chunk: the ETag recorded
            # is that of the bytes the store keeps.
            received = await self.locks.record(session.id, chunk, lease)
        except NotFound:
            # Aborted while this chunk was written: remove what the write may
            # have re-created on disk (the staging file is opened with O_CREAT).
            if storage is self._spill.kind:
                await self._spill.abort_upload(session.key, session.local_upload_id)
            raise
        metrics.bytes_received(storage, chunk.size)
        return ChunkReceipt(chunk=chunk, received_chunks=received)

    async def _write_chunk(
        self, session: UploadSession, span: Span, stream: ChunkStream
    ) -> tuple[str, StorageKind]:
        """Into the session's store, or onto local disk if S3 refuses it before its first byte.

        Bytes already sent to a failing S3 are gone from the request, so such a
        chunk is answered 503 (Retry-After); its retry finds the breaker open
        and lands on local disk. With the fallback off, or no room left on local
        disk, S3's 503 is the answer.
        """
        number, offset, length = span
        store = self._stores[session.storage]

        async def put_into(target: BlobStore, upload_id: str) -> str:
            return await target.put_part(
                session.key, upload_id, number=number, offset=offset, length=length, body=stream
            )

        try:
            return await put_into(store, session.upload_id), store.kind
        except StorageUnavailable as error:
            if isinstance(store, Staging) or stream.started or not self._fallback:
                raise
            s3_error = error
        try:
            etag = await put_into(self._spill, session.local_upload_id)
        except StorageFull as refused:
            # No room on local disk (or below its floor): S3 may take the chunk once it
            # is back, so the client is told to retry rather than to give up.
            log.warning(
                "upload.no_spill", session_id=session.id, chunk=number, reason=refused.detail
            )
            raise s3_error from None
        log.warning(
            "upload.chunk_spilled", session_id=session.id, chunk=number, error=str(s3_error)
        )
        metrics.chunk_spilled()
        return etag, self._spill.kind

    async def abort(
        self, user_id: str, session_id: str, *, via: UploadProtocol = UploadProtocol.NATIVE
    ) -> None:
        session = await self._owned_session(user_id, session_id)
        _check_protocol(session, via)
        _check_not_completed(session)
        async with self.locks.session(session_id, Purpose.ABORT):
            session = await self._owned_session(user_id, session_id)
            _check_not_completed(session)  # completed meanwhile
            # Forgotten first: a crash before the uploads are discarded leaves
            # them orphaned, never an open session whose staging file is gone
            # (a chunk sent then would recreate it with holes).
            await self._catalog.delete_session(session_id)
            await self.discard_uploads(session)
        self._digests.pop(session_id, None)
        log.info("upload.aborted", session_id=session_id)

    async def discard_uploads(self, session: UploadSession) -> None:
        """Drop the session's parts from its store and any spilled chunks from disk."""
        store = self._stores[session.storage]
        try:
            await store.abort_upload(session.key, session.upload_id)
        except StorageUnavailable as error:
            # The bucket's abort-incomplete-uploads rule removes the parts later.
            log.warning("upload.abort_deferred", session_id=session.id, error=str(error))
        if not isinstance(store, Staging):
            await self._spill.abort_upload(session.key, session.local_upload_id)
        await self.tails.discard(session)

    async def complete(
        self, user_id: str, session_id: str, *, via: UploadProtocol = UploadProtocol.NATIVE
    ) -> Media:
        session = await self._owned_session(user_id, session_id)
        _check_protocol(session, via)
        if session.state in (SessionState.COMPLETED, SessionState.FINALIZING):
            return await self._media_of(session)
        self._check_open(session)
        # Waits for the chunks in flight; no chunk starts until it is done.
        async with self.locks.session(session_id, Purpose.COMPLETE):
            session = await self._owned_session(user_id, session_id)
            if session.state in (SessionState.COMPLETED, SessionState.FINALIZING):
                return await self._media_of(session)  # another complete won meanwhile
            self._check_open(session)
            try:
                media = await self._assemble(session)
            except Exception as error:
                log.warning("upload.complete_failed", session_id=session_id, error=str(error))
                if not isinstance(error, Problem) or worth_retrying(error):
                    raise
                if isinstance(error, FileDigestMismatch):
                    metrics.upload_failed(session.storage)
                    raise
                if isinstance(error, UploadRefused):
                    self._digests.pop(session_id, None)
                    raise
                raise await self._fail_completing(session_id, error) from error
        self._digests.pop(session_id, None)
        if media.state is MediaState.READY:
            metrics.upload_completed(media.storage)
        else:
            metrics.fallback("finalizing")
        log.info(
            "upload.completed",
            session_id=session_id,
            media_id=media.id,
            size=media.size,
            storage=media.storage.value,
            state=media.state.value,
        )
        return media

    async def _assemble(self, session: UploadSession) -> Media:
        chunks = await self._catalog.chunks(session.id)
        received = {chunk.number for chunk in chunks}
        missing = [n for n in range(session.total_chunks) if n not in received]
        if missing:
            raise MissingChunks(
                f"{len(missing)} of {session.total_chunks} chunks are missing",
                missing_chunks=missing,
            )
        digest = self._digests.get(session.id)
        if digest is not None and not digest.describes(chunks):
            # A chunk it hashed was written again since, by another attempt
            # (on another instance): read the file back instead.
            digest = None
        return await self._assembler.assemble(session, chunks, digest)

    async def finish_finalizing(self) -> int:
        """Try once to move every finalizing session's spilled chunks to S3; how many finished."""
        async with self._finalizing:  # one round at a time moves each part once
            return await self._finish_finalizing()

    async def _finish_finalizing(self) -> int:
        finished = 0
        for session in await self._catalog.sessions_in_state(SessionState.FINALIZING):
            try:
                # Not under a complete still finishing it, nor another instance's round.
                async with self.locks.session(session.id, Purpose.BACKGROUND):
                    media = await self._finish_one(session.id)
            except SessionBusy:
                continue
            except StorageUnavailable:
                break  # S3 is still away; the next round tries again
            except Problem as error:
                # For this session alone: the others still get their turn.
                log.error("upload.finalize_failed", session_id=session.id, error=str(error))
                if worth_retrying(error):
                    # Its status says why it is still finalizing; its kind only:
                    # details of store failures stay in the log.
                    note = f"{error.code}: {error.title}; the server keeps retrying"
                    await self._catalog.note_error(session.id, note)
                else:
                    # The session is open again; its status and its media's info say why.
                    metrics.upload_failed(session.storage)
                continue
            if media is None:
                continue  # finished meanwhile
            metrics.upload_completed(media.storage)
            finished += 1
            log.info("upload.finalized", session_id=session.id, media_id=media.id)
        return finished

    async def _finish_one(self, session_id: str) -> Media | None:
        session = await self._catalog.get_session(session_id)
        if session is None or session.state is not SessionState.FINALIZING:
            return None
        chunks = await self._catalog.chunks(session.id)
        try:
            return await self._assembler.finish(session, chunks, None)
        except Problem as error:
            if not worth_retrying(error) and not isinstance(
                error, (FileDigestMismatch, UploadRefused)
            ):
                await self._give_up(session, error)
            raise

    async def _fail_completing(self, session_id: str, error: Problem) -> Problem:
        """complete met a refusal no retry gets past: if the session went finalizing,
        give it up, its media record gone (this client was never given its id)."""
        session = await self._catalog.get_session(session_id)
        if session is None or session.state is not SessionState.FINALIZING:
            return error  # refused before anything was recorded: still open as it was
        reason = await self._give_up(session, error)
        await self._catalog.delete_media(session.media_id)
        self._digests.pop(session_id, None)
        metrics.upload_failed(session.storage)
        return UploadFailed(reason)

    async def _give_up(self, session: UploadSession, error: Problem) -> str:
        """A finalizing session that cannot be finished: its parts are dropped and it is
        open again with no chunks, `last_error` saying why, its media failed; the reason."""
        reason = (
            f"{error.code}: {error.title}; the upload could not be finished and is open "
            "again: every chunk must be sent again"
        )
        # Dropped before the session reopens: a chunk sent after that must find
        # no stale spill file under the session's id.
        await self.discard_uploads(session)
        upload_id = await self._stores[session.storage].start_upload(new_object(session))
        await self._catalog.replace_upload(session.id, upload_id, error=reason)
        log.error("upload.given_up", session_id=session.id, reason=reason)
        return reason

    async def delete_unfinished(self, media: Media) -> None:
        """Delete a finalizing media: its session and its parts (in S3, spilled, a tus
        tail) go with it. Under the session's claim, as complete and the finalizer
        take it, so never while a round is moving its parts."""
        session = next(
            (
                session
                for session in await self._catalog.sessions_in_state(SessionState.FINALIZING)
                if session.media_id == media.id
            ),
            None,
        )
        if session is not None:
            async with self.locks.session(session.id, Purpose.COMPLETE):
                current = await self._catalog.get_session(session.id)
                if current is not None and current.state is SessionState.FINALIZING:
                    # Forgotten first, as by abort: no round finds it again.
                    await self._catalog.delete_session(session.id)
                    await self.discard_uploads(current)
        # The object too, wherever it may be: a finish that published it may have
        # stopped short of recording the media ready, or finished meanwhile.
        for store in self._stores.values():
            try:
                await store.delete(media.key)
            except StorageUnavailable as error:
                log.warning("upload.stale_object_kept", media_id=media.id, error=str(error))
        await self._catalog.delete_media(media.id)

    async def expire_sessions(self) -> int:
        """Discard the parts of open sessions past their expiry time; how many expired."""
        expired = 0
        for candidate in await self._catalog.expired_sessions(self._clock()):
            try:
                # Not while a request (here or on another instance) works on it:
                # the next sweep decides.
                async with self.locks.session(candidate.id, Purpose.BACKGROUND):
                    session = await self._catalog.get_session(candidate.id)
                    if session is None or session.state is not SessionState.OPEN:
                        continue  # completed, aborted or expired meanwhile
                    await self.discard_uploads(session)
                    await self._catalog.set_session_state(
                        session.id, SessionState.EXPIRED, expected=SessionState.OPEN
                    )
                    if session.last_error is not None:
                        await self._forget_failed_media(session)
            except SessionBusy:
                continue
            metrics.upload_failed(session.storage)
            expired += 1
            log.info("upload.expired", session_id=session.id, user_id=session.user_id)
        open_sessions = await self._catalog.sessions_in_state(SessionState.OPEN)
        still_open = {session.id for session in open_sessions}
        for session_id in list(self._digests):
            # Sessions completed or aborted elsewhere leave their digests here.
            if session_id not in still_open:
                del self._digests[session_id]
        await self._remove_orphaned_staging(open_sessions)
        return expired

    async def _remove_orphaned_staging(self, open_sessions: list[UploadSession]) -> None:
        """Staging files no session refers to: left by a crash in abort or initiate."""
        finalizing = await self._catalog.sessions_in_state(SessionState.FINALIZING)
        in_use = {session.local_upload_id for session in [*open_sessions, *finalizing]}
        spill = self._spill
        # Idle for a while only: initiate makes the file just before the session.
        for upload_id in await spill.staged_uploads(ORPHAN_STAGING_AGE):
            if upload_id not in in_use:
                await spill.abort_upload("", upload_id)
                log.info("upload.orphan_removed", upload_id=upload_id)

    async def _forget_failed_media(self, session: UploadSession) -> None:
        """A failed media whose session expired will never be made: drop its record."""
        media = await self._catalog.get_media(session.media_id)
        if media is not None and media.state is MediaState.FAILED:
            await self._catalog.delete_media(media.id)

    async def owned_session(self, user_id: str, session_id: str) -> UploadSession:
        """The user's session in whatever state (404 for another user's); 410 once expired."""
        session = await self._owned_session(user_id, session_id)
        if session.state is SessionState.EXPIRED or (
            session.state is SessionState.OPEN and session.expires_at <= self._clock()
        ):
            raise SessionExpired(f"the session expired at {session.expires_at.isoformat()}")
        return session

    async def _media_of(self, session: UploadSession) -> Media:
        """A retried complete (its first answer was lost) gets the same media."""
        media = await self._catalog.get_media(session.media_id)
        if media is None:
            raise NotFound("the media of this session has been deleted")
        return media

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


def _check_protocol(session: UploadSession, via: UploadProtocol) -> None:
    """A tus upload's offset is its own (a tail, a deferred length) and one PATCH at a
    time holds it: chunks, a complete or an abort sent around tus would break it."""
    if session.protocol is via:
        return
    if session.protocol is UploadProtocol.IETF:
        raise WrongProtocol(
            f"session {session.id} is an upload of the IETF resumable-upload protocol: "
            f"append with PATCH /api/v1/uploads/{session.id}, or cancel it with DELETE there"
        )
    if session.protocol is UploadProtocol.TUS:
        raise WrongProtocol(
            f"session {session.id} is a tus upload: send its bytes with "
            f"PATCH /api/v1/tus/{session.id} (it completes at its last byte), "
            "or terminate it with DELETE there"
        )
    if session.protocol is UploadProtocol.DIRECT:
        raise WrongProtocol(
            f"session {session.id} is a direct upload: complete or abort it at "
            f"/api/v1/companion/s3/multipart/{session.id}"
        )
    raise WrongProtocol(f"session {session.id} is an upload of the native API")


def _check_not_completed(session: UploadSession) -> None:
    if session.state in (SessionState.COMPLETED, SessionState.FINALIZING):
        raise SessionNotOpen("the session is completed; delete the media instead")
