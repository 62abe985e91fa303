"""The IETF draft "Resumable Uploads for HTTP" at /api/v1/uploads (docs/api.md).

Interop versions 6 (drafts -04/-05: Apple's URLSession, tus-js-client's
`ietf-draft-05`) and 8 (the latest draft), chosen per request by
`Upload-Draft-Interop-Version`; a request without it is served by the latest
rules, without 104 (the draft forbids a 104 then). The two differ little on
the server's side: what is answered is a superset that both accept.

`104 (Upload Resumption Supported)`: aiohttp has no API for interim responses.
It writes its own `100 Continue` with `request.writer.write` before a handler
reads the body (web_urldispatcher's expect handler); a 104 is written the same
way, before the final response is prepared, on HTTP/1.1 only (aiohttp serves
no other), and only while nothing but interim responses went out.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import HttpVersion11, web
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from mediagate import errors
from mediagate.core.ietf import Append
from mediagate.core.offsets import Checksum, Progress, Upload
from mediagate.errors import (
    BadRequest,
    ChecksumMismatch,
    ContentDigestMismatch,
    InteropVersionUnsupported,
    MismatchingUploadOffset,
    OffsetMismatch,
    Problem,
    UnsupportedMediaType,
)
from mediagate.models import MediaState
from mediagate.web.auth import authenticated_user
from mediagate.web.body_reads import request_body
from mediagate.web.cors import NATIVE_API
from mediagate.web.host import link_origin
from mediagate.web.keys import CLOCK, SERVICES
from mediagate.web.media import media_info
from mediagate.web.operations import (
    ANY_BYTES,
    BINARY,
    HOOKS,
    STORAGE,
    Operations,
    Reply,
    parameter,
)
from mediagate.web.problems import from_problem
from mediagate.web.schemas import MediaCreated, MediaFinalizing
from mediagate.web.tus_headers import media_name, parse_metadata

COLLECTION = "/api/v1/uploads"
UPLOAD = COLLECTION + "/{upload_id}"
# The interop versions served, oldest first; the last is the latest draft's.
INTEROP_VERSIONS = (6, 8)
LATEST = INTEROP_VERSIONS[-1]
PARTIAL_UPLOAD = "application/partial-upload"
UNTYPED = "application/octet-stream"
REASON_104 = "Upload Resumption Supported"
# What a browser on another origin may send to and read from the upload paths.
CORS_PATHS = NATIVE_API.extended(
    COLLECTION,
    methods=("POST", "HEAD", "PATCH", "DELETE", "OPTIONS"),
    request_headers=(
        "Upload-Complete",
        "Upload-Offset",
        "Upload-Length",
        "Upload-Draft-Interop-Version",
        "Upload-Metadata",
        "Content-Disposition",
        "Content-Digest",
        "Repr-Digest",
        "Want-Repr-Digest",
    ),
    exposed_headers=(
        "Location",
        "Upload-Complete",
        "Upload-Offset",
        "Upload-Length",
        "Upload-Limit",
        "Upload-Draft-Interop-Version",
        "Repr-Digest",
    ),
)

# RFC 8941 Integer and Boolean items, as the draft's fields are.
_INTEGER = re.compile(r"-?[0-9]{1,15}")
_DIGEST_MEMBER = re.compile(r"\s*([a-z][a-z0-9_\-.*]*)\s*=\s*:([A-Za-z0-9+/=]*):\s*")
# RFC 9530 algorithms this server checks, and the hashlib name of each.
DIGEST_ALGORITHMS = {"sha-256": "sha256", "sha-512": "sha512"}

# The response headers of the draft, as the document describes them.
HEADERS: dict[str, dict[str, Any]] = {
    "Upload-Complete": {
        "description": "`?1` once the upload is complete",
        "schema": {"enum": ["?0", "?1"]},
    },
    "Upload-Limit": {
        "description": "`max-size=…`, with `max-age=…` for an upload",
        "schema": {"type": "string"},
    },
    "Repr-Digest": {
        "description": "RFC 9530: the file's `sha-256`, as the creation declared and the "
        "server verified",
        "schema": {"type": "string"},
    },
    "Accept-Patch": {"description": f"`{PARTIAL_UPLOAD}`", "schema": {"type": "string"}},
}


def interop_version(value: str | None) -> int | None:
    """Upload-Draft-Interop-Version: one served, or None without the field."""
    if value is None:
        return None
    text = value.strip()
    if not _INTEGER.fullmatch(text) or int(text) not in INTEROP_VERSIONS:
        raise InteropVersionUnsupported(
            f"Upload-Draft-Interop-Version {value!r} is not served; this server speaks "
            f"{' and '.join(map(str, INTEROP_VERSIONS))}"
        )
    return int(text)


def sf_boolean(value: str | None) -> bool | None:
    """A Structured Field Boolean (`?1`/`?0`); None if absent or not one (ignored)."""
    text = (value or "").strip()
    return {"?1": True, "?0": False}.get(text)


def sf_offset(value: str | None) -> int | None:
    """A Structured Field non-negative Integer; None if absent or not one (ignored)."""
    text = (value or "").strip()
    if not _INTEGER.fullmatch(text) or text.startswith("-"):
        return None
    return int(text)


def digests(value: str | None) -> dict[str, bytes]:
    """An RFC 9530 Dictionary of byte sequences: the algorithms this server checks."""
    found: dict[str, bytes] = {}
    for member in (value or "").split(","):
        match = _DIGEST_MEMBER.fullmatch(member)
        if not member.strip():
            continue
        if match is None:
            raise BadRequest("a digest field must be a Dictionary of `algorithm=:base64:`")
        name = DIGEST_ALGORITHMS.get(match[1])
        if name is None:
            continue  # an algorithm not checked here: ignored, as RFC 9530 allows
        try:
            found[name] = base64.b64decode(match[2], validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"the {match[1]} digest is not base64") from None
    return found


def content_digest(value: str | None) -> Checksum | None:
    """The strongest checked algorithm of a Content-Digest, or None."""
    found = digests(value)
    for name in ("sha512", "sha256"):
        if name in found:
            return Checksum(name, found[name])
    return None


def repr_sha256(value: str | None) -> str | None:
    """A Repr-Digest's sha-256, as the hex the engine checks the whole file against."""
    digest = digests(value).get("sha256")
    if digest is None:
        return None
    if len(digest) != 32:
        raise BadRequest("Repr-Digest's sha-256 is not 32 bytes")
    return digest.hex()


def representation(request: web.Request) -> tuple[str, str]:
    """The file's name and type: Content-Disposition's filename (the draft's way),
    or Upload-Metadata's (tus-js-client's); Content-Type unless it labels a part."""
    filename = ""
    disposition = request.headers.get("Content-Disposition")
    if disposition:
        _, params = parse_content_disposition(disposition)
        filename = content_disposition_filename(params, "filename") or ""
    named, typed = media_name(parse_metadata(request.headers.get("Upload-Metadata")))
    filename = filename or named
    content_type = request.content_type
    if not request.headers.get("Content-Type") or content_type in (PARTIAL_UPLOAD, UNTYPED):
        guessed, _ = mimetypes.guess_type(filename, strict=False)
        content_type = typed if typed != UNTYPED else (guessed or UNTYPED)
    return filename, content_type


def _append(request: web.Request, offset: int) -> Append:
    complete = sf_boolean(request.headers.get("Upload-Complete"))
    if complete is None:
        raise BadRequest("the request needs Upload-Complete (?1 or ?0)")
    body_length = request.content_length
    if body_length is None and not request.body_exists:
        body_length = 0
    return Append(
        offset=offset,
        body_length=body_length,
        complete=complete,
        upload_length=sf_offset(request.headers.get("Upload-Length")),
        digest=content_digest(request.headers.get("Content-Digest")),
    )


async def interim(request: web.Request, version: int | None, headers: dict[str, str]) -> None:
    """A 104 on the wire, if the request's interop version asks for it (HTTP/1.1)."""
    if version is None or request.version != HttpVersion11:
        return
    lines = [f"HTTP/1.1 104 {REASON_104}", f"Upload-Draft-Interop-Version: {version}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    await request.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def _reporter(request: web.Request, version: int | None) -> Progress:
    """Progress 104s: the offset each time a part of the body counts (no `Location`)."""

    async def report(offset: int) -> None:
        await interim(request, version, {"Upload-Offset": str(offset)})

    return report


def _limit(request: web.Request, upload: Upload | None) -> str:
    ietf = request.app[SERVICES].ietf
    if upload is None:
        return f"max-size={ietf.max_size}, min-size=0"
    now: datetime = request.app[CLOCK]()
    age = max(int((upload.session.expires_at - now).total_seconds()), 0)
    return (
        f"max-size={upload.session.size if upload.length is None else upload.length}, max-age={age}"
    )


def _progress(request: web.Request, upload: Upload) -> dict[str, str]:
    headers = {
        "Upload-Offset": str(upload.offset),
        "Upload-Complete": "?1" if upload.finished else "?0",
        "Upload-Limit": _limit(request, upload),
    }
    if upload.length is not None:
        headers["Upload-Length"] = str(upload.length)
    return headers


def _upload_url(request: web.Request, upload_id: str) -> str:
    return f"{link_origin(request)}{COLLECTION}/{upload_id}"


async def _finished(request: web.Request, user_id: str, upload: Upload) -> web.Response:
    """The answer of the resource the upload was made for: its media, as complete answers."""
    origin = link_origin(request)
    media = await request.app[SERVICES].ietf.media(user_id, upload)
    info = media_info(request, media, origin)
    url = info.stream_url
    if media.state is MediaState.FINALIZING:
        answer = MediaFinalizing(media_id=media.id, stream_url=url, info=info, state=media.state)
        response = answer.response(202)
    else:
        response = MediaCreated(media_id=media.id, stream_url=url, info=info).response(201)
    response.headers.update(_progress(request, upload))
    response.headers["Location"] = _upload_url(request, upload.session.id)
    if upload.session.sha256:
        digest = base64.b64encode(bytes.fromhex(upload.session.sha256)).decode()
        response.headers["Repr-Digest"] = f"sha-256=:{digest}:"
    return response


def _answer(
    handler: Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Problems as the draft types them, with `Upload-Complete: ?0` (the answer is not
    the processing of a finished upload) and what the handler knew of the upload."""

    async def answer(request: web.Request) -> web.StreamResponse:
        known: dict[str, str] = {}
        try:
            return await handler(request, known)
        except Problem as problem:
            return _problem(request, problem, known)

    return answer


def _problem(request: web.Request, problem: Problem, known: dict[str, str]) -> web.Response:
    """`problem` as the draft names it, with the upload's offset when it is known."""
    if isinstance(problem, OffsetMismatch):
        provided = sf_offset(request.headers.get("Upload-Offset"))
        problem = MismatchingUploadOffset(
            problem.detail,
            **{"expected-offset": problem.extra["offset"], "provided-offset": provided},
        )
    elif isinstance(problem, ChecksumMismatch):
        problem = ContentDigestMismatch(
            "the body does not match its Content-Digest", **problem.extra
        )
    headers = {**known, "Upload-Complete": "?0"}
    if "offset" in problem.extra:
        headers["Upload-Offset"] = str(problem.extra["offset"])
    if isinstance(problem, MismatchingUploadOffset):
        headers["Upload-Offset"] = str(problem.extra["expected-offset"])
    return from_problem(problem, headers=headers)


OPERATIONS = Operations(
    "ietf",
    "IETF draft resumable uploads (interop 6 and 8), on the same engine",
    headers=HEADERS,
    cors=CORS_PATHS,
)

UPLOAD_ID = parameter(
    "path", "upload_id", "The upload resource: the last segment of its `Location`"
)
VERSION = parameter(
    "header",
    "Upload-Draft-Interop-Version",
    "The draft's interop version: 6 or 8 (the latest); without it, the latest without 104",
    {"type": "integer", "enum": list(INTEROP_VERSIONS)},
)
COMPLETE = parameter(
    "header",
    "Upload-Complete",
    "`?1`: this request's body ends the file",
    {"type": "string", "enum": ["?0", "?1"]},
    required=True,
)
LENGTH = parameter(
    "header",
    "Upload-Length",
    "The upload's length in bytes, at most `MEDIAGATE_MAX_UPLOAD_SIZE` (413 past it); a "
    "value that is not a non-negative Integer is ignored, as a Structured Field that "
    "does not parse",
)
# An RFC 9530 digest field: a Dictionary of `algorithm=:base64:`, maybe empty (what
# `digests` reads).
_BASE64 = "(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
_MEMBER = rf"(?:[a-z][a-z0-9_.*-]*=:{_BASE64}:)?"
DIGEST_FIELD = {"type": "string", "pattern": rf"^ *{_MEMBER}(?: *, *{_MEMBER})* *$"}
DIGEST = parameter(
    "header",
    "Content-Digest",
    "RFC 9530 `sha-256=:…:` or `sha-512=:…:` of this body: nothing of it kept if it differs",
    DIGEST_FIELD,
)
# Every answer of a handler below says whether the upload is complete (a problem: `?0`).
ANSWER = ("Upload-Complete",)
STATE = ("Upload-Offset", "Upload-Limit", "Upload-Length")
FINISHED = (
    Reply(
        201,
        "Complete: the media, as `complete_upload` answers",
        MediaCreated,
        headers=(*STATE, "Location", "Repr-Digest"),
    ),
    Reply(
        202,
        "Complete; some parts wait on local disk for S3",
        MediaFinalizing,
        headers=(*STATE, "Location", "Repr-Digest"),
    ),
)
WRITE_PROBLEMS = (
    errors.BadRequest,
    errors.MalformedBody,
    errors.ChunkIncomplete,
    errors.NotFound,
    errors.BodyReadTimeout,
    errors.MismatchingUploadOffset,
    errors.CompletedUpload,
    errors.InconsistentUploadLength,
    errors.InteropVersionUnsupported,
    errors.ContentDigestMismatch,
    errors.FileDigestMismatch,
    errors.ChunkSuperseded,
    errors.UploadSuperseded,
    errors.UploadLocked,
    errors.SessionNotOpen,
    errors.UploadFailed,
    errors.SessionExpired,
    errors.FileTooLarge,
    errors.UnsupportedMediaType,
    errors.TooMuchHeld,
    *HOOKS,
    errors.NotMedia,
    *STORAGE,
)
STATE_REPLY = Reply(204, "The upload", headers=STATE, required=("Upload-Offset", "Cache-Control"))
STATE_PROBLEMS = (
    errors.NotFound,
    errors.SessionExpired,
    errors.InteropVersionUnsupported,
    *STORAGE,
)


@OPERATIONS(
    "OPTIONS",
    COLLECTION,
    "ietf_options",
    "The limits of an upload made here",
    description="No token needed. A CORS preflight (with `Access-Control-Request-Method`) is "
    "answered by the CORS rules instead (`MEDIAGATE_CORS_ORIGINS`).",
    auth=None,
    replies=(Reply(204, "The limits", required=("Upload-Limit", "Accept-Patch")),),
    problems=(errors.CorsOriginNotAllowed,),
)
@_answer
async def options(request: web.Request, known: dict[str, str]) -> web.StreamResponse:
    """What the draft asks of OPTIONS: the limits of an upload made here."""
    return web.Response(
        status=204,
        headers={
            "Upload-Limit": _limit(request, None),
            "Accept-Patch": PARTIAL_UPLOAD,
            "Allow": "POST, OPTIONS",
        },
    )


@OPERATIONS(
    "POST",
    COLLECTION,
    "ietf_create",
    'Create an upload resource (IETF draft "Resumable Uploads for HTTP")',
    description="The body is the file's first bytes (or all of it, `Upload-Complete: ?1`); "
    "a `104 Upload Resumption Supported` with `Location` comes first when the request "
    "names an interop version. `Content-Disposition` names the media, `Repr-Digest` "
    "(`sha-256`) is checked on completion.",
    parameters=(
        VERSION,
        COMPLETE,
        LENGTH,
        DIGEST,
        parameter(
            "header", "Repr-Digest", "RFC 9530 `sha-256=:…:` of the whole file", DIGEST_FIELD
        ),
        parameter("header", "Content-Disposition", "`inline; filename=…`: the media's name"),
    ),
    request_content=ANY_BYTES,
    body_required=False,
    answer_headers=ANSWER,
    replies=(
        Reply(201, "The upload resource, at `Location`", headers=STATE, required=("Location",)),
        *FINISHED[1:],
    ),
    problems=(*WRITE_PROBLEMS, errors.TooManySessions),
)
@_answer
async def create(request: web.Request, known: dict[str, str]) -> web.StreamResponse:
    user_id = authenticated_user(request)
    version = interop_version(request.headers.get("Upload-Draft-Interop-Version"))
    append = _append(request, 0)
    filename, content_type = representation(request)
    ietf = request.app[SERVICES].ietf
    upload = await ietf.create(
        user_id,
        append=append,
        filename=filename,
        content_type=content_type,
        caller=request.remote,
        sha256=repr_sha256(request.headers.get("Repr-Digest")),
    )
    upload_id = upload.session.id
    known["Location"] = _upload_url(request, upload_id)
    await interim(
        request, version, {"Location": known["Location"], "Upload-Limit": _limit(request, upload)}
    )
    if append.body_length != 0 and not upload.finished:
        upload = await ietf.append(
            user_id, upload_id, request_body(request), append, progress=_reporter(request, version)
        )
    if upload.finished:
        return await _finished(request, user_id, upload)
    headers = {**_progress(request, upload), "Location": known["Location"]}
    return web.Response(status=201, headers=headers)


@OPERATIONS(
    "HEAD",
    UPLOAD,
    "ietf_offset",
    "The upload's offset, completeness, length and limits",
    parameters=(UPLOAD_ID, VERSION),
    answer_headers=ANSWER,
    replies=(STATE_REPLY,),
    problems=STATE_PROBLEMS,
)
@OPERATIONS(
    "GET",
    UPLOAD,
    "ietf_offset_get",
    "As HEAD (the draft allows either)",
    head=False,
    parameters=(UPLOAD_ID, VERSION),
    answer_headers=ANSWER,
    replies=(STATE_REPLY,),
    problems=STATE_PROBLEMS,
)
@_answer
async def offset(request: web.Request, known: dict[str, str]) -> web.StreamResponse:
    user_id = authenticated_user(request)
    interop_version(request.headers.get("Upload-Draft-Interop-Version"))
    upload = await request.app[SERVICES].ietf.state(user_id, request.match_info["upload_id"])
    return web.Response(
        status=204, headers={**_progress(request, upload), "Cache-Control": "no-store"}
    )


@OPERATIONS(
    "PATCH",
    UPLOAD,
    "ietf_append",
    f"Append bytes at the upload's offset (`{PARTIAL_UPLOAD}`)",
    description="Cut into parts as it streams, as a tus PATCH. `Upload-Complete: ?1` ends "
    "the file: the answer is then the media.",
    parameters=(
        UPLOAD_ID,
        VERSION,
        COMPLETE,
        parameter(
            "header",
            "Upload-Offset",
            "Where the body starts",
            {"type": "integer", "minimum": 0},
            required=True,
        ),
        LENGTH,
        DIGEST,
    ),
    request_content={PARTIAL_UPLOAD: {"schema": BINARY}},
    body_required=False,
    answer_headers=ANSWER,
    replies=(
        Reply(204, "Appended", headers=STATE, required=("Upload-Offset",)),
        *FINISHED,
    ),
    problems=WRITE_PROBLEMS,
)
@_answer
async def append(request: web.Request, known: dict[str, str]) -> web.StreamResponse:
    user_id = authenticated_user(request)
    version = interop_version(request.headers.get("Upload-Draft-Interop-Version"))
    if request.content_type != PARTIAL_UPLOAD:
        raise UnsupportedMediaType(f"an append's body must be {PARTIAL_UPLOAD}")
    at = sf_offset(request.headers.get("Upload-Offset"))
    if at is None:
        raise BadRequest("an append needs Upload-Offset (a non-negative Integer)")
    upload = await request.app[SERVICES].ietf.append(
        user_id,
        request.match_info["upload_id"],
        request_body(request),
        _append(request, at),
        progress=_reporter(request, version),
    )
    if upload.finished:
        return await _finished(request, user_id, upload)
    return web.Response(status=204, headers=_progress(request, upload))


@OPERATIONS(
    "DELETE",
    UPLOAD,
    "ietf_cancel",
    "Cancel an upload: its bytes are removed (a finished upload's media stays)",
    parameters=(UPLOAD_ID, VERSION),
    replies=(Reply(204, "Cancelled"),),
    problems=(
        errors.NotFound,
        errors.UploadSuperseded,
        errors.UploadLocked,
        errors.SessionNotOpen,
        errors.SessionExpired,
        errors.InteropVersionUnsupported,
        *STORAGE,
    ),
)
@_answer
async def cancel(request: web.Request, known: dict[str, str]) -> web.StreamResponse:
    user_id = authenticated_user(request)
    interop_version(request.headers.get("Upload-Draft-Interop-Version"))
    await request.app[SERVICES].ietf.cancel(user_id, request.match_info["upload_id"])
    return web.Response(status=204)
