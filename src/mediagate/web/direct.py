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
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, RootModel

from mediagate import errors
from mediagate.core.chunking import MAX_PARTS
from mediagate.core.chunking import FileTooLarge as PlanTooLarge
from mediagate.core.direct import PART_URL_EXPIRY
from mediagate.errors import (
    BadRequest,
    DirectUploadNotOffered,
    FileTooLarge,
    NotFound,
    Unauthorized,
)
from mediagate.web.auth import authenticated_user
from mediagate.web.host import link_origin
from mediagate.web.keys import DIRECT, ENGINE, GRANTS
from mediagate.web.media import stream_url
from mediagate.web.openapi import BODY_TOO_LARGE, HOOKS, MALFORMED_BODY, STORAGE, Reply, Route
from mediagate.web.schemas import (
    CONTENT_TYPE_PATTERN,
    Answer,
    MediaInfo,
    Timestamp,
    normalized_media_type,
    parse_json,
)

PREFIX = "/api/v1/companion"
GRANT = PREFIX + "/grant"
# Where Uppy is pointed: with a bearer token, or with a grant in the path.
BASES = (PREFIX, GRANT + "/{grant}")
CREATE = "/s3/multipart"
UPLOAD = "/s3/multipart/{upload_id}"
PART = "/s3/multipart/{upload_id}/{part_number}"
# Digits only: `…/{upload_id}/complete` is the complete route's alone (its Allow: POST).
PART_ROUTE = "/s3/multipart/{upload_id}/{part_number:[0-9]+}"
COMPLETE = "/s3/multipart/{upload_id}/complete"
PARAMS = "/s3/params"


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


def user_of(request: web.Request) -> str:
    grant = request.match_info.get("grant")
    if grant is None:
        return authenticated_user(request)
    user_id = request.app[GRANTS].user_of(grant)
    if user_id is None:
        raise Unauthorized(
            "the upload grant in this URL is not valid or has expired: "
            "get a new one (POST /api/v1/companion/grant)",
            reason="invalid_grant",
        )
    return user_id


async def grant(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    issued, expires = request.app[GRANTS].issue(user_id)
    endpoint = link_origin(request).joinpath(GRANT.lstrip("/"), issued)
    return GrantAnswer(
        companion_endpoint=str(endpoint), expires_at=datetime.fromtimestamp(expires, UTC)
    ).response(201)


async def create(request: web.Request) -> web.Response:
    user_id = user_of(request)
    body = await parse_json(request, CreateRequest)
    try:
        session = await request.app[DIRECT].create(
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


async def sign_part(request: web.Request) -> web.Response:
    user_id = user_of(request)
    session_id = await _checked_key(request, user_id)
    text = request.match_info["part_number"]
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= MAX_PARTS):
        raise BadRequest(f"part number {text} is not in 1..{MAX_PARTS}")
    number = int(text) - 1
    length = request.query.get("size")
    if length is not None and not (length.isascii() and length.isdigit() and len(length) < 13):
        raise BadRequest(f"size {length!r} is not a number of bytes")
    url = await request.app[DIRECT].sign_part(
        user_id,
        session_id,
        number,
        length=None if length is None else int(length),
        content_md5=request.query.get("md5"),
    )
    return PartUrl(url=url, expires=PART_URL_EXPIRY).response()


async def list_parts(request: web.Request) -> web.Response:
    user_id = user_of(request)
    session_id = await _checked_key(request, user_id)
    parts = await request.app[DIRECT].parts(user_id, session_id)
    return PartsAnswer(
        [ListedPartAnswer(PartNumber=p.number + 1, Size=p.size, ETag=p.etag) for p in parts]
    ).response()


async def complete(request: web.Request) -> web.Response:
    user_id = user_of(request)
    session_id = await _checked_key(request, user_id)
    body = await parse_json(request, CompleteRequest) if request.can_read_body else None
    claimed = None
    if body is not None and body.parts is not None:
        claimed = [(part.PartNumber - 1, part.ETag) for part in body.parts]
    origin = link_origin(request)
    media = await request.app[DIRECT].complete(user_id, session_id, claimed)
    url = stream_url(request, media.id, origin)
    return Completed(
        location=url, key=media.key, media_id=media.id, info=MediaInfo.of(media, url)
    ).response()


async def abort(request: web.Request) -> web.Response:
    user_id = user_of(request)
    session_id = await _checked_key(request, user_id)
    await request.app[DIRECT].abort(user_id, session_id)
    return web.Response(status=204)


async def single_request(request: web.Request) -> web.Response:
    user_of(request)
    raise DirectUploadNotOffered(
        "single-request uploads (a presigned POST) are not offered: every direct upload "
        "is a multipart one, whose end the server hears of, checks and records (Uppy: "
        "shouldUseMultipart: true)"
    )


async def _checked_key(request: web.Request, user_id: str) -> str:
    """The session of `upload_id`, if `key` names its object: a client's key is never
    used, only compared."""
    session_id = request.match_info["upload_id"]
    session = await request.app[ENGINE].owned_session(user_id, session_id)
    if request.query.get("key", session.key) != session.key:
        raise NotFound(f"no upload {session_id} with that key")
    return session_id


def _content_type(body: CreateRequest) -> str:
    """The type Uppy sends (the browser's guess, maybe empty), else one from the name."""
    if body.type and re.fullmatch(CONTENT_TYPE_PATTERN, body.type):
        return normalized_media_type(body.type)
    guessed, _ = mimetypes.guess_type(body.filename, strict=False)
    return guessed or "application/octet-stream"


def register(app: web.Application) -> None:
    """The routes (their OpenAPI description: web/direct_openapi.py)."""
    app.router.add_post(GRANT, grant)
    for base in BASES:
        app.router.add_post(base + CREATE, create)
        app.router.add_get(base + UPLOAD, list_parts, allow_head=False)
        app.router.add_delete(base + UPLOAD, abort)
        app.router.add_get(base + PART_ROUTE, sign_part, allow_head=False)
        app.router.add_post(base + COMPLETE, complete)
        app.router.add_get(base + PARAMS, single_request, allow_head=False)


def _operations() -> tuple[Route, ...]:
    """The OpenAPI description of the routes `register` adds (web/openapi.py)."""
    upload_id = _path("upload_id", "The upload, as create answered it (`uploadId`)")
    key = {
        "name": "key",
        "in": "query",
        "required": False,
        "description": "The key create answered; another one is 404",
        "schema": {"type": "string"},
    }
    grant_parameter = _path("grant", "The grant `POST /api/v1/companion/grant` answered")
    found = [
        Route(
            "POST",
            GRANT,
            "companion_grant",
            "A Companion endpoint with a short-lived upload grant in its path (Uppy v5+)",
            tag="direct",
            replies=(Reply(201, "The endpoint and when its grant expires", GrantAnswer),),
        )
    ]
    for base in BASES:
        by_grant = base != PREFIX
        suffix = "_granted" if by_grant else ""
        common: dict[str, Any] = {
            "tag": "direct",
            "auth": None if by_grant else "bearer",
        }
        before = (grant_parameter,) if by_grant else ()
        refused = (errors.Unauthorized, errors.CatalogUnavailable) if by_grant else ()
        unavailable = (
            errors.DirectUploadNotOffered,
            errors.DirectUploadUnavailable,
        )
        found += [
            Route(
                "POST",
                base + CREATE,
                "direct_create" + suffix,
                "Start a direct upload: the server chooses the key and makes the S3 upload",
                parameters=before,
                request_model=CreateRequest,
                replies=(Reply(200, "The upload", Created),),
                problems=(
                    *refused,
                    MALFORMED_BODY,
                    errors.BodyReadTimeout,
                    BODY_TOO_LARGE,
                    errors.FileTooLarge,
                    errors.TooManySessions,
                    *HOOKS,
                    *unavailable,
                    *STORAGE,
                ),
                **common,
            ),
            Route(
                "GET",
                base + UPLOAD,
                "direct_parts" + suffix,
                "The parts S3 holds of the upload (to resume)",
                parameters=(*before, upload_id, key),
                replies=(Reply(200, "The parts, by number", PartsAnswer),),
                problems=(
                    *refused,
                    errors.NotFound,
                    errors.WrongProtocol,
                    errors.SessionNotOpen,
                    errors.SessionExpired,
                    *unavailable,
                    *STORAGE,
                ),
                head=False,
                **common,
            ),
            Route(
                "GET",
                base + PART,
                "direct_sign_part" + suffix,
                "A URL to PUT one part straight to S3, good for minutes",
                description="`size` and `md5` (base64 Content-MD5), not Companion's, are "
                "signed into the URL: S3 then takes the part only with those headers, and "
                "only if its bytes match the MD5.",
                parameters=(
                    *before,
                    upload_id,
                    {
                        "name": "part_number",
                        "in": "path",
                        "required": True,
                        "description": "1-based part number",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PARTS},
                    },
                    key,
                    {
                        "name": "size",
                        "in": "query",
                        "required": False,
                        "description": "The part's length in bytes",
                        "schema": {"type": "integer", "minimum": 0},
                    },
                    {
                        "name": "md5",
                        "in": "query",
                        "required": False,
                        "description": "The part's MD5, base64",
                        "schema": {"type": "string"},
                    },
                ),
                replies=(Reply(200, "The part's URL", PartUrl),),
                problems=(
                    *refused,
                    errors.BadRequest,
                    errors.NotFound,
                    errors.WrongProtocol,
                    errors.SessionNotOpen,
                    errors.SessionExpired,
                    errors.ChunkOutOfRange,
                    errors.ChunkLengthMismatch,
                    *unavailable,
                ),
                head=False,
                **common,
            ),
            Route(
                "POST",
                base + COMPLETE,
                "direct_complete" + suffix,
                "List the parts in S3, check them and make the media",
                parameters=(*before, upload_id, key),
                request_model=CompleteRequest,
                replies=(Reply(200, "The media", Completed),),
                problems=(
                    *refused,
                    MALFORMED_BODY,
                    errors.BodyReadTimeout,
                    BODY_TOO_LARGE,
                    errors.NotFound,
                    errors.WrongProtocol,
                    errors.SessionNotOpen,
                    errors.SessionExpired,
                    errors.MissingChunks,
                    errors.ChunkLengthMismatch,
                    errors.FileTooLarge,
                    errors.ChunkInFlight,
                    errors.UploadFailed,
                    *HOOKS,
                    *unavailable,
                    *STORAGE,
                ),
                **common,
            ),
            Route(
                "DELETE",
                base + UPLOAD,
                "direct_abort" + suffix,
                "Abort the upload: S3 drops its parts",
                parameters=(*before, upload_id, key),
                replies=(Reply(204, "Aborted"),),
                problems=(
                    *refused,
                    errors.NotFound,
                    errors.WrongProtocol,
                    errors.SessionNotOpen,
                    errors.SessionExpired,
                    *unavailable,
                ),
                **common,
            ),
            Route(
                "GET",
                base + PARAMS,
                "direct_single_request" + suffix,
                "Not offered: every direct upload is a multipart one (501)",
                parameters=before,
                replies=(),
                problems=(*refused, errors.DirectUploadNotOffered),
                head=False,
                **common,
            ),
        ]
    return tuple(found)


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


OPENAPI = _operations()
