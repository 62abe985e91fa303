"""Request bodies (validated with pydantic) and the JSON shapes of answers."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import re
from datetime import datetime
from typing import Annotated, Literal, TypeVar

from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)

from mediagate.core.engine import SessionStatus
from mediagate.errors import BadRequest, BodyReadTimeout
from mediagate.models import (
    Media,
    MediaFacts,
    MediaState,
    SessionState,
    StorageKind,
    UploadSession,
)
from mediagate.web.keys import SETTINGS
from mediagate.web.operations import MAX_UPLOAD_SIZE

Model = TypeVar("Model", bound=BaseModel)
# The states of a session whose media exists (ready, or finalizing).
MADE = (SessionState.COMPLETED, SessionState.FINALIZING)

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
    size: int = Field(ge=0, strict=True, json_schema_extra={"maximum": MAX_UPLOAD_SIZE})
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


# --- Answers -----------------------------------------------------------------------------
# The JSON bodies the API sends, as models: the handlers build them and the OpenAPI
# document (web/openapi.py) describes them, so the two cannot disagree.

# Sent as Python's isoformat (`2026-12-01T12:00:00+00:00`), as it always was.
Timestamp = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class Answer(BaseModel):
    def response(self, status: int = 200) -> web.Response:
        return web.json_response(self.model_dump(mode="json"), status=status)


class SessionCreated(Answer):
    session_id: str
    chunk_size: int = Field(description="Bytes in every chunk but the last (the server's choice)")
    total_chunks: int
    expires_at: Timestamp
    storage: StorageKind

    @classmethod
    def of(cls, session: UploadSession) -> SessionCreated:
        return cls(
            session_id=session.id,
            chunk_size=session.chunk_size,
            total_chunks=session.total_chunks,
            expires_at=session.expires_at,
            storage=session.storage,
        )


class ChunkReceived(Answer):
    chunk_number: int
    size: int
    received_chunks: int = Field(description="How many chunks of the session are stored")


class SessionStatusAnswer(Answer):
    session_id: str
    state: SessionState
    filename: str
    size: int
    chunk_size: int
    total_chunks: int
    received: list[int] = Field(description="The numbers of the chunks stored, ascending")
    bytes_received: int
    storage: StorageKind
    expires_at: Timestamp
    last_error: str | None = Field(
        description="Why the upload went back to open, or is stuck finalizing (else null)"
    )
    media_id: str | None = Field(
        description="The media it made, once completed or finalizing (else null)"
    )

    @classmethod
    def of(cls, status: SessionStatus) -> SessionStatusAnswer:
        session = status.session
        return cls(
            session_id=session.id,
            state=session.state,
            filename=session.filename,
            size=session.size,
            chunk_size=session.chunk_size,
            total_chunks=session.total_chunks,
            received=status.received,
            bytes_received=status.bytes_received,
            storage=session.storage,
            expires_at=session.expires_at,
            last_error=session.last_error,
            media_id=session.media_id if session.state in MADE else None,
        )


class MediaInfo(Answer):
    media_id: str
    user_id: str
    filename: str
    content_type: str
    size: int
    checksum: str | None = Field(description="`sha256:<hex>` if declared, else `etag:<value>`")
    storage: StorageKind
    state: MediaState
    error: str | None = Field(description="Why a `failed` (or stuck `finalizing`) media is so")
    created_at: Timestamp
    stream_url: str = Field(description="Absolute, signed link a player opens without headers")
    app_metadata: JsonValue = Field(
        description="What the application's pre-create hook attached to the upload "
        "(any JSON value), else null"
    )
    media: MediaFacts | None = Field(
        None,
        description="What probing found (docs/media.md); null until probed, or if it found "
        "no audio or video (then `probe_error` says why)",
    )
    probe_error: str | None = Field(None, description="Why probing found nothing (else null)")
    poster_url: str | None = Field(
        None, description="Absolute, signed link to a JPEG frame of a video (else null)"
    )

    @classmethod
    def of(cls, media: Media, stream_url: str, poster_url: str | None = None) -> MediaInfo:
        return cls(
            media_id=media.id,
            user_id=media.user_id,
            filename=media.filename,
            content_type=media.content_type,
            size=media.size,
            checksum=media.checksum,
            storage=media.storage,
            state=media.state,
            error=media.error,
            created_at=media.created_at,
            stream_url=stream_url,
            app_metadata=None if media.app_metadata is None else json.loads(media.app_metadata),
            media=media.media_facts(),
            probe_error=media.probe_error,
            poster_url=poster_url,
        )


class MediaCreated(Answer):
    media_id: str
    stream_url: str
    info: MediaInfo


class MediaFinalizing(MediaCreated):
    """Every chunk is safe; some wait on local disk until S3 is back."""

    state: Literal[MediaState.FINALIZING]


class MediaPage(Answer):
    items: list[MediaInfo] = Field(description="Newest first")
    next_cursor: str | None = Field(description="Pass back as `cursor` for the next page")


class ProblemField(BaseModel):
    field: str
    message: str


class ProblemDetails(BaseModel):
    """An error answer, `application/problem+json` (RFC 9457)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="`https://mediagate.dev/problems/<code>`")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    request_id: str | None = Field(None, description="Also in the X-Request-ID header")
    reason: str | None = Field(
        None, description="401 unauthorized: missing, malformed, bad-signature or expired"
    )
    errors: list[ProblemField] | None = Field(None, description="400: the fields refused")
    missing_chunks: list[int] | None = Field(None, description="409 missing-chunks")
    total_chunks: int | None = Field(None, description="400 chunk-out-of-range")
    expected_size: int | None = Field(None, description="400 chunk-length-mismatch")
    max_size: int | None = Field(None, description="413 file-too-large")
    limit: int | None = Field(None, description="429 too-many-sessions")
    offset: int | None = Field(None, description="409 offset-mismatch: the upload's offset")
