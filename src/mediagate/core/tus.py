"""tus 1.0 uploads: the tus rules on the offsets engine (core/offsets.py).

A tus upload is an offsets upload whose record also holds what tus adds: the
metadata to echo, and concatenation (a partial, or a final made of partials).
The bytes, the offset, the tail, a deferred length and the checksum's pending
parts are the engine's; this module decides what tus allows of them.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from mediagate.core.chunk_stream import ReadSource
from mediagate.core.library import MediaLibrary
from mediagate.core.offsets import Checksum, OffsetUploads, Upload
from mediagate.errors import (
    BadRequest,
    FileTooLarge,
    Forbidden,
    NotFound,
    PartialTaken,
    Problem,
    UploadIncomplete,
)
from mediagate.models import (
    Media,
    MediaState,
    SessionState,
    TusUpload,
    UploadProtocol,
    UploadSession,
)

__all__ = ["CHECKSUM_ALGORITHMS", "Checksum", "TusState", "TusUploads", "final_partial_ids"]

log = structlog.get_logger("mediagate.tus")

PARTIAL = "partial"
FINAL = "final"
TUS = UploadProtocol.TUS
CHECKSUM_ALGORITHMS = {"sha1": hashlib.sha1, "md5": hashlib.md5, "sha256": hashlib.sha256}


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


class TusUploads:
    def __init__(self, offsets: OffsetUploads, library: MediaLibrary) -> None:
        self._offsets = offsets
        self._library = library

    @property
    def max_size(self) -> int:
        return self._offsets.max_size

    @property
    def deferred_max_size(self) -> int:
        return self._offsets.deferred_max_size

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
        record = TusUpload(session_id="", metadata=metadata, concat=PARTIAL if partial else None)
        session = await self._offsets.start(
            user_id,
            record,
            protocol=TUS,
            length=length,
            filename=filename,
            content_type=content_type,
            fields=fields,
            caller=caller,
        )
        return await self.state(user_id, session.id)

    async def state(self, user_id: str, upload_id: str) -> TusState:
        return await self._state(user_id, await self._offsets.load(user_id, upload_id, TUS))

    async def _state(self, user_id: str, upload: Upload) -> TusState:
        session, record = upload.session, upload.record
        if record.part_of is not None and session.state is SessionState.COMPLETED:
            # A partial a final waits for: its completion may be the last it needs.
            await self._finish_final(user_id, record.part_of)
        elif _is_final(record) and session.state is SessionState.OPEN:
            # Also the way a final whose partials finished during a crash gets made.
            if await self._finish_final(user_id, session.id):
                return await self.state(user_id, session.id)
            return TusState(session, record, await self._finished_prefix(user_id, record))
        return TusState(session, record, upload.offset)

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
        async with self._offsets.hold(upload_id) as lease:
            upload = await self._offsets.session(user_id, upload_id, TUS)
            if _is_final(upload.record):
                raise Forbidden("a final upload is made by concatenation; it takes no PATCH")
            upload = await self._offsets.append(
                user_id,
                upload,
                read,
                lease,
                offset=offset,
                body_length=body_length,
                checksum=checksum,
                upload_length=upload_length,
            )
            return await self._state(user_id, upload)

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
        session = await self._offsets.start_joined(
            user_id,
            TusUpload(session_id="", metadata=metadata, concat=concat),
            protocol=TUS,
            size=size,
            filename=filename,
            content_type=content_type,
        )
        try:
            if not await self._offsets.take_partials(session.id, partial_ids):
                raise PartialTaken("a partial upload named is already part of another final upload")
            async with self._offsets.exclusive(FINAL, session.id) as alone:
                record = await self._offsets.record(user_id, session.id, TUS)
                media = await self._ready_partials(user_id, record) if alone else None
                if media is not None:
                    await self._offsets.join(user_id, session, media)
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
        upload = await self._offsets.session(user_id, upload_id, TUS)
        session, record = upload.session, upload.record
        if record.concat != PARTIAL:
            raise BadRequest(f"upload {upload_id} is not a partial upload")
        if session.state is SessionState.OPEN:
            if record.length_deferred:
                raise BadRequest(
                    f"partial upload {upload_id} has no Upload-Length yet: a final needs its length"
                )
            return session.size
        if session.state is SessionState.EXPIRED:
            raise NotFound(f"partial upload {upload_id} has expired")
        if not await self._offsets.media(session.media_id) is not None:
            raise PartialTaken(
                f"partial upload {upload_id} is part of a final upload already (or was deleted)"
            )
        return session.size

    async def _ready_partials(self, user_id: str, final: TusUpload) -> list[Media] | None:
        """The media of a final's partials, in order, if every one is finished and ready."""
        media = []
        for upload_id in final_partial_ids(final.concat or ""):
            session = (await self._offsets.session(user_id, upload_id, TUS)).session
            item = await self._offsets.media(session.media_id)
            if item is None or item.state is not MediaState.READY:
                return None
            media.append(item)
        return media

    async def _finished_prefix(self, user_id: str, final: TusUpload) -> int:
        """A waiting final's offset: its partials finished in order from the first."""
        offset = 0
        for upload_id in final_partial_ids(final.concat or ""):
            session = (await self._offsets.session(user_id, upload_id, TUS)).session
            if session.state is not SessionState.COMPLETED:
                break
            offset += session.size
        return offset

    async def _finish_final(self, user_id: str, final_id: str) -> bool:
        """Make a waiting final if all its partials are ready; whether it was made here.
        A failure leaves it waiting (the next HEAD on it tries again): the partial whose
        completion tried it is complete all the same."""
        try:
            session = (await self._offsets.session(user_id, final_id, TUS)).session
            if session.state is not SessionState.OPEN:
                return False
            async with self._offsets.exclusive(FINAL, final_id) as alone:
                if not alone:
                    return False  # being made, here or on another instance
                upload = await self._offsets.session(user_id, final_id, TUS)
                session = upload.session
                media = await self._ready_partials(user_id, upload.record)
                if session.state is not SessionState.OPEN or media is None:
                    return False
                await self._offsets.join(user_id, session, media)
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

    async def _drop_final(self, user_id: str, session_id: str) -> None:
        try:
            await self._offsets.abort(user_id, session_id, TUS)
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
        await self._offsets.terminate(user_id, upload_id, TUS)


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
