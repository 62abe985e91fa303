"""Where a tus upload keeps bytes that do not fill a part yet.

A tus PATCH may end anywhere, but an S3 part must be sent whole with its
length known. The bytes of a PATCH that end short of a part boundary are
appended here, flushed to disk before the PATCH is answered, and joined with
the head of the next PATCH into that part.

A tail file is named by the upload and the file offset its first byte has
(`{upload}.{start}`). It counts only while `start` is where the upload's
received parts end: once the part it belongs to is recorded, the file is
stale, whatever a crash left behind, and is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from mediagate.storage.local import FilePartBody, _off_loop, _StagingFile, _write_at, disk_errors

WRITE_SIZE = 1024 * 1024

ReadSource = Callable[[int], Awaitable[bytes]]


class TailSpool:
    def __init__(self, root: Path) -> None:
        self._root = root  # made by the first tail: native uploads never need it

    def _path(self, upload: str, start: int) -> Path:
        return self._root / f"{upload}.{start}"

    async def size(self, upload: str, start: int) -> int:
        """How many bytes from `start` the tail holds (0 if there is none)."""
        try:
            stat = await _off_loop(os.stat, self._path(upload, start))
        except FileNotFoundError:
            return 0
        return stat.st_size

    def body(self, upload: str, start: int, length: int) -> FilePartBody:
        return FilePartBody(self._path(upload, start), 0, length)

    async def append(
        self, upload: str, start: int, source: ReadSource, *, fresh: bool, limit: int | None
    ) -> int:
        """Append up to `limit` bytes (all there are if None) from `source`; how many.

        `fresh` starts the file empty. Whatever was read is written and flushed
        even when the source fails (the client went away): it is durable, and
        the upload's offset moves past it.
        """
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if fresh else 0)
        path = self._path(upload, start)
        with disk_errors("tail"):
            await _off_loop(functools.partial(self._root.mkdir, parents=True, exist_ok=True))
            fd = await _off_loop(os.open, path, flags, 0o600)
            tail = _StagingFile(fd)
            try:
                position = await _off_loop(os.lseek, fd, 0, os.SEEK_END)
                appended = 0
                pending = bytearray()
                try:
                    while limit is None or appended + len(pending) < limit:
                        want = WRITE_SIZE if limit is None else limit - appended - len(pending)
                        piece = await source(min(want, WRITE_SIZE))
                        if not piece:
                            break
                        pending += piece
                        if len(pending) >= WRITE_SIZE:
                            await tail.run(_write_at, pending, position)
                            position += len(pending)
                            appended += len(pending)
                            pending.clear()
                finally:
                    await asyncio.shield(self._flush(tail, pending, position))
                appended += len(pending)
            finally:
                tail.close()
        return appended

    @staticmethod
    async def _flush(tail: _StagingFile, pending: bytearray, position: int) -> None:
        await tail.run(_write_at, pending, position)
        await tail.run(os.fdatasync)

    async def truncate(self, upload: str, start: int, size: int) -> None:
        """Cut the tail back to `size` bytes (a PATCH whose checksum failed), if it exists."""
        with disk_errors("tail"):
            await _off_loop(_truncate_if_present, self._path(upload, start), size)

    async def discard(self, upload: str, *, keep: int | None = None) -> None:
        """Remove the upload's tails, but the one starting at `keep`."""
        await _off_loop(self._discard, upload, keep)

    def _discard(self, upload: str, keep: int | None) -> None:
        for path in self._root.glob(f"{upload}.*"):
            if path.name != f"{upload}.{keep}":
                path.unlink(missing_ok=True)


def _truncate_if_present(path: Path, size: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.truncate(path, size)
