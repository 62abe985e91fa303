"""A media saved to a local file, resumably.

Bytes go to `<file>.part`, renamed once complete; a re-run (or a retry) asks
with `Range` only for what the `.part` file lacks.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import aiohttp

from mediagate.client.api import error_from
from mediagate.client.errors import ConnectionFailed
from mediagate.client.models import Media

if TYPE_CHECKING:
    from mediagate.client.api import MediagateClient

PIECE = 1024 * 1024


async def download(
    client: MediagateClient,
    media_id: str,
    destination: str | os.PathLike[str] | None,
    on_progress: Callable[[int, int], None] | None,
) -> Path:
    media = await client.info(media_id)
    target = _target(media, destination)
    partial = target.with_name(target.name + ".part")

    async def attempt() -> None:
        await _fetch_rest(client, media, partial, on_progress)

    await client.retrying(attempt)
    await asyncio.to_thread(partial.replace, target)
    return target


def _target(media: Media, destination: str | os.PathLike[str] | None) -> Path:
    # The server already stripped path parts from the name; strip again, it costs nothing.
    name = Path(media.filename).name or media.media_id
    if destination is None:
        return Path(name)
    path = Path(destination)
    return path / name if path.is_dir() else path


async def _fetch_rest(
    client: MediagateClient,
    media: Media,
    partial: Path,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    """Append to `partial` what it lacks of the media (all of it if the server ignores Range)."""
    have = await asyncio.to_thread(_kept_bytes, partial, media.size)
    if have == media.size:
        return
    headers = {"Range": f"bytes={have}-"} if have else {}
    # An S3 media answers with a redirect to a presigned URL; aiohttp follows it and
    # drops the Authorization header on the way to another origin.
    url = client.url(f"media/stream/{media.media_id}")
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
                        on_progress(have, media.size)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError):
                # Kept in `partial`: the retry asks for the rest only.
                raise ConnectionFailed(client.server, "the connection broke mid-download") from None
    if have != media.size:
        raise ConnectionFailed(client.server, f"the download stopped at {have} of {media.size}")


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
