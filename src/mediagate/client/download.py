"""A media saved to a local file, resumably.

Bytes go to `<file>.part`, renamed once complete; a re-run (or a retry) asks
with `Range` only for what the `.part` file lacks.

The server's word is never a path: the file is named after the media's
filename sanitised as the server sanitises it (last path component, no
leading dots, no control characters), and an existing file is replaced only
if the caller named it or asked for it (`overwrite`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import aiohttp

from mediagate.client.errors import ConnectionFailed, TargetExists
from mediagate.client.http import error_from
from mediagate.client.models import Media
from mediagate.filenames import sanitize_filename  # a leaf: the server's own rule

PIECE = 1024 * 1024
T = TypeVar("T")


class MediaCalls(Protocol):
    """What a download needs of the client (`MediagateClient` is one)."""

    server: str

    async def info(self, media_id: str) -> Media: ...

    def url(self, path: str) -> str: ...

    def request(
        self, method: str, url: str, **kwargs: Any
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]: ...

    async def retrying(self, attempt: Callable[[], Awaitable[T]]) -> T: ...


async def download(
    client: MediaCalls,
    media_id: str,
    destination: str | os.PathLike[str] | None,
    on_progress: Callable[[int, int], None] | None,
    overwrite: bool = False,
) -> Path:
    media = await client.info(media_id)
    target, named = _target(media, destination)
    replace = overwrite or named
    if not replace and await asyncio.to_thread(os.path.lexists, target):
        raise TargetExists(target)  # before the download, not after it
    partial = target.with_name(target.name + ".part")

    async def attempt() -> None:
        await _fetch_rest(client, media_id, media.size, partial, on_progress)

    await client.retrying(attempt)
    await asyncio.to_thread(_put_in_place, partial, target, replace)
    return target


def _target(media: Media, destination: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """Where to save the media, and whether the caller named that very file."""
    name = sanitize_filename(media.filename)
    if destination is None:
        return Path(name), False
    path = Path(destination)
    if path.is_dir():
        return path / name, False
    return path, True


def _put_in_place(partial: Path, target: Path, replace: bool) -> None:
    if replace:
        partial.replace(target)
        return
    # A link fails if the target appeared meanwhile, where a rename would replace it.
    try:
        os.link(partial, target)
    except FileExistsError:
        raise TargetExists(target) from None
    except OSError:  # a file system without hard links (FAT, some network shares)
        if os.path.lexists(target):
            raise TargetExists(target) from None
        partial.rename(target)
        return
    partial.unlink()


async def _fetch_rest(
    client: MediaCalls,
    media_id: str,
    size: int,
    partial: Path,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    """Append to `partial` what it lacks of the media (all of it if the server ignores Range)."""
    have = await asyncio.to_thread(_kept_bytes, partial, size)
    if have == size:
        await asyncio.to_thread(partial.touch)  # a 0-byte media has nothing to fetch
        return
    headers = {"Range": f"bytes={have}-"} if have else {}
    # An S3 media answers with a redirect to a presigned URL; aiohttp follows it and
    # drops the Authorization header on the way to another origin.
    url = client.url(f"media/stream/{media_id}")
    async with client.request("GET", url, headers=headers) as response:
        if response.status == 206 and _range_start(response.headers.get("Content-Range")) == have:
            mode = "ab"
        elif response.status == 200:
            mode, have = "wb", 0
        else:
            raise await error_from(response)
        with await asyncio.to_thread(partial.open, mode) as out:
            try:
                async for piece in response.content.iter_chunked(PIECE):
                    await asyncio.to_thread(_write, out, piece)
                    have += len(piece)
                    if on_progress is not None:
                        on_progress(have, size)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError):
                # Kept in `partial`: the retry asks for the rest only.
                raise ConnectionFailed(client.server, "the connection broke mid-download") from None
    if have != size:
        raise ConnectionFailed(client.server, f"the download stopped at {have} of {size}")


def _kept_bytes(partial: Path, size: int) -> int:
    """How much an earlier attempt left in `partial` (more than the media holds: start over)."""
    try:
        have = partial.stat().st_size
    except FileNotFoundError:
        return 0
    if have > size:
        partial.unlink()
        return 0
    return have


def _write(out: IO[bytes], piece: bytes) -> None:
    out.write(piece)


def _range_start(content_range: str | None) -> int | None:
    """The first byte of `bytes first-last/size`, or None."""
    if not content_range or not content_range.startswith("bytes "):
        return None
    first = content_range[6:].split("-", 1)[0]
    return int(first) if first.isdigit() else None
