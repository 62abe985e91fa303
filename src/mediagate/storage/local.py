"""Local-disk store: the embedded default, and where chunks go when S3 cannot take them.

An upload is one staging file per session; chunk n is written at its offset
(no part files to join later, no second copy), so parallel chunks write
concurrently. Each chunk is flushed to disk before it is acknowledged. On
complete the staging file is renamed into `{root}/{key}`, atomically. Disk
work runs in the default thread pool, never on the event loop.

Two limits of the disk are checked before they are met, not after: the largest
file its file system holds (ext4: 16 TiB; also this process's RLIMIT_FSIZE), at
the start of an upload (413), and the free space the server keeps
(MEDIAGATE_MIN_FREE_DISK), before each write (507).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, TypeVar

import structlog

from mediagate.config import format_size
from mediagate.errors import (
    FileTooLarge,
    FileTooLargeForStorage,
    NotFound,
    Problem,
    StorageFull,
    StorageUnavailable,
)
from mediagate.models import StorageKind
from mediagate.storage.base import NewObject, PartBody, StoredObject

T = TypeVar("T")
log = structlog.get_logger("mediagate.storage")

STAGING_DIR = ".staging"
# Pieces from the network are gathered up to this size before each write, so
# that a chunk costs few thread-pool hops.
WRITE_SIZE = 1024 * 1024
READ_SIZE = 1024 * 1024


@contextlib.contextmanager
def disk_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError as error:
        # The path stays in the server's log: clients need not learn the layout.
        log.warning("local.missing", operation=operation, path=str(error.filename))
        raise NotFound(f"local {operation}: the file is gone") from error
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(f"local {operation}: the disk is full") from error
        if error.errno == errno.EFBIG:
            raise FileTooLargeForStorage(
                "the file is larger than this server's disk can hold in one file; abort the upload"
            ) from error
        raise StorageUnavailable(f"local {operation} failed: {error.strerror}") from error


async def _off_loop(work: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, work, *args)


def object_etag(stat: os.stat_result) -> str:
    return f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'


class LocalStore:
    kind = StorageKind.LOCAL

    def __init__(self, root: Path, *, min_free: int = 0) -> None:
        """`min_free`: bytes of the disk that writes leave free."""
        self.root = root.resolve()
        self.min_free = min_free
        self._staging = self.root / STAGING_DIR
        self._staging.mkdir(parents=True, exist_ok=True)
        self._sparse = _makes_sparse_files(self._staging)

    async def free_space(self) -> int:
        """Bytes this process may still write to the disk."""
        with disk_errors("statvfs"):
            return await _off_loop(_free_bytes, self.root)

    async def check_new_upload(self, size: int) -> None:
        """Refuse an upload of `size` bytes that this disk could never hold as one file
        (413, naming the limit), or that would start below the free-space floor (507)."""
        if self._sparse:
            with disk_errors("probe"):
                limit = await _off_loop(_largest_file, self._staging, size)
            if limit is not None:
                raise FileTooLarge(
                    f"{size} bytes declared; this server's disk holds files of at most "
                    f"{limit} bytes ({format_size(limit)})",
                    max_size=limit,
                )
        await self._keep_free(0)

    async def _keep_free(self, length: int) -> None:
        free = await self.free_space()
        if free - length < self.min_free or free == 0:
            raise StorageFull(
                f"local disk: {format_size(free)} free, {format_size(length)} to write, "
                f"{format_size(self.min_free)} kept free (MEDIAGATE_MIN_FREE_DISK)"
            )

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path.is_relative_to(self._staging):
            raise NotFound(f"no local object {key!r}")
        return path

    def _staging_path(self, upload_id: str) -> Path:
        return self._staging / uuid.UUID(upload_id).hex

    async def start_upload(self, target: NewObject) -> str:
        upload_id = str(uuid.uuid4())
        with disk_errors("create"):
            await _off_loop(self._staging_path(upload_id).touch, 0o600, False)
        return upload_id

    async def put_part(
        self, key: str, upload_id: str, *, number: int, offset: int, length: int, body: PartBody
    ) -> str:
        await self._keep_free(length)
        with disk_errors("write"):
            # O_CREAT: chunks spilled from an S3 session start their staging file.
            fd = await _off_loop(
                os.open, self._staging_path(upload_id), os.O_WRONLY | os.O_CREAT, 0o600
            )
            staging = _StagingFile(fd)
            try:
                position = offset
                pending = bytearray()
                async for piece in body:
                    pending += piece
                    if len(pending) >= WRITE_SIZE:
                        # Written from the buffer itself: cleared only once the write returned.
                        await staging.run(_write_at, pending, position)
                        position += len(pending)
                        pending.clear()
                await staging.run(_write_at, pending, position)
                await staging.run(os.fdatasync)
            finally:
                staging.close()
        return f'"{number}-{length:x}"'

    async def complete_upload(self, key: str, upload_id: str, etags: Sequence[str]) -> StoredObject:
        target = self.path(key)
        with disk_errors("complete"):
            await _off_loop(_publish, self._staging_path(upload_id), target)
            stat = await _off_loop(os.stat, target)
        return StoredObject(size=stat.st_size, etag=object_etag(stat))

    async def abort_upload(self, key: str, upload_id: str) -> None:
        with disk_errors("abort"):
            await _off_loop(self._staging_path(upload_id).unlink, True)

    async def staged_uploads(self, idle_for: float) -> list[str]:
        """Ids of the staged uploads not written to for `idle_for` seconds."""
        with disk_errors("list"):
            return await _off_loop(_idle_files, self._staging, idle_for)

    async def read(self, key: str, offset: int = 0) -> AsyncIterator[bytes]:
        with disk_errors("read"):
            file = await _off_loop(_open_for_reading, self.path(key))
            try:
                await _off_loop(file.seek, offset)
                while piece := await _off_loop(file.read, READ_SIZE):
                    yield piece
            finally:
                file.close()

    def part_body(self, upload_id: str, offset: int, length: int) -> FilePartBody:
        """A staged part's bytes, to send on to another store."""
        return FilePartBody(self._staging_path(upload_id), offset, length)

    async def delete(self, key: str) -> None:
        with disk_errors("delete"):
            await _off_loop(_remove_with_folder, self.path(key))


class _StagingFile:
    """An open staging file whose blocking calls run in the thread pool.

    A cancelled request cannot stop a call already running in a thread, so the
    file descriptor is closed only after that call returns: closed earlier, its
    number could be reused by another file and the late write land there.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._running: asyncio.Future[None] | None = None

    async def run(self, work: Callable[..., None], *args: object) -> None:
        self._running = asyncio.get_running_loop().run_in_executor(None, work, self._fd, *args)
        # Shielded: cancelling the request must not mark this future done early.
        await asyncio.shield(self._running)

    def close(self) -> None:
        if self._running is not None and not self._running.done():
            self._running.add_done_callback(lambda _: os.close(self._fd))
        else:
            os.close(self._fd)


def _free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _makes_sparse_files(folder: Path) -> bool:
    """Whether extending a file allocates nothing here (ext4, XFS, btrfs, tmpfs do; FAT
    writes zeros), so that probing the largest file costs no disk."""
    with tempfile.TemporaryFile(dir=folder) as probe:
        if not _extends_to(probe.fileno(), 1024 * 1024):
            return True  # a file-size limit under 1 MiB: probing it costs nothing either
        return os.fstat(probe.fileno()).st_blocks * 512 < 64 * 1024


def _largest_file(folder: Path, wanted: int) -> int | None:
    """None if a file of `wanted` bytes fits on `folder`'s file system (and under this
    process's RLIMIT_FSIZE), else the largest size that does.

    statvfs does not tell, nor does pathconf (ext4 answers 64 bits for a 16 TiB
    limit): an unnamed sparse file is extended to the size, which fails with EFBIG
    past the limit, and a binary search finds the limit (about 45 calls, on refusal only)."""
    with tempfile.TemporaryFile(dir=folder) as probe:
        if _extends_to(probe.fileno(), wanted):
            return None
        fits, too_large = 0, wanted
        while too_large - fits > 1:
            middle = (fits + too_large) // 2
            if _extends_to(probe.fileno(), middle):
                fits = middle
            else:
                too_large = middle
        return fits


def _extends_to(fd: int, size: int) -> bool:
    try:
        os.ftruncate(fd, size)
    except OSError as error:
        if error.errno == errno.EFBIG:
            return False
        raise
    return True


def _open_for_reading(path: Path) -> BinaryIO:
    return open(path, "rb")  # closed by the reader's finally


def _write_at(fd: int, data: bytes | bytearray, position: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        view = view[written:]
        position += written


def _publish(staging: Path, target: Path) -> None:
    """Make the staged file durable, then move it into place in one rename."""
    if not staging.exists() and target.exists():
        return  # an earlier complete got this far before a crash
    with open(staging, "rb+") as file:
        os.fsync(file.fileno())
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _idle_files(folder: Path, idle_for: float) -> list[str]:
    before = time.time() - idle_for
    idle = []
    for entry in os.scandir(folder):
        try:
            upload_id = str(uuid.UUID(hex=entry.name))
            if entry.stat().st_mtime < before:
                idle.append(upload_id)
        except (ValueError, FileNotFoundError):
            continue  # not one of ours, or removed meanwhile
    return idle


def _remove_with_folder(path: Path) -> None:
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


class FilePartBody:
    """A region of a file as a `PartBody`, read piecewise off the event loop."""

    failure: Exception | None = None

    def __init__(self, path: Path, offset: int, length: int) -> None:
        self._path = path
        self._position = offset
        self._remaining = length

    async def read(self, n: int = -1) -> bytes:
        size = READ_SIZE if n < 0 else min(n, READ_SIZE)
        size = min(size, self._remaining)
        if size == 0:
            return b""
        try:
            with disk_errors("read"):
                piece = await _off_loop(_read_at, self._path, size, self._position)
        except Problem as error:
            # The file's failure, not the receiving store's: it must not count against S3.
            self.failure = error
            raise
        if not piece:
            self.failure = StorageUnavailable(f"{self._path} is shorter than expected")
            raise self.failure
        self._position += len(piece)
        self._remaining -= len(piece)
        return piece

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while piece := await self.read(READ_SIZE):
            yield piece


def _read_at(path: Path, size: int, position: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, position)
    finally:
        os.close(fd)
