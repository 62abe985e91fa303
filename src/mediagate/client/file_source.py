"""A local file read by offset and length, piecewise, from worker threads.

Chunks go out in parallel and out of order, so each read names its offset
(`os.pread`: no shared file position). A chunk is read twice: once to hash it
(its digest header goes before its body) and once as it streams out; the
second read comes from the page cache. At most one piece per chunk in flight
is in memory, never a whole chunk.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from mediagate.client.errors import FileChanged

PIECE = 1024 * 1024


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...


@dataclass(frozen=True)
class Fingerprint:
    """What says a file is still the one an upload session was started for."""

    path: str
    size: int
    mtime_ns: int


class FileSource:
    """The bytes to upload: a path, or an open binary file that can seek."""

    def __init__(self, file: str | os.PathLike[str] | BinaryIO) -> None:
        if isinstance(file, str | os.PathLike):
            self._file: BinaryIO = open(file, "rb")  # closed by close()
            self._owned = True
        else:
            self._file = file
            self._owned = False
        self._lock = threading.Lock()
        self._fd = self._real_fd()
        self.path: Path | None = self._real_path()
        self.size = self._measure()
        self.fingerprint = self._fingerprint()

    @property
    def name(self) -> str:
        raw = getattr(self._file, "name", None)
        return Path(raw).name if isinstance(raw, str) and raw else "upload.bin"

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset` (blocking: call from a thread)."""
        if self._fd is not None:
            return os.pread(self._fd, length, offset)
        with self._lock:
            self._file.seek(offset)
            return self._file.read(length)

    def sha256(self, offset: int, length: int) -> str:
        """Hex SHA-256 of `length` bytes at `offset` (blocking: call from a thread)."""
        hasher = hashlib.sha256()
        self.hash_into(hasher, offset, length)
        return hasher.hexdigest()

    def hash_into(self, hasher: Hasher, offset: int, length: int) -> None:
        """Feed up to `length` bytes at `offset` (fewer at the end of the file) to `hasher`."""
        end = min(offset + length, self.size)
        while offset < end:
            piece = self.read_at(offset, min(PIECE, end - offset))
            if not piece:
                raise FileChanged(f"{self.name} is shorter than when the upload started")
            hasher.update(piece)
            offset += len(piece)

    async def stream(
        self, offset: int, length: int, on_piece: Callable[[int], None] | None = None
    ) -> AsyncIterator[bytes]:
        """`length` bytes at `offset`, one piece at a time, each read in a worker thread."""
        loop = asyncio.get_running_loop()
        end = offset + length
        while offset < end:
            piece = await loop.run_in_executor(None, self.read_at, offset, min(PIECE, end - offset))
            if not piece:
                raise FileChanged(f"{self.name} is shorter than when the upload started")
            offset += len(piece)
            if on_piece is not None:
                on_piece(len(piece))
            yield piece

    def check_unchanged(self) -> None:
        if self._fingerprint() != self.fingerprint or self._measure() != self.size:
            raise FileChanged(f"{self.name} changed while it was being uploaded; run again")

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def _real_fd(self) -> int | None:
        try:
            fd = self._file.fileno()
        except (AttributeError, OSError, ValueError):  # BytesIO and friends
            return None
        # A buffered reader may have read ahead; pread ignores its buffer, which is right.
        return fd

    def _real_path(self) -> Path | None:
        raw = getattr(self._file, "name", None)
        if self._fd is None or not isinstance(raw, str):
            return None
        return Path(raw).absolute()

    def _measure(self) -> int:
        if self._fd is not None:
            return os.fstat(self._fd).st_size
        with self._lock:
            return self._file.seek(0, os.SEEK_END)

    def _fingerprint(self) -> Fingerprint | None:
        """Only a named file on disk can be recognised again by a later run."""
        if self.path is None or self._fd is None:
            return None
        stat = os.fstat(self._fd)
        return Fingerprint(str(self.path), stat.st_size, stat.st_mtime_ns)
