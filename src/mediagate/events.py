"""Events the application can trust: what a state change of an upload or a media
reports, as the body of a Standard Webhooks message.

The catalog writes an event in the transaction of the change it reports, one row
per endpoint (the outbox, docs/integration.md "Events"); these pure functions
build what it writes. A leaf: it knows the models, nothing else.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mediagate.models import Media, UploadSession


class EventType(StrEnum):
    UPLOAD_CREATED = "upload.created"
    UPLOAD_EXPIRED = "upload.expired"
    MEDIA_READY = "media.ready"
    MEDIA_FAILED = "media.failed"
    MEDIA_DELETED = "media.deleted"
    MEDIA_MIGRATED = "media.migrated"


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    # Not acknowledged within MEDIAGATE_WEBHOOK_RETRY_FOR: kept for `mediagate events`.
    DEAD = "dead"
    # The endpoint answered 410: it wants no more tries of this event.
    GONE = "gone"


# A media's checksum when it is the SHA-256 of its bytes (the catalog keeps others too).
SHA256 = "sha256:"
# The protocol of a media that no upload made (an imported file).
IMPORTED = "import"


@dataclass(frozen=True)
class Event:
    """One event, before it is written once per endpoint."""

    id: str  # the webhook-id, the same at every endpoint and every attempt
    type: EventType
    media_id: str
    created_at: datetime
    body: str  # the JSON body, fixed when the change is committed


def new_event_id() -> str:
    return f"msg_{secrets.token_hex(12)}"


def session_event(type: EventType, session: UploadSession, now: datetime) -> Event:
    """An event about an upload session (created, expired)."""
    data = {
        "media_id": session.media_id,
        "user_id": session.user_id,
        "filename": session.filename,
        "size": session.size,
        "content_type": session.content_type,
        "storage": session.storage.value,
        "upload_id": session.id,
        "protocol": session.protocol.value,
    }
    if session.sha256 is not None:
        data["sha256"] = session.sha256
    data["app_metadata"] = _app_metadata(session.app_metadata)
    return _event(type, session.media_id, data, now)


def media_event(
    type: EventType,
    media: Media,
    session: UploadSession | None,
    now: datetime,
    *,
    reason: str | None = None,
) -> Event:
    """An event about a media; `session` is the upload that made it (None if imported)."""
    data: dict[str, Any] = {
        "media_id": media.id,
        "user_id": media.user_id,
        "filename": media.filename,
        "size": media.size,
        "content_type": media.content_type,
        "storage": media.storage.value,
        "upload_id": session.id if session else None,
        "protocol": session.protocol.value if session else IMPORTED,
    }
    if media.checksum is not None and media.checksum.startswith(SHA256):
        data["sha256"] = media.checksum.removeprefix(SHA256)
    if reason is not None:
        data["reason"] = reason
    data["app_metadata"] = _app_metadata(media.app_metadata)
    # What probing found before the media became ready (docs/media.md), or null.
    data["media"] = None if media.facts is None else json.loads(media.facts)
    data["probe_error"] = media.probe_error
    return _event(type, media.id, data, now)


def _app_metadata(kept: str | None) -> Any:
    """What the application attached to the upload (its pre-create hook), or None."""
    return None if kept is None else json.loads(kept)


def _event(type: EventType, media_id: str, data: dict[str, Any], now: datetime) -> Event:
    stamp = now.astimezone(UTC)
    body = {"type": type.value, "timestamp": _iso(stamp), "data": data}
    return Event(new_event_id(), type, media_id, stamp, json.dumps(body, separators=(",", ":")))


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Delivery:
    """One event to send to one endpoint (a row of the outbox)."""

    seq: int  # the order of the changes: a media's deliveries go out by it
    id: str
    endpoint: str
    media_id: str
    type: str
    body: str
    state: DeliveryState
    attempts: int
    created_at: datetime
    last_error: str | None
