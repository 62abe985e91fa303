"""Handlers of the media API: info, list, delete and stream."""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from mediagate import metrics
from mediagate.core.errors import Forbidden, NotFound
from mediagate.core.library import Redirect
from mediagate.core.models import Media
from mediagate.storage.base import ObjectRead
from mediagate.web.auth import authenticated_user, bearer_token
from mediagate.web.file_response import send_file
from mediagate.web.keys import LIBRARY, LINKS, SETTINGS
from mediagate.web.relay import read_conditions, relay
from mediagate.web.schemas import MediaInfo, MediaPage

routes = web.RouteTableDef()

DEFAULT_PAGE = 50


def stream_url(request: web.Request, media_id: str) -> str:
    """An absolute, signed link a player can open without any header."""
    expires, signature = request.app[LINKS].sign(media_id)
    metrics.signed_url_issued("stream")
    base = request.app[SETTINGS].public_url or str(request.url.origin())
    url = URL(base).joinpath("api/v1/media/stream", media_id)
    return str(url.with_query(expires=str(expires), signature=signature))


@routes.get("/api/v1/media/info/{media_id}")
async def info(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    media = await request.app[LIBRARY].get(user_id, request.match_info["media_id"])
    return MediaInfo.of(media, stream_url(request, media.id)).response()


@routes.get("/api/v1/media")
async def list_media(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    limit_text = request.query.get("limit", str(DEFAULT_PAGE))
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    limit = int(limit_text) if limit_text.isascii() and limit_text.isdecimal() else -1
    page = await request.app[LIBRARY].page(user_id, limit, request.query.get("cursor"))
    return MediaPage(
        items=[MediaInfo.of(media, stream_url(request, media.id)) for media in page.items],
        next_cursor=page.next_cursor,
    ).response()


@routes.delete("/api/v1/media/delete/{media_id}")
async def delete(request: web.Request) -> web.Response:
    user_id = authenticated_user(request)
    await request.app[LIBRARY].delete(user_id, request.match_info["media_id"])
    return web.Response(status=204)


@routes.get("/api/v1/media/stream/{media_id}", allow_head=True)
async def stream(request: web.Request) -> web.StreamResponse:
    media = await _streamable_media(request)
    target = await request.app[LIBRARY].playback(
        media, read_conditions(request), head=request.method == "HEAD"
    )
    if isinstance(target, Redirect):
        raise web.HTTPFound(target.url, headers={"Cache-Control": "private, no-store"})
    if isinstance(target, ObjectRead):
        return await relay(
            request, target, media, cache_control=request.app[SETTINGS].cache_control
        )
    try:
        return await send_file(
            request,
            target.path,
            content_type=media.content_type,
            # A media's bytes never change (a new upload is a new media), so its
            # id is a strong validator and its creation its last modification.
            etag=f'"{media.id}"',
            last_modified=media.created_at.timestamp(),
            cache_control=request.app[SETTINGS].cache_control,
            filename=media.filename,
        )
    except FileNotFoundError:
        raise NotFound(f"the file of media {media.id} is missing on disk") from None


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
