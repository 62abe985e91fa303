"""Probing a stored media: its facts, whether it is faststart, its poster.

The probe reads the media where it is kept: a local file by its path, an S3 object
through a presigned URL, with range requests (ffprobe's HTTP reader seeks; the
faststart check reads a few box headers). A faststart MP4 costs its index and a few
frames, never the whole file (bench/probe.py). At most `concurrency` probes run at
once, in child processes (core/probe.py).
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import structlog

from mediagate.catalog.base import MediaRecords
from mediagate.core.faststart import is_faststart
from mediagate.core.media_policy import MediaPolicy
from mediagate.core.probe import (
    Limits,
    ProbeFailed,
    Source,
    ffprobe_command,
    parse_ffprobe,
    poster_command,
    poster_offset,
    run_limited,
)
from mediagate.core.session_locks import SessionLocks
from mediagate.errors import Problem, StorageUnavailable
from mediagate.models import Media, MediaFacts, MediaKind
from mediagate.storage.base import BlobStore, LocalFiles, NewObject, Presigning, Route, Stores

log = structlog.get_logger("mediagate.probe")

# Containers whose index may come before or after the data.
ISO_CONTAINERS = ("mov", "mp4")
POSTER_NAME = ".poster.jpg"
# How long the probe's presigned URL lives: longer than any probe may run.
URL_LIFETIME = 900


@functools.cache
def _trusting(ca_file: str | None) -> ssl.SSLContext:
    """The certificates S3's URLs are checked against, loaded once."""
    return ssl.create_default_context(cafile=ca_file)


def poster_key(media_key: str) -> str:
    """Beside the media, in its folder: a file name never starts with a dot
    (filenames.py), so no media is ever called this."""
    folder, _, _ = media_key.rpartition("/")
    return f"{folder}/{POSTER_NAME}" if folder else POSTER_NAME


class MediaProber:
    def __init__(
        self,
        stores: Stores,
        *,
        limits: Limits,
        concurrency: int,
        policy: MediaPolicy | None = None,
        posters: bool = True,
    ) -> None:
        self._stores = stores
        self.policy = policy or MediaPolicy()
        self._limits = limits
        self._slots = asyncio.Semaphore(concurrency)
        self._posters = posters
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def probe(self, media: Media) -> Media:
        """The media with what probing found: its facts and poster, or `probe_error`.

        Raises only StorageUnavailable (S3 does not answer): the caller tries again
        later (the finalizer, the next background round)."""
        store = self._stores.get(media.storage)
        if store is None:
            error = f"{media.storage.value} storage is not configured on this server"
            return media.model_copy(update={"probe_error": error, "facts": None})
        async with self._slots:
            try:
                source = await self._source(store, media)
                facts = parse_ffprobe(await run_limited(ffprobe_command(source), self._limits))
                if any(part in facts.container.split(",") for part in ISO_CONTAINERS):
                    faststart = await is_faststart(self._reader(source), media.size)
                    facts = facts.model_copy(update={"faststart": faststart})
                poster = None
                if self._posters and self._wants_poster(facts):
                    poster = await self._poster(store, media, source, facts)
            except ProbeFailed as failure:
                log.info("media.probe_failed", media_id=media.id, error=str(failure))
                return media.model_copy(update={"probe_error": str(failure), "facts": None})
        log.info("media.probed", media_id=media.id, kind=facts.kind.value)
        return media.model_copy(
            update={"facts": facts.model_dump_json(), "probe_error": None, "poster_key": poster}
        )

    def _wants_poster(self, facts: MediaFacts) -> bool:
        """A video the policy keeps (a refused one is deleted at once)."""
        return facts.kind is MediaKind.VIDEO and self.policy.refusal(facts, None) is None

    async def _source(self, store: BlobStore, media: Media) -> Source:
        if isinstance(store, LocalFiles):
            # "file:" so that no part of the path reads as another protocol's prefix.
            return Source(f"file:{store.path(media.key)}")
        if isinstance(store, Presigning):
            # S3 answers now, so that ffprobe's failure is the file's, not S3's (which
            # would leave the media to be probed again later). A HEAD, through the same
            # signer and endpoint: a range GET would cost some stores (moto) a read of
            # the whole object.
            head = await self._signed_url(store, media, head=True)
            await self._ask(head, store.route(head), method="HEAD", expected=200, what="a HEAD")
            url = await self._signed_url(store, media)
            return Source(url, store.route(url))
        raise ProbeFailed(f"{media.storage.value} storage cannot be probed")

    @staticmethod
    async def _signed_url(store: Presigning, media: Media, *, head: bool = False) -> str:
        return await store.presigned_url(
            media.key,
            filename=media.filename,
            content_type=media.content_type,
            expires_in=URL_LIFETIME,
            head=head,
        )

    def _reader(self, source: Source) -> Callable[[int, int], Awaitable[bytes]]:
        route = source.route
        if route is None:
            path = Path(source.location.removeprefix("file:"))
            return lambda offset, length: asyncio.to_thread(_pread, path, offset, length)

        async def read(offset: int, length: int) -> bytes:
            ranged = {"Range": f"bytes={offset}-{offset + length - 1}"}
            return await self._ask(
                source.location, route, headers=ranged, expected=206, what="a range read"
            )

        return read

    async def _ask(
        self,
        url: str,
        route: Route,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        expected: int,
        what: str,
    ) -> bytes:
        """The body of S3's answer to `what`; StorageUnavailable if S3 cannot answer (a
        later probe may), ProbeFailed if it answers otherwise than `expected`."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        try:
            async with self._http.request(
                method, url, headers=headers, proxy=route.proxy, ssl=_trusting(route.ca_file)
            ) as answer:
                if answer.status >= 500:
                    raise StorageUnavailable(f"S3 answered {answer.status} to {what}")
                if answer.status != expected:
                    raise ProbeFailed(f"{what} of the object answered {answer.status}")
                return await answer.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise StorageUnavailable(f"{what} of the object failed: {error}") from None

    async def _poster(
        self, store: BlobStore, media: Media, source: Source, facts: MediaFacts
    ) -> str | None:
        """A JPEG of one frame stored beside the media; None (and the media probed all
        the same) if the frame cannot be had."""
        at = poster_offset(facts.duration_s)
        try:
            image = await run_limited(poster_command(source, at=at), self._limits)
        except ProbeFailed as failure:
            log.info("media.poster_failed", media_id=media.id, error=str(failure))
            return None
        if not image:
            return None
        key = poster_key(media.key)
        try:
            await store_bytes(store, key, image, owner=media.user_id)
        except Problem as problem:
            log.warning("media.poster_not_stored", media_id=media.id, error=str(problem))
            return None
        return key


# How many unprobed media one round of the background probe takes on.
SWEEP_BATCH = 20
# How often the background probe looks for media never probed.
SWEEP_INTERVAL = 30.0


async def probe_unprobed(catalog: MediaRecords, prober: MediaProber, locks: SessionLocks) -> int:
    """Probe ready media that were never probed (imported, made while probing was off,
    or by a path that does not probe); how many were recorded. Each is recorded once,
    with its facts or its probe_error, so none is probed again; only S3 being away
    leaves one for the next round. One instance's round at a time (no media probed
    twice), one media at a time, batch after batch until none is left (a library
    upgraded from before probing is probed in one go), leaving the other probing slots
    to the uploads finishing meanwhile."""
    async with locks.exclusive("probe", "round") as mine:
        return await _probe_all(catalog, prober) if mine else 0


async def _probe_all(catalog: MediaRecords, prober: MediaProber) -> int:
    recorded = 0
    while True:
        batch = await catalog.unprobed_media(SWEEP_BATCH)
        for media in batch:
            try:
                probed = await prober.probe(media)
            except StorageUnavailable:
                return recorded
            except Problem as problem:
                probed = media.model_copy(update={"probe_error": str(problem)})
            # Recorded or not (another instance was first), it is probed now: each batch
            # is new media, so the loop ends.
            if await catalog.record_probe(probed):
                recorded += 1
        if len(batch) < SWEEP_BATCH:
            return recorded


async def store_bytes(store: BlobStore, key: str, data: bytes, *, owner: str) -> None:
    """A small object, through the upload path every store has."""
    target = NewObject(key=key, content_type="image/jpeg", owner=owner, filename="poster.jpg")
    upload_id = await store.start_upload(target)
    etag = await store.put_part(
        key, upload_id, number=0, offset=0, length=len(data), body=BytesBody(data)
    )
    await store.complete_upload(key, upload_id, [etag])


class BytesBody:
    """A part's bytes already in memory (a poster of tens of KiB)."""

    failure: Exception | None = None

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = len(self._data)
        piece, self._data = self._data[:n], self._data[n:]
        return piece

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._data:
            yield await self.read()


def _pread(path: Path, offset: int, length: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as error:
        raise ProbeFailed(f"the file cannot be read: {error.strerror}") from None
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)
