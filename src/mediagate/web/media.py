"""Handlers of the media API: info, list, delete and stream."""

from __future__ import annotations

import functools

from aiohttp import web
from yarl import URL

from mediagate import errors, metrics
from mediagate.core.library import MAX_PAGE, MediaLibrary, Redirect
from mediagate.disposition import presentation
from mediagate.errors import Forbidden, NotFound
from mediagate.models import Media
from mediagate.storage.base import ObjectRead, ReadConditions
from mediagate.web.auth import authenticated_user, bearer_token
from mediagate.web.file_response import send_file
from mediagate.web.host import link_origin
from mediagate.web.keys import LINKS, SERVICES, SETTINGS
from mediagate.web.operations import ANY_BYTES, BINARY, STORAGE, Operations, Reply, parameter
from mediagate.web.relay import proxy_read, relay
from mediagate.web.schemas import MediaInfo, MediaPage

OPERATIONS = Operations(
    "media",
    "Uploaded media: info, list, stream, delete",
    headers={
        "ETag": {
            "description": "Strong validator: the media id, quoted",
            "schema": {"type": "string"},
        },
        "Last-Modified": {"description": "The media's creation", "schema": {"type": "string"}},
        "Accept-Ranges": {"description": "`bytes`", "schema": {"type": "string"}},
        "Content-Disposition": {
            "description": "How to present the file, with its original filename",
            "schema": {"type": "string"},
        },
    },
)

DEFAULT_PAGE = 50

MEDIA_ID = parameter("path", "media_id", "The media, as complete answered it")
MEDIA_LINKS = {
    name: {"operationId": operation, "parameters": {"media_id": "$response.body#/media_id"}}
    for name, operation in {
        "MediaInfo": "media_info",
        "Stream": "stream_media",
        "Delete": "delete_media",
    }.items()
}
STREAM_HEADERS = ("ETag", "Last-Modified", "Accept-Ranges", "Content-Disposition", "Cache-Control")
# What a read of a media's bytes takes and answers (stream, and tus's GET).
READ_CONDITIONS = (
    parameter(
        "header",
        "Range",
        "`bytes=first-last`, `bytes=first-`, `bytes=-suffix`, or several",
        {"type": "string"},
    ),
    parameter("header", "If-Range", "An ETag or HTTP-date", {"type": "string"}),
    parameter("header", "If-Match", "ETags", {"type": "string"}),
    parameter("header", "If-None-Match", "ETags", {"type": "string"}),
    parameter("header", "If-Modified-Since", "HTTP-date", {"type": "string"}),
    parameter("header", "If-Unmodified-Since", "HTTP-date", {"type": "string"}),
)
STREAM_REPLIES = (
    Reply(200, "The whole file", content=ANY_BYTES, headers=STREAM_HEADERS),
    Reply(
        206,
        "The ranges asked for (several: `multipart/byteranges`)",
        content=ANY_BYTES,
        headers=(*STREAM_HEADERS, "Content-Range"),
    ),
    Reply(302, "To a presigned S3 GET or the CDN", headers=("Location", "Cache-Control")),
    Reply(304, "Not modified", headers=("ETag", "Last-Modified", "Cache-Control")),
)


def stream_url(request: web.Request, media_id: str, origin: URL) -> str:
    """An absolute, signed link a player can open without any header.

    `origin` is `link_origin(request)`, taken before anything that must not be left
    half done: building the link itself cannot fail.
    """
    expires, signature = request.app[LINKS].sign(media_id)
    metrics.signed_url_issued("stream")
    url = origin.joinpath("api/v1/media/stream", media_id)
    return str(url.with_query(expires=str(expires), signature=signature))


def poster_url(request: web.Request, media: Media, origin: URL) -> str | None:
    """A signed link to the media's poster, like its stream link; None if it has none."""
    if media.poster_key is None:
        return None
    expires, signature = request.app[LINKS].sign(media.id)
    url = origin.joinpath("api/v1/media/poster", media.id)
    return str(url.with_query(expires=str(expires), signature=signature))


def media_info(request: web.Request, media: Media, origin: URL) -> MediaInfo:
    return MediaInfo.of(
        media, stream_url(request, media.id, origin), poster_url(request, media, origin)
    )


@OPERATIONS(
    "GET",
    "/api/v1/media/info/{media_id}",
    "media_info",
    "One media",
    parameters=(MEDIA_ID,),
    replies=(Reply(200, "The media", MediaInfo),),
    problems=(errors.NotFound,),
)
async def info(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    origin = link_origin(request)
    media = await request.app[SERVICES].library.get(user_id, request.match_info["media_id"])
    return media_info(request, media, origin).response()


@OPERATIONS(
    "GET",
    "/api/v1/media",
    "list_media",
    "The caller's media, newest first, paged",
    parameters=(
        parameter(
            "query",
            "limit",
            "Page size",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
        ),
        parameter("query", "cursor", "`next_cursor` of the page before", {"type": "string"}),
    ),
    replies=(Reply(200, "A page", MediaPage),),
    problems=(errors.BadRequest,),
)
async def list_media(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    origin = link_origin(request)
    limit_text = request.query.get("limit", str(DEFAULT_PAGE))
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    limit = int(limit_text) if limit_text.isascii() and limit_text.isdecimal() else -1
    page = await request.app[SERVICES].library.page(user_id, limit, request.query.get("cursor"))
    return MediaPage(
        items=[media_info(request, media, origin) for media in page.items],
        next_cursor=page.next_cursor,
    ).response()


@OPERATIONS(
    "DELETE",
    "/api/v1/media/delete/{media_id}",
    "delete_media",
    "Delete a media: its object or file and its record",
    description="A finalizing media is deleted with its upload: its parts are dropped.",
    parameters=(MEDIA_ID,),
    replies=(Reply(204, "Deleted"),),
    problems=(errors.NotFound, errors.SessionNotOpen, *STORAGE),
)
async def delete(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    await request.app[SERVICES].library.delete(user_id, request.match_info["media_id"])
    return web.Response(status=204)


@OPERATIONS(
    "GET",
    "/api/v1/media/stream/{media_id}",
    "stream_media",
    "The media's bytes (local) or a redirect to them (S3, CDN)",
    description="RFC 9110 ranges and conditionals. Open with the owner's bearer token, "
    "or with the signed `stream_url` (`expires` and `signature`) and no header at all.",
    auth="bearer-or-link",
    parameters=(
        MEDIA_ID,
        parameter("query", "expires", "Of a signed stream link", {"type": "string"}),
        parameter("query", "signature", "Of a signed stream link", {"type": "string"}),
        *READ_CONDITIONS,
    ),
    replies=STREAM_REPLIES,
    problems=(
        errors.Forbidden,
        errors.NotFound,
        errors.PreconditionFailed,
        errors.RangeNotSatisfiable,
        errors.MediaFailed,
        errors.MediaNotReady,
        errors.StorageUnavailable,
        errors.StorageRejected,
    ),
)
async def stream(request: web.Request) -> web.StreamResponse:
    return await serve_media(request, await _streamable_media(request))


async def serve_media(request: web.Request, media: Media) -> web.StreamResponse:
    """The media's bytes as the stream endpoint answers them (also tus's GET):
    ranges, conditionals, a redirect to S3 or the CDN, or the store's answer relayed."""
    library = request.app[SERVICES].library
    # Parsed only for a store that reads them itself: send_file parses them for a file.
    read = functools.cache(functools.partial(proxy_read, request, media.size))
    target = await library.playback(media, lambda: read().conditions, head=request.method == "HEAD")
    if isinstance(target, Redirect):
        raise web.HTTPFound(target.url, headers={"Cache-Control": "private, no-store"})
    cache_control = private_cache_control(request.app[SETTINGS].cache_control)
    shown = presentation(media.filename, media.content_type)
    headers = {"Content-Disposition": shown.content_disposition}
    if shown.sandbox:
        headers["Content-Security-Policy"] = "sandbox"
    if isinstance(target, ObjectRead):
        return await relay(
            request,
            target,
            media,
            read=read(),
            fetch=functools.partial(_read_again, library, media),
            content_type=shown.content_type,
            headers=headers,
            cache_control=cache_control,
        )
    try:
        return await send_file(
            request,
            target.path,
            content_type=shown.content_type,
            # A media's bytes never change (a new upload is a new media), so its
            # id is a strong validator and its creation its last modification.
            etag=f'"{media.id}"',
            last_modified=media.created_at.timestamp(),
            cache_control=cache_control,
            headers=headers,
        )
    except FileNotFoundError:
        raise NotFound(f"the file of media {media.id} is missing on disk") from None


async def _read_again(
    library: MediaLibrary, media: Media, conditions: ReadConditions
) -> ObjectRead:
    """A further range of a proxied media (the parts of a multipart/byteranges answer)."""
    target = await library.playback(media, lambda: conditions, head=False)
    if not isinstance(target, ObjectRead):
        raise RuntimeError(f"media {media.id} is no longer read through this server")
    return target


@functools.lru_cache(maxsize=8)
def private_cache_control(cache_control: str) -> str:
    """MEDIAGATE_CACHE_CONTROL for bytes this server sends, kept out of shared caches.

    They sit behind a signed link or a token: a proxy or CDN that kept them would
    serve them after the link expired and after the media was deleted. The setting's
    other directives (max-age, immutable) still let the player's own cache keep them.
    S3 objects keep the setting as it is, for the CDN the operator chose.
    """
    directives = [item.strip() for item in cache_control.split(",") if item.strip()]
    names = [item.split("=", 1)[0].lower() for item in directives]
    if "no-store" in names or "private" in names:
        return ", ".join(directives)
    shared_only = {"public", "s-maxage", "proxy-revalidate"}
    kept = [item for item, name in zip(directives, names, strict=True) if name not in shared_only]
    return ", ".join(["private", *kept])


async def _streamable_media(request: web.Request) -> Media:
    """The media, if the link is signed for it or the owner's bearer token came along."""
    media_id = request.match_info["media_id"]
    library = request.app[SERVICES].library
    expires = request.query.get("expires", "")
    signature = request.query.get("signature", "")
    if bearer_token(request) is not None or not (expires or signature):
        return await library.get(authenticated_user(request), media_id)
    if not request.app[LINKS].is_valid(media_id, expires, signature):
        raise Forbidden("the stream link is invalid or has expired")
    return await library.by_id(media_id)


@OPERATIONS(
    "GET",
    "/api/v1/media/poster/{media_id}",
    "media_poster",
    "The media's poster JPEG (local) or a redirect to it (S3, CDN)",
    description="One frame of a video, at most 640 px wide. Open with the owner's bearer "
    "token, or with the signed `poster_url` (`expires` and `signature`) and no header.",
    auth="bearer-or-link",
    parameters=(
        MEDIA_ID,
        parameter("query", "expires", "Of a signed link", {"type": "string"}),
        parameter("query", "signature", "Of a signed link", {"type": "string"}),
    ),
    replies=(
        Reply(200, "The JPEG", content={"image/jpeg": {"schema": BINARY}}),
        Reply(302, "A presigned S3 GET or the CDN URL", headers=("Location", "Cache-Control")),
    ),
    problems=(errors.Forbidden, errors.NotFound, errors.StorageUnavailable),
)
async def poster(request: web.Request) -> web.StreamResponse:
    """The media's poster JPEG: a redirect to S3 or the CDN, or the file itself."""
    media = await _streamable_media(request)
    target = await request.app[SERVICES].library.poster(media)
    if isinstance(target, Redirect):
        raise web.HTTPFound(target.url, headers={"Cache-Control": "private, no-store"})
    try:
        return await send_file(
            request,
            target.path,
            content_type="image/jpeg",
            etag=f'"{media.id}-poster"',
            last_modified=media.created_at.timestamp(),
            cache_control=private_cache_control(request.app[SETTINGS].cache_control),
            headers={},
        )
    except FileNotFoundError:
        raise NotFound(f"the poster of media {media.id} is missing on disk") from None
