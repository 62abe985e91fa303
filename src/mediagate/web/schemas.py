"""Request bodies (validated with pydantic) and the JSON shapes of answers."""

from __future__ import annotations

import json
import mimetypes
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from mediagate.core.engine import SessionStatus
from mediagate.core.errors import BadRequest
from mediagate.core.models import Media, UploadSession

Model = TypeVar("Model", bound=BaseModel)

CONTENT_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$"


class InitiateRequest(BaseModel):
    filename: str = Field(min_length=1, max_length=1024)
    # Strict: `true`, `10.0` or `"10"` is a client bug to report, not a size to guess.
    size: int = Field(ge=0, strict=True)
    content_type: str | None = Field(None, max_length=255, pattern=CONTENT_TYPE_PATTERN)
    chunk_size: int | None = Field(None, ge=1, strict=True)
    sha256: str | None = Field(None, pattern=r"^[0-9A-Fa-f]{64}$")

    def resolved_content_type(self) -> str:
        """The declared type, else one guessed from the extension (players check it)."""
        if self.content_type:
            return self.content_type.lower()
        guessed, _ = mimetypes.guess_type(self.filename, strict=False)
        return guessed or "application/octet-stream"


async def parse_json(request: web.Request, model: type[Model]) -> Model:
    try:
        raw = await request.json()
    except json.JSONDecodeError as error:
        raise BadRequest(f"the body is not JSON: {error}") from None
    except UnicodeDecodeError:
        raise BadRequest("the body is not JSON: it is not valid UTF-8") from None
    except LookupError:
        raise BadRequest(f"the body's charset {request.charset!r} is unknown") from None
    except RecursionError:
        raise BadRequest("the body is not JSON this server takes: it nests too deep") from None
    except ValueError as error:  # e.g. a number of more than 4300 digits
        raise BadRequest(f"the body is not JSON this server takes: {error}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        errors = [
            {"field": ".".join(str(part) for part in problem["loc"]), "message": problem["msg"]}
            for problem in error.errors()
        ]
        raise BadRequest("the body does not match the expected fields", errors=errors) from None


def session_created(session: UploadSession) -> dict[str, Any]:
    return {
        "session_id": session.id,
        "chunk_size": session.chunk_size,
        "total_chunks": session.total_chunks,
        "expires_at": session.expires_at.isoformat(),
        "storage": session.storage.value,
    }


def session_status(status: SessionStatus) -> dict[str, Any]:
    session = status.session
    return {
        "session_id": session.id,
        "state": session.state.value,
        "filename": session.filename,
        "size": session.size,
        "chunk_size": session.chunk_size,
        "total_chunks": session.total_chunks,
        "received": status.received,
        "bytes_received": status.bytes_received,
        "storage": session.storage.value,
        "expires_at": session.expires_at.isoformat(),
        "last_error": session.last_error,
    }


def media_info(media: Media, stream_url: str) -> dict[str, Any]:
    return {
        "media_id": media.id,
        "user_id": media.user_id,
        "filename": media.filename,
        "content_type": media.content_type,
        "size": media.size,
        "checksum": media.checksum,
        "storage": media.storage.value,
        "state": media.state.value,
        "error": media.error,
        "created_at": media.created_at.isoformat(),
        "stream_url": stream_url,
    }
