"""What the server answers, as typed values (parsed from the native API's JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Media:
    """An uploaded file, as `GET /api/v1/media/info/{id}` describes it."""

    media_id: str
    user_id: str
    filename: str
    content_type: str
    size: int
    checksum: str | None
    storage: str
    state: str
    created_at: datetime
    stream_url: str
    app_metadata: Any = None  # what the application's pre-create hook attached
    # What the server's probing found (duration, container, codecs, picture), or None.
    media: dict[str, Any] | None = None
    probe_error: str | None = None
    poster_url: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Media:
        return cls(
            media_id=data["media_id"],
            user_id=data["user_id"],
            filename=data["filename"],
            content_type=data["content_type"],
            size=data["size"],
            checksum=data.get("checksum"),
            storage=data["storage"],
            state=data.get("state", "ready"),
            created_at=datetime.fromisoformat(data["created_at"]),
            stream_url=data["stream_url"],
            app_metadata=data.get("app_metadata"),
            media=data.get("media"),
            probe_error=data.get("probe_error"),
            poster_url=data.get("poster_url"),
        )

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class SessionStatus:
    """An upload session, as `GET /api/v1/media/upload/{id}` describes it."""

    session_id: str
    state: str
    size: int
    chunk_size: int
    total_chunks: int
    received: frozenset[int]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionStatus:
        return cls(
            session_id=data["session_id"],
            state=data["state"],
            size=data["size"],
            chunk_size=data["chunk_size"],
            total_chunks=data["total_chunks"],
            received=frozenset(data.get("received", ())),
        )


@dataclass(frozen=True)
class UploadProgress:
    """Where one upload stands; handed to the progress callback as bytes stream out.

    `sent` counts bytes already on the server (`resumed` of them from an
    earlier run) plus those of chunks in flight; a chunk that fails and is
    sent again is counted again from zero.
    """

    filename: str
    total: int
    sent: int
    resumed: int


@dataclass(frozen=True)
class UploadResult:
    """A finished upload: the media, and how much of it this run had to send."""

    media: Media
    session_id: str
    sent_chunks: int
    resumed_chunks: int
    finalizing: bool
    # Of `sent_chunks`, those PUT straight into the bucket (`direct`).
    direct_chunks: int = 0
    # `direct`, `relay` or `mixed` (see `upload.upload_path`), and why chunks went
    # through the server when some did.
    path: str = "relay"
    relay_reason: str | None = None
