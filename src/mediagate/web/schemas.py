"""Request bodies (validated with pydantic) and the JSON shapes of answers."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import re
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from mediagate.core.engine import SessionStatus
from mediagate.core.errors import BadRequest, BodyReadTimeout
from mediagate.core.models import Media, UploadSession
from mediagate.web.keys import SETTINGS

Model = TypeVar("Model", bound=BaseModel)

# A media type (RFC 6838 names) with optional parameters (RFC 9110 §8.3.1):
# `text/plain; charset=utf-8`. Printable ASCII only: it goes into headers.
_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*"
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
_PARAMETER = rf"[ \t]*;[ \t]*({_TOKEN})=({_TOKEN}|{_QUOTED})"
CONTENT_TYPE_PATTERN = rf"^{_NAME}/{_NAME}(?:{_PARAMETER})*$"


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
            return normalized_media_type(self.content_type)
        guessed, _ = mimetypes.guess_type(self.filename, strict=False)
        return guessed or "application/octet-stream"


def normalized_media_type(value: str) -> str:
    """Type, subtype and parameter names lower-cased (they are case-insensitive),
    parameter values kept as sent: `Text/Plain;Charset=UTF-8` -> `text/plain; charset=UTF-8`."""
    media_type = value.partition(";")[0]
    parameters = re.findall(_PARAMETER, value[len(media_type) :])
    return "; ".join([media_type.strip().lower()] + [f"{k.lower()}={v}" for k, v in parameters])


async def parse_json(request: web.Request, model: type[Model]) -> Model:
    # A JSON body is small (MAX_JSON_BODY): one body read timeout covers all of it.
    seconds = request.app[SETTINGS].body_read_timeout
    try:
        async with asyncio.timeout(seconds):
            raw = await request.json()
    except TimeoutError:
        raise BodyReadTimeout(f"the body did not arrive within {seconds:g} s") from None
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
