"""Handlers of the media API: info, list, delete and stream."""

from __future__ import annotations

import functools

from aiohttp import web
from yarl import URL

from mediagate import metrics
from mediagate.core.library import MediaLibrary, Redirect
from mediagate.disposition import presentation
from mediagate.errors import Forbidden, NotFound
from mediagate.models import Media
from mediagate.storage.base import ObjectRead, ReadConditions
from mediagate.web.auth import authenticated_user, bearer_token
from mediagate.web.file_response import send_file
from mediagate.web.host import link_origin
from mediagate.web.keys import LIBRARY, LINKS, SETTINGS
from mediagate.web.relay import proxy_read, relay
from mediagate.web.schemas import MediaInfo, MediaPage

routes = web.RouteTableDef()

DEFAULT_PAGE = 50


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


@routes.get("/api/v1/media/info/{media_id}")
async def info(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    origin = link_origin(request)
    media = await request.app[LIBRARY].get(user_id, request.match_info["media_id"])
    return media_info(request, media, origin).response()


@routes.get("/api/v1/media")
async def list_media(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    origin = link_origin(request)
    limit_text = request.query.get("limit", str(DEFAULT_PAGE))
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    limit = int(limit_text) if limit_text.isascii() and limit_text.isdecimal() else -1
    page = await request.app[LIBRARY].page(user_id, limit, request.query.get("cursor"))
    return MediaPage(
        items=[media_info(request, media, origin) for media in page.items],
        next_cursor=page.next_cursor,
    ).response()


@routes.delete("/api/v1/media/delete/{media_id}")
async def delete(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    await request.app[LIBRARY].delete(user_id, request.match_info["media_id"])
    return web.Response(status=204)


@routes.get("/api/v1/media/stream/{media_id}", allow_head=True)
async def stream(request: web.Request) -> web.StreamResponse:
    return await serve_media(request, await _streamable_media(request))


async def serve_media(request: web.Request, media: Media) -> web.StreamResponse:
    """The media's bytes as the stream endpoint answers them (also tus's GET):
    ranges, conditionals, a redirect to S3 or the CDN, or the store's answer relayed."""
    library = request.app[LIBRARY]
    read = proxy_read(request, media.size)
    target = await library.playback(media, read.conditions, head=request.method == "HEAD")
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
            read=read,
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
    target = await library.playback(media, conditions, head=False)
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
    library = request.app[LIBRARY]
    expires = request.query.get("expires", "")
    signature = request.query.get("signature", "")
    if bearer_token(request) is not None or not (expires or signature):
        return await library.get(authenticated_user(request), media_id)
    if not request.app[LINKS].is_valid(media_id, expires, signature):
        raise Forbidden("the stream link is invalid or has expired")
    return await library.by_id(media_id)


@routes.get("/api/v1/media/poster/{media_id}", allow_head=True)
async def poster(request: web.Request) -> web.StreamResponse:
    """The media's poster JPEG: a redirect to S3 or the CDN, or the file itself."""
    media = await _streamable_media(request)
    target = await request.app[LIBRARY].poster(media)
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
