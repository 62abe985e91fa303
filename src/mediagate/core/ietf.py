"""The IETF draft "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload) on
the offsets engine (core/offsets.py).

An upload resource is an offsets upload of protocol `ietf`; what the draft adds
over the engine is when an upload is complete and what its length is:

- a request with `Upload-Complete: ?1` and a known `Content-Length` sets the
  length to where its body ends (before the body is read, so that the parts are
  cut for that end); one of unknown length (chunked) sets it to where its body
  ended, which completes the upload;
- `Upload-Length` sets it too; every indication must agree with the others and
  with the length recorded (`inconsistent-upload-length` otherwise);
- an upload of known length is complete once its last byte is in, whatever the
  request said: the answer then says `Upload-Complete: ?1` (the draft lets the
  server end an upload), and a later empty `?1` append at that offset gets the
  final answer again (the draft's replay).
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from mediagate.core.chunk_stream import ReadSource
from mediagate.core.library import MediaLibrary
from mediagate.core.offsets import Checksum, OffsetUploads, Progress, Upload
from mediagate.errors import CompletedUpload, InconsistentUploadLength
from mediagate.models import Media, TusUpload, UploadProtocol

log = structlog.get_logger("mediagate.ietf")

IETF = UploadProtocol.IETF


@dataclass(frozen=True)
class Append:
    """What a creation or append request says besides its body."""

    offset: int
    body_length: int | None  # Content-Length; None for a chunked body
    complete: bool  # Upload-Complete
    upload_length: int | None  # Upload-Length
    digest: Checksum | None = None  # Content-Digest


def declared_length(append: Append) -> int | None:
    """The length a request indicates (the draft's two indicators), or None; raises
    InconsistentUploadLength if they differ."""
    by_content = (
        append.offset + append.body_length
        if append.complete and append.body_length is not None
        else None
    )
    if by_content is not None and append.upload_length is not None:
        if by_content != append.upload_length:
            raise InconsistentUploadLength(
                f"Upload-Complete: ?1 with Content-Length {append.body_length} at offset "
                f"{append.offset} makes the length {by_content}, Upload-Length says "
                f"{append.upload_length}"
            )
    return by_content if by_content is not None else append.upload_length


async def _nothing(n: int) -> bytes:
    return b""


class IetfUploads:
    def __init__(self, offsets: OffsetUploads, library: MediaLibrary) -> None:
        self._offsets = offsets
        self._library = library

    @property
    def max_size(self) -> int:
        return self._offsets.max_size

    async def create(
        self,
        user_id: str,
        *,
        append: Append,
        filename: str,
        content_type: str,
        caller: str | None,
        sha256: str | None,
    ) -> Upload:
        """A new upload resource (its body is appended by `append`); an empty complete
        upload is complete at once."""
        length = declared_length(append)
        session = await self._offsets.start(
            user_id,
            TusUpload(session_id=""),
            protocol=IETF,
            length=length,
            filename=filename,
            content_type=content_type,
            caller=caller,
            sha256=sha256,
        )
        return await self._offsets.load(user_id, session.id, IETF)

    async def state(self, user_id: str, upload_id: str) -> Upload:
        return await self._offsets.load(user_id, upload_id, IETF)

    async def append(
        self,
        user_id: str,
        upload_id: str,
        read: ReadSource,
        append: Append,
        *,
        progress: Progress | None = None,
    ) -> Upload:
        """Append a body at `append.offset`; the newest request on an upload takes over
        from one still running. `progress` hears the offset as parts count."""
        length = declared_length(append)
        async with self._offsets.hold(upload_id) as lease:
            upload = await self._offsets.session(user_id, upload_id, IETF)
            if upload.finished:
                if append.complete and append.body_length == 0 and append.offset == upload.offset:
                    return upload  # its final answer was lost: the same again
                raise CompletedUpload(
                    "the upload is complete; it takes no more bytes",
                    offset=upload.offset,
                )
            if length is not None and upload.length is not None and length != upload.length:
                raise InconsistentUploadLength(
                    f"the upload's length is {upload.length}, this request makes it {length}",
                    offset=upload.offset,
                )
            upload = await self._offsets.append(
                user_id,
                upload,
                read,
                lease,
                offset=append.offset,
                body_length=append.body_length,
                checksum=append.digest,
                upload_length=length if upload.length is None else None,
                progress=progress,
            )
            if append.complete and not upload.finished and upload.length is None:
                # A body of unknown length that completes the upload: it ends here.
                upload = await self._offsets.append(
                    user_id,
                    upload,
                    _nothing,
                    lease,
                    offset=upload.offset,
                    body_length=0,
                    checksum=None,
                    upload_length=upload.offset,
                )
            if append.complete and not upload.finished:
                raise InconsistentUploadLength(
                    f"Upload-Complete: ?1, but the body ended at {upload.offset} of the "
                    f"upload's length {upload.length}",
                    offset=upload.offset,
                )
            return upload

    async def media(self, user_id: str, upload: Upload) -> Media:
        """The media a finished upload made."""
        return await self._library.get(user_id, upload.session.media_id)

    async def cancel(self, user_id: str, upload_id: str) -> None:
        """Deactivate the upload resource: an unfinished one's bytes go with it; a
        finished one's media stays (the upload resource is not the file)."""
        await self._offsets.terminate(user_id, upload_id, IETF, keep_media=True)
