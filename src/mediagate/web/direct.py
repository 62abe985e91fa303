"""Companion-compatible S3 multipart signing: Uppy's `@uppy/aws-s3`, unmodified, sends
parts straight to the bucket while mediagate chooses the key, signs and records.

`companionEndpoint` (or v4's `endpoint`) is `{server}/api/v1/companion` for a client
that sends `Authorization: Bearer` (v4's `headers`, the CLI), or the
`companion_endpoint` that `POST /api/v1/companion/grant` answers, a path carrying a
short-lived grant (core/upload_grants.py) for v5+, which sends no headers. Under it:

    POST   s3/multipart                          create: {key, uploadId}
    GET    s3/multipart/{uploadId}?key=          the parts S3 holds: [{PartNumber, Size, ETag}]
    GET    s3/multipart/{uploadId}/{n}?key=      a URL to PUT part n (1-based): {url}
    POST   s3/multipart/{uploadId}/complete?key= {parts} -> {location, key, media_id}
    DELETE s3/multipart/{uploadId}?key=          abort

`uploadId` is the server's session id, never S3's; `key` must be the one create
answered. Core/direct.py holds the rules; docs/api.md "Direct uploads to S3" the contract.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, Field, RootModel

from mediagate import errors
from mediagate.core.chunking import MAX_PARTS
from mediagate.core.chunking import FileTooLarge as PlanTooLarge
from mediagate.core.direct import PART_URL_EXPIRY
from mediagate.core.upload_grants import Grant
from mediagate.errors import (
    BadRequest,
    DirectUploadNotOffered,
    FileTooLarge,
    NotFound,
    Unauthorized,
)
from mediagate.web.auth import authenticated_user
from mediagate.web.host import link_origin
from mediagate.web.keys import GRANTS, SERVICES
from mediagate.web.media import media_info
from mediagate.web.operations import HOOKS, STORAGE, Operations, Problems, Reply, parameter
from mediagate.web.schemas import (
    CONTENT_TYPE_PATTERN,
    Answer,
    MediaInfo,
    Timestamp,
    normalized_media_type,
    parse_json,
)

OPERATIONS = Operations(
    "direct",
    "Companion-compatible S3 multipart signing: parts go straight to the bucket "
    "(Uppy's @uppy/aws-s3, `mediagate upload --direct`)",
)

PREFIX = "/api/v1/companion"
GRANT = PREFIX + "/grant"
# Where Uppy is pointed: with a bearer token, or with a grant in the path.
GRANTED = GRANT + "/{grant}"
CREATE = "/s3/multipart"
UPLOAD = "/s3/multipart/{upload_id}"
# Digits only: `…/{upload_id}/complete` is the complete route's alone (its Allow: POST).
PART = "/s3/multipart/{upload_id}/{part_number:[0-9]+}"
COMPLETE = "/s3/multipart/{upload_id}/complete"
PARAMS = "/s3/params"

UPLOAD_ID = parameter("path", "upload_id", "The upload, as create answered it (`uploadId`)")
KEY = parameter("query", "key", "The key create answered; another one is 404")
UNAVAILABLE: Problems = (errors.DirectUploadNotOffered, errors.DirectUploadUnavailable)
# A session's state and protocol, checked on every call about an upload.
SESSION: Problems = (
    errors.NotFound,
    errors.WrongProtocol,
    errors.SessionNotOpen,
    errors.SessionExpired,
)


def both_ways(
    method: str, path: str, operation_id: str, summary: str, **description: Any
) -> Callable[[Handler], Handler]:
    """Declare the handler below under `PREFIX` (bearer token) and under `GRANTED` (an
    upload grant in the path instead, for Uppy v5+)."""
    parameters = description.pop("parameters", ())
    problems = description.pop("problems", ())
    by_token = OPERATIONS(
        method,
        PREFIX + path,
        operation_id,
        summary,
        parameters=parameters,
        problems=problems,
        **description,
    )
    by_grant = OPERATIONS(
        method,
        GRANTED + path,
        operation_id + "_granted",
        summary,
        parameters=(
            parameter("path", "grant", "The grant `POST /api/v1/companion/grant` answered"),
            *parameters,
        ),
        problems=(errors.Unauthorized, errors.CatalogUnavailable, *problems),
        auth=None,
        **description,
    )

    def declare(handler: Handler) -> Handler:
        return by_grant(by_token(handler))

    return declare


class CreateRequest(BaseModel):
    filename: str = Field(min_length=1, max_length=1024)
    type: str | None = Field(None, max_length=255)
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Not Companion's: a client that says the size gets parts planned like the native
    # API's chunks, of `chunk_size` as the server adjusts it (and may send some of them
    # through the server).
    size: int | None = Field(None, ge=0, strict=True)
    chunk_size: int | None = Field(None, ge=1, strict=True)


class Created(Answer):
    key: str
    uploadId: str = Field(description="The upload's id on this server (not S3's)")
    chunk_size: int = Field(description="Bytes of every part but the last, if size was given")
    total_chunks: int = Field(description="Parts planned, if size was given (else 0)")


class ListedPartAnswer(BaseModel):
    PartNumber: int
    Size: int
    ETag: str


class PartsAnswer(RootModel[list[ListedPartAnswer]]):
    def response(self) -> web.Response:
        return web.json_response(self.model_dump(mode="json"))


class PartUrl(Answer):
    url: str = Field(description="PUT the part's bytes here, straight to S3")
    expires: int = Field(description="Seconds the URL is good for")


class ClaimedPart(BaseModel):
    PartNumber: int = Field(ge=1, le=10000, strict=True)
    ETag: str = Field(min_length=1, max_length=200)


class CompleteRequest(BaseModel):
    parts: list[ClaimedPart] | None = None


class Completed(Answer):
    location: str = Field(description="The media's signed stream link")
    key: str
    media_id: str
    info: MediaInfo


class GrantAnswer(Answer):
    companion_endpoint: str = Field(description="Uppy's `companionEndpoint`, grant included")
    expires_at: Timestamp


def _path_grant(request: web.Request) -> Grant | None:
    """The grant in the path, None for a bearer token's call; 401 if not genuine."""
    text = request.match_info.get("grant")
    if text is None:
        return None
    grant = request.app[GRANTS].read(text)
    if grant is None:
        raise _invalid_grant()
    return grant


def _invalid_grant() -> Unauthorized:
    return Unauthorized(
        "the upload grant in this URL is not valid or has expired: "
        "get a new one (POST /api/v1/companion/grant)",
        reason="invalid_grant",
    )


def user_of(request: web.Request) -> str:
    """The caller of a call that starts an upload: a grant must be unexpired."""
    grant = _path_grant(request)
    if grant is None:
        return authenticated_user(request)
    if not grant.fresh():
        raise _invalid_grant()
    return grant.user_id


@OPERATIONS(
    "POST",
    GRANT,
    "companion_grant",
    "A Companion endpoint with a short-lived upload grant in its path (Uppy v5+)",
    replies=(Reply(201, "The endpoint and when its grant expires", GrantAnswer),),
)
async def grant(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    issued, expires = request.app[GRANTS].issue(user_id)
    endpoint = link_origin(request).joinpath(GRANT.lstrip("/"), issued)
    return GrantAnswer(
        companion_endpoint=str(endpoint), expires_at=datetime.fromtimestamp(expires, UTC)
    ).response(201)


@both_ways(
    "POST",
    CREATE,
    "direct_create",
    "Start a direct upload: the server chooses the key and makes the S3 upload",
    request_model=CreateRequest,
    replies=(Reply(200, "The upload", Created),),
    problems=(
        errors.MalformedBody,
        errors.BodyReadTimeout,
        errors.BodyTooLarge,
        errors.FileTooLarge,
        errors.TooManySessions,
        *HOOKS,
        *UNAVAILABLE,
        *STORAGE,
    ),
)
async def create(request: web.Request) -> web.Response:
    user_id = user_of(request)
    body = await parse_json(request, CreateRequest)
    try:
        session = await request.app[SERVICES].direct.create(
            user_id,
            filename=body.filename,
            content_type=_content_type(body),
            size=body.size,
            chunk_size=body.chunk_size,
            metadata={name: str(value) for name, value in body.metadata.items()},
            caller=request.remote,
        )
    except PlanTooLarge as error:
        raise FileTooLarge(str(error)) from None
    return Created(
        key=session.key,
        uploadId=session.id,
        chunk_size=session.chunk_size if session.size else 0,
        total_chunks=session.total_chunks,
    ).response()


@both_ways(
    "GET",
    PART,
    "direct_sign_part",
    "A URL to PUT one part straight to S3, good for minutes",
    description="`size` and `md5` (base64 Content-MD5), not Companion's, are signed into "
    "the URL: S3 then takes the part only with those headers, and only if its bytes match "
    "the MD5.",
    parameters=(
        UPLOAD_ID,
        parameter(
            "path",
            "part_number",
            "1-based part number",
            {"type": "integer", "minimum": 1, "maximum": MAX_PARTS},
        ),
        KEY,
        parameter("query", "size", "The part's length in bytes", {"type": "integer", "minimum": 0}),
        parameter("query", "md5", "The part's MD5, base64"),
    ),
    replies=(Reply(200, "The part's URL", PartUrl),),
    problems=(
        errors.BadRequest,
        *SESSION,
        errors.ChunkOutOfRange,
        errors.ChunkLengthMismatch,
        *UNAVAILABLE,
    ),
    head=False,
)
async def sign_part(request: web.Request) -> web.Response:
    user_id, session_id = await _caller_and_upload(request)
    text = request.match_info["part_number"]
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= MAX_PARTS):
        raise BadRequest(f"part number {text} is not in 1..{MAX_PARTS}")
    number = int(text) - 1
    length = request.query.get("size")
    if length is not None and not (length.isascii() and length.isdigit() and len(length) < 13):
        raise BadRequest(f"size {length!r} is not a number of bytes")
    url = await request.app[SERVICES].direct.sign_part(
        user_id,
        session_id,
        number,
        length=None if length is None else int(length),
        content_md5=request.query.get("md5"),
    )
    return PartUrl(url=url, expires=PART_URL_EXPIRY).response()


@both_ways(
    "GET",
    UPLOAD,
    "direct_parts",
    "The parts S3 holds of the upload (to resume)",
    parameters=(UPLOAD_ID, KEY),
    replies=(Reply(200, "The parts, by number", PartsAnswer),),
    problems=(*SESSION, *UNAVAILABLE, *STORAGE),
    head=False,
)
async def list_parts(request: web.Request) -> web.Response:
    user_id, session_id = await _caller_and_upload(request)
    parts = await request.app[SERVICES].direct.parts(user_id, session_id)
    return PartsAnswer(
        [ListedPartAnswer(PartNumber=p.number + 1, Size=p.size, ETag=p.etag) for p in parts]
    ).response()


@both_ways(
    "POST",
    COMPLETE,
    "direct_complete",
    "List the parts in S3, check them and make the media",
    parameters=(UPLOAD_ID, KEY),
    request_model=CompleteRequest,
    replies=(Reply(200, "The media", Completed),),
    problems=(
        errors.MalformedBody,
        errors.BodyReadTimeout,
        errors.BodyTooLarge,
        *SESSION,
        errors.MissingChunks,
        errors.ChunkLengthMismatch,
        errors.FileTooLarge,
        errors.ChunkInFlight,
        errors.UploadFailed,
        *HOOKS,
        *UNAVAILABLE,
        *STORAGE,
    ),
)
async def complete(request: web.Request) -> web.Response:
    user_id, session_id = await _caller_and_upload(request)
    body = await parse_json(request, CompleteRequest) if request.can_read_body else None
    claimed = None
    if body is not None and body.parts is not None:
        claimed = [(part.PartNumber - 1, part.ETag) for part in body.parts]
    origin = link_origin(request)
    media = await request.app[SERVICES].direct.complete(user_id, session_id, claimed)
    info = media_info(request, media, origin)
    return Completed(
        location=info.stream_url, key=media.key, media_id=media.id, info=info
    ).response()


@both_ways(
    "DELETE",
    UPLOAD,
    "direct_abort",
    "Abort the upload: S3 drops its parts",
    parameters=(UPLOAD_ID, KEY),
    replies=(Reply(204, "Aborted"),),
    problems=(*SESSION, *UNAVAILABLE),
)
async def abort(request: web.Request) -> web.Response:
    user_id, session_id = await _caller_and_upload(request)
    await request.app[SERVICES].direct.abort(user_id, session_id)
    return web.Response(status=204)


@both_ways(
    "GET",
    PARAMS,
    "direct_single_request",
    "Not offered: every direct upload is a multipart one (501)",
    replies=(),
    problems=(errors.DirectUploadNotOffered,),
    head=False,
)
async def single_request(request: web.Request) -> web.Response:
    user_of(request)
    raise DirectUploadNotOffered(
        "single-request uploads (a presigned POST) are not offered: every direct upload "
        "is a multipart one, whose end the server hears of, checks and records (Uppy: "
        "shouldUseMultipart: true)"
    )


async def _caller_and_upload(request: web.Request) -> tuple[str, str]:
    """The caller and the session of `upload_id`, if `key` names its object: a client's
    key is never used, only compared. An expired grant still opens an upload it could
    have started (core/upload_grants.py): Uppy keeps its endpoint to the end."""
    grant = _path_grant(request)
    user_id = authenticated_user(request) if grant is None else grant.user_id
    session_id = request.match_info["upload_id"]
    session = await request.app[SERVICES].engine.owned_session(user_id, session_id)
    if grant is not None and not grant.fresh():
        if not grant.could_have_started(session.created_at):
            raise _invalid_grant()
    if request.query.get("key", session.key) != session.key:
        raise NotFound(f"no upload {session_id} with that key")
    return user_id, session_id


def _content_type(body: CreateRequest) -> str:
    """The type Uppy sends (the browser's guess, maybe empty), else one from the name."""
    if body.type and re.fullmatch(CONTENT_TYPE_PATTERN, body.type):
        return normalized_media_type(body.type)
    guessed, _ = mimetypes.guess_type(body.filename, strict=False)
    return guessed or "application/octet-stream"
