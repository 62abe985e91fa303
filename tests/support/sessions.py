"""Upload sessions as the catalog holds them, for tests that write the catalog directly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from mediagate.models import SessionState, StorageKind, UploadSession


def upload_session(session_id: str | None = None, **fields: Any) -> UploadSession:
    """An open S3 session of alice's, 20 bytes in chunks of 10, an hour left; `fields`
    change any of that."""
    now = datetime.now(UTC)
    defaults: dict[str, Any] = {
        "id": session_id or str(uuid.uuid4()),
        "user_id": "alice",
        "filename": "a.bin",
        "content_type": "application/octet-stream",
        "size": 20,
        "chunk_size": 10,
        "total_chunks": 2,
        "sha256": None,
        "storage": StorageKind.S3,
        "key": "media/alice/m/a.bin",
        "upload_id": "u",
        "state": SessionState.OPEN,
        "created_at": now,
        "expires_at": now + timedelta(hours=1),
        "media_id": str(uuid.uuid4()),
    }
    return UploadSession(**{**defaults, **fields})
