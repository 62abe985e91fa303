"""Finished media: look-up, listing and deletion, always on the owner's behalf."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import structlog

from mediagate.catalog.base import MediaRecords
from mediagate.core.engine import UploadEngine
from mediagate.errors import (
    BadRequest,
    MediaFailed,
    MediaNotReady,
    NotFound,
    StorageUnavailable,
)
from mediagate.models import Media, MediaState
from mediagate.storage.base import (
    BlobStore,
    ConditionalReads,
    LocalFiles,
    ObjectRead,
    Presigning,
    ReadConditions,
    Stores,
)

log = structlog.get_logger("mediagate.media")

MAX_PAGE = 200


@dataclass(frozen=True)
class Redirect:
    url: str


@dataclass(frozen=True)
class LocalFile:
    path: Path


@dataclass(frozen=True)
class MediaPage:
    items: list[Media]
    next_cursor: str | None


def encode_cursor(media: Media) -> str:
    raw = json.dumps([media.created_at.isoformat(), media.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, media_id = json.loads(raw)
        # In UTC here, so that a forged date next to the ends of time fails now.
        return datetime.fromisoformat(created_at).astimezone(UTC), str(media_id)
    except (binascii.Error, ValueError, TypeError, OverflowError) as error:
        raise BadRequest("cursor is not one this server handed out") from error


class MediaLibrary:
    def __init__(
        self,
        catalog: MediaRecords,
        stores: Stores,
        *,
        signed_url_expiry: int,
        uploads: UploadEngine,
        cdn_base_url: str | None = None,
        proxy_reads: bool = False,
    ) -> None:
        self._catalog = catalog
        self._stores = stores
        self._uploads = uploads
        self._signed_url_expiry = signed_url_expiry
        self._cdn_base_url = cdn_base_url
        self._proxy_reads = proxy_reads

    def _store(self, media: Media) -> BlobStore:
        store = self._stores.get(media.storage)
        if store is None:
            raise StorageUnavailable(
                f"media {media.id} is in {media.storage.value} storage, "
                "which this server is not configured for"
            )
        return store

    async def playback(
        self, media: Media, conditions: Callable[[], ReadConditions], *, head: bool
    ) -> Redirect | LocalFile | ObjectRead:
        """Where a player gets the bytes: a URL to go to, a file this server sends,
        or (in proxy mode) the store's answer to the player's own Range request.

        `conditions` (the player's Range and conditions) is called only for that
        store's answer: a file this server sends weighs them itself (web/ranges.py)."""
        if media.state is MediaState.FINALIZING:
            raise MediaNotReady("its last chunks are moving to S3; try again shortly")
        if media.state is MediaState.FAILED:
            raise MediaFailed(f"{media.error}; see its upload session's status")
        store = self._store(media)
        if isinstance(store, LocalFiles):
            return LocalFile(store.path(media.key))
        if self._proxy_reads and isinstance(store, ConditionalReads):
            return await store.read_conditionally(media.key, conditions(), head=head)
        if self._cdn_base_url:
            return Redirect(f"{self._cdn_base_url}/{quote(media.key)}")
        if isinstance(store, Presigning):
            url = await store.presigned_url(
                media.key,
                filename=media.filename,
                content_type=media.content_type,
                expires_in=self._signed_url_expiry,
                head=head,
            )
            return Redirect(url)
        raise StorageUnavailable(f"{media.storage.value} storage cannot serve media")

    async def get(self, user_id: str, media_id: str) -> Media:
        media = await self.by_id(media_id)
        if media.user_id != user_id:
            raise NotFound(f"no media {media_id}")
        return media

    async def by_id(self, media_id: str) -> Media:
        """Any user's media: only for callers that proved access some other way."""
        media = await self._catalog.get_media(media_id)
        if media is None:
            raise NotFound(f"no media {media_id}")
        return media

    async def page(self, user_id: str, limit: int, cursor: str | None) -> MediaPage:
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be 1..{MAX_PAGE}")
        before = decode_cursor(cursor) if cursor else None
        items = await self._catalog.list_media(user_id, limit + 1, before)
        more = len(items) > limit
        items = items[:limit]
        return MediaPage(items=items, next_cursor=encode_cursor(items[-1]) if more else None)

    async def delete(self, user_id: str, media_id: str) -> None:
        media = await self.get(user_id, media_id)
        if media.state is MediaState.FINALIZING:
            await self._uploads.delete_unfinished(media)
        else:
            await self._store(media).delete(media.key)
            if media.poster_key is not None:
                await self._store(media).delete(media.poster_key)
            await self._catalog.delete_media(media_id)
        log.info("media.deleted", media_id=media_id, user_id=user_id, storage=media.storage.value)

    async def poster(self, media: Media) -> Redirect | LocalFile:
        """Where the media's poster (a JPEG beside it, core/probing.py) is."""
        if media.poster_key is None:
            raise NotFound(f"media {media.id} has no poster")
        store = self._store(media)
        if isinstance(store, LocalFiles):
            return LocalFile(store.path(media.poster_key))
        if self._cdn_base_url:
            return Redirect(f"{self._cdn_base_url}/{quote(media.poster_key)}")
        if isinstance(store, Presigning):
            url = await store.presigned_url(
                media.poster_key,
                filename="poster.jpg",
                content_type="image/jpeg",
                expires_in=self._signed_url_expiry,
            )
            return Redirect(url)
        raise StorageUnavailable(f"{media.storage.value} storage cannot serve posters")
