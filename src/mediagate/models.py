"""Records the catalog keeps: upload sessions, their chunks, and media."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel


class StorageKind(StrEnum):
    S3 = "s3"
    LOCAL = "local"


class SessionState(StrEnum):
    OPEN = "open"
    # Every chunk is safe, some of them on local disk waiting for S3 to be back.
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"


class MediaState(StrEnum):
    READY = "ready"
    FINALIZING = "finalizing"
    # Its upload failed after complete answered (e.g. the file's SHA-256 on
    # read-back); `error` says why, and the session is open again for a new try.
    FAILED = "failed"


class UploadProtocol(StrEnum):
    """Which API a session's bytes come through: the one that sends its chunks and ends it."""

    NATIVE = "native"
    TUS = "tus"
    # Parts PUT straight to S3 at URLs the server signs (web/direct.py); with a known
    # size the native API's chunks may fill in the parts the client could not PUT.
    DIRECT = "direct"
    IETF = "ietf"  # the IETF draft "Resumable Uploads for HTTP"


class UploadSession(BaseModel):
    id: str
    user_id: str
    filename: str
    content_type: str
    size: int
    chunk_size: int
    total_chunks: int
    sha256: str | None
    storage: StorageKind
    key: str
    upload_id: str
    state: SessionState
    created_at: datetime
    expires_at: datetime
    media_id: str
    # Why the last complete failed after it was answered (or is still failing,
    # in the background); cleared when a complete starts again.
    last_error: str | None = None
    protocol: UploadProtocol = UploadProtocol.NATIVE
    # What the application's pre-create hook attached to the upload, as JSON text
    # (docs/integration.md, "Hooks"); kept on its media.
    app_metadata: str | None = None

    def chunk_length(self, number: int) -> int:
        """Every chunk is chunk_size bytes but the last, which holds the rest."""
        if number < self.total_chunks - 1:
            return self.chunk_size
        return self.size - self.chunk_size * (self.total_chunks - 1)

    def chunk_offset(self, number: int) -> int:
        return number * self.chunk_size

    @property
    def local_upload_id(self) -> str:
        """The local store's upload holding this session's chunks on disk: the
        session's own upload when it is local, else the one S3's failures spill into."""
        return self.upload_id if self.storage is StorageKind.LOCAL else self.id


class Chunk(BaseModel):
    number: int
    size: int
    # Where the bytes are: the session's store, or local disk if S3 failed.
    storage: StorageKind
    etag: str
    md5: str | None = None
    sha256: str | None = None
    # The attempt that wrote the bytes (its chunk lease's owner); None when
    # no attempt wrote them (a spilled part moved to S3, a copied part).
    writer: str | None = None
    # The file offset of its first byte: a tus upload's parts differ in size;
    # None for the native API's chunks, at `number * chunk_size`.
    start: int | None = None
    # The checksummed tus PATCH that wrote it, until its checksum matched: a
    # pending chunk does not count (docs/architecture.md, "Crash safety").
    pending: str | None = None

    def offset(self, chunk_size: int) -> int:
        return self.number * chunk_size if self.start is None else self.start


class Media(BaseModel):
    id: str
    user_id: str
    filename: str
    content_type: str
    size: int
    checksum: str | None
    storage: StorageKind
    key: str
    created_at: datetime
    state: MediaState = MediaState.READY
    error: str | None = None
    app_metadata: str | None = None  # the upload's, as JSON text
    # What probing found (docs/media.md): `MediaFacts` as JSON text, or why it found
    # nothing; both None until the media is probed. The poster's key in its store.
    facts: str | None = None
    probe_error: str | None = None
    poster_key: str | None = None

    @property
    def probed(self) -> bool:
        return self.facts is not None or self.probe_error is not None

    def media_facts(self) -> MediaFacts | None:
        return None if self.facts is None else MediaFacts.model_validate_json(self.facts)


class MediaKind(StrEnum):
    VIDEO = "video"
    AUDIO = "audio"
    IMAGE = "image"


class VideoFacts(BaseModel):
    codec: str
    width: int
    height: int
    fps: float | None
    rotation: int = 0  # degrees clockwise a player turns the picture


class AudioFacts(BaseModel):
    codec: str
    channels: int | None
    sample_rate: int | None


class MediaFacts(BaseModel):
    """What FFmpeg's probing says a media is (core/probe.py)."""

    kind: MediaKind
    duration_s: float | None
    container: str
    bitrate: int | None
    video: VideoFacts | None
    audio: AudioFacts | None
    # An MP4/MOV whose index (moov) comes before its data: a player starts and seeks at
    # once. None for other containers.
    faststart: bool | None


class TusUpload(BaseModel):
    """What a tus upload adds to its session: what the client sent at creation."""

    session_id: str
    # The Upload-Metadata header as sent, echoed by HEAD.
    metadata: str = ""
    # Upload-Defer-Length: the session's size is a placeholder until a PATCH sets it.
    length_deferred: bool = False
    # Upload-Concat as sent: "partial", or "final;{url} {url} …".
    concat: str | None = None
    # A partial's final upload, once one took it (`Catalog.take_partials`).
    part_of: str | None = None
    # The bytes after the last part, too few for a part yet: `tail_size` bytes
    # from `tail_start`, kept in `tail_storage` (an object in the bucket, or the
    # spill file when S3 failed). They count only while the parts end at `tail_start`.
    tail_start: int = 0
    tail_size: int = 0
    tail_storage: StorageKind = StorageKind.S3
