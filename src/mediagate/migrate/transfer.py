"""One local file into S3: read once, hashed on the way, checked before the object exists.

Each part (or a small file whole) is read into memory, its MD5 sent as
Content-MD5 so that S3 refuses bytes damaged on the way (the one checksum that
AWS, RGW and MinIO all verify; RGW 16 ignores the x-amz-checksum-* headers), and
the whole file is fed through SHA-256 in order, in the thread that reads it.
Only when everything has been read, and the file is still the one that was
opened (same size, mtime, ctime and inode: it did not change under us), is the
object committed (PutObject / CompleteMultipartUpload); otherwise the multipart
upload is aborted and nothing appears in the bucket.

Memory: at most `in_flight` parts (or small files) are held at once, each at
most the part size. Disk reads and hashing run off the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import io
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog

from mediagate.core.chunking import ChunkPlan, plan_chunks
from mediagate.errors import Problem, StorageUnavailable
from mediagate.storage.base import MigrationTarget, NewObject, StoredObject

log = structlog.get_logger("mediagate.migrate")

T = TypeVar("T")

# A failed request is sent again (its bytes are in memory) after 0.2 s, then 0.4 s:
# enough for S3's occasional 503 SlowDown, short enough that an S3 that is away
# fails the file quickly, to be picked up by the next run.
ATTEMPTS = 3
RETRY_DELAY = 0.2


class FileRejected(Exception):
    """The file cannot be migrated as it is; the message says why."""


@dataclass(frozen=True)
class FileIdentity:
    """What must not change while a file is read (nor before its local copy is deleted)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, info: os.stat_result) -> FileIdentity:
        return cls(info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


@dataclass(frozen=True)
class Expected:
    """What the catalog says the file is, when it says anything."""

    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Uploaded:
    size: int
    sha256: str
    identity: FileIdentity


class LocalFile:
    """An open regular file, read front to back; every method blocks (run it in a thread)."""

    def __init__(self, fd: int, identity: FileIdentity) -> None:
        self._fd = fd
        self.identity = identity
        self._offset = 0
        self._sha256 = hashlib.sha256()

    @classmethod
    def open(cls, path: Path, root: Path) -> LocalFile:
        """Open `path`, refusing symbolic links and anything that resolves outside `root`."""
        if not path.resolve().is_relative_to(root):
            raise FileRejected(f"it resolves to a place outside {root}")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise FileRejected("it is a symbolic link") from None
            raise FileRejected(f"cannot open it: {error.strerror}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise FileRejected("it is not a regular file")
        return cls(fd, FileIdentity.of(info))

    def read(self, length: int) -> tuple[io.BytesIO, str]:
        """The next `length` bytes, ready to send, and their MD5 (base64, for Content-MD5).

        The bytes end up in a BytesIO that is their only owner: botocore sends a
        BytesIO as it is, and aiohttp writes it out piece by piece from its own
        buffer. A `bytes` still referenced elsewhere would be copied whole first
        (BytesIO shares it until asked for its buffer), and a bytearray is copied
        two or three times on the way to the socket: each copy of a fresh 8 MiB
        costs more than reading it (page faults), about 13 ms.
        """
        pieces = []
        wanted = length
        while wanted:
            try:
                piece = os.pread(self._fd, wanted, self._offset)
            except OSError as error:
                raise FileRejected(f"reading it failed: {error.strerror}") from None
            if not piece:
                raise FileRejected("it shrank while it was being read; it stays local")
            pieces.append(piece)
            self._offset += len(piece)
            wanted -= len(piece)
        data = b"".join(pieces)  # the piece itself when it came in one read
        del pieces
        self._sha256.update(data)
        md5 = md5_base64(data)
        body = io.BytesIO(data)
        del data  # now the BytesIO's alone: no copy when aiohttp asks for its buffer
        return body, md5

    def finish(self, expected_sha256: str | None) -> str:
        """The file's SHA-256, once it is certain the bytes read are the file's bytes."""
        if FileIdentity.of(os.fstat(self._fd)) != self.identity:
            raise FileRejected(
                "it changed while it was being read (size or modification time differ); "
                "it stays local: run again once it is stable"
            )
        digest = self._sha256.hexdigest()
        if expected_sha256 is not None and digest != expected_sha256:
            raise FileRejected(
                f"its SHA-256 is {digest} but its record says {expected_sha256}: "
                "the local copy is damaged; it stays local"
            )
        return digest

    def read_whole(self, expected_sha256: str | None) -> tuple[io.BytesIO, str, str]:
        """A small file at once: its bytes, their MD5 (base64) and SHA-256, in one thread hop."""
        body, md5 = self.read(self.identity.size)
        return body, md5, self.finish(expected_sha256)

    def close(self) -> None:
        os.close(self._fd)


def md5_base64(data: bytes | bytearray) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class Uploader:
    def __init__(
        self,
        s3: MigrationTarget,
        *,
        part_size: int,
        in_flight: int,
        on_sent: Callable[[int], None],
    ) -> None:
        self._s3 = s3
        self._part_size = part_size
        # Bounds the requests (and the parts held in memory) of all files together.
        self._slots = asyncio.Semaphore(in_flight)
        self._on_sent = on_sent

    async def upload(
        self, path: Path, root: Path, target: NewObject, expected: Expected
    ) -> Uploaded:
        file = await asyncio.to_thread(LocalFile.open, path, root)
        try:
            size = file.identity.size
            if expected.size is not None and size != expected.size:
                raise FileRejected(f"it is {size} bytes but its record says {expected.size}")
            plan = plan_chunks(size, self._part_size)
            if plan.total_chunks <= 1:
                sha256, stored = await self._put_whole(target, file, expected.sha256)
            else:
                sha256, stored = await self._put_parts(target, file, plan, expected.sha256)
        finally:
            file.close()
        if stored.size != size:
            raise FileRejected(f"S3 holds {stored.size} bytes after the upload, the file {size}")
        return Uploaded(size=size, sha256=sha256, identity=file.identity)

    async def _put_whole(
        self, target: NewObject, file: LocalFile, expected_sha256: str | None
    ) -> tuple[str, StoredObject]:
        async with self._slots:
            body, md5, sha256 = await asyncio.to_thread(file.read_whole, expected_sha256)
            stored = await with_retries(lambda: self._s3.put_object(target, body, content_md5=md5))
        self._on_sent(stored.size)
        return sha256, stored

    async def _put_parts(
        self, target: NewObject, file: LocalFile, plan: ChunkPlan, expected_sha256: str | None
    ) -> tuple[str, StoredObject]:
        await self._s3.abort_uploads(target.key)
        upload_id = await self._s3.start_checked_upload(target)
        sending: list[asyncio.Task[str]] = []
        try:
            for number in range(plan.total_chunks):
                length = min(plan.chunk_size, file.identity.size - number * plan.chunk_size)
                await self._slots.acquire()
                try:
                    raise_first_failure(sending)
                    body, md5 = await asyncio.to_thread(file.read, length)
                except BaseException:
                    self._slots.release()
                    raise
                part = self._send_part(target.key, upload_id, number, body, length, md5)
                sending.append(asyncio.create_task(part))
            sha256 = await asyncio.to_thread(file.finish, expected_sha256)
            etags = await asyncio.gather(*sending)
            stored = await self._s3.complete_checked_upload(target.key, upload_id, etags)
        except BaseException:
            for task in sending:
                task.cancel()
            await asyncio.gather(*sending, return_exceptions=True)
            await self._abandon(target.key, upload_id)
            raise
        return sha256, stored

    async def _send_part(
        self, key: str, upload_id: str, number: int, body: io.BytesIO, length: int, md5: str
    ) -> str:
        try:
            etag = await with_retries(
                lambda: self._s3.put_checked_part(
                    key, upload_id, number=number, body=body, content_md5=md5
                )
            )
        finally:
            self._slots.release()
        self._on_sent(length)
        return etag

    async def _abandon(self, key: str, upload_id: str) -> None:
        try:
            await self._s3.abort_upload(key, upload_id)
        except Problem as error:
            # The next run aborts it (see `S3Store.abort_uploads`); so would a
            # bucket lifecycle rule for incomplete multipart uploads.
            log.warning("migrate.abort_failed", key=key, error=error.detail)


def raise_first_failure(tasks: list[asyncio.Task[str]]) -> None:
    """Stop reading a file as soon as one of its parts has failed."""
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            task.result()


async def with_retries(send: Callable[[], Awaitable[T]]) -> T:
    for attempt in range(ATTEMPTS - 1):
        try:
            return await send()
        except StorageUnavailable:
            await asyncio.sleep(RETRY_DELAY * 2**attempt)
    return await send()
