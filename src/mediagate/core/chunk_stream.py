"""One chunk's bytes on their way from the request to the store.

The stream counts the bytes, hashes them if the client asked for a check (one
pass, as they go by), and holds them to the chunk's length: every byte any
store receives passes here, so this is where a body longer than its chunk is
stopped, whatever its source returns. Checks that can only be made at the end
run *before* the last piece is handed on: a store that reads a wrong chunk
therefore never receives its final bytes and keeps nothing of it (S3 discards
a part whose body falls short of its Content-Length).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from mediagate.errors import (
    ChunkIncomplete,
    ChunkLengthMismatch,
    DigestMismatch,
    Problem,
)

READ_SIZE = 1024 * 1024

ReadSource = Callable[[int], Awaitable[bytes]]


@dataclass(frozen=True)
class ExpectedDigests:
    """Digests a client sent with a chunk, as raw bytes (web/chunk_digests.py decodes
    them from the request's headers)."""

    md5: bytes | None = None
    sha256: bytes | None = None


class ChunkStream:
    def __init__(
        self,
        source: ReadSource,
        length: int,
        expected: ExpectedDigests,
        *,
        also_hash: Any | None = None,
    ) -> None:
        self._source = source
        self._length = length
        self._remaining = length
        self._expected = expected
        self._md5 = hashlib.md5() if expected.md5 is not None else None
        self._sha256 = hashlib.sha256() if expected.sha256 is not None else None
        self._hashers = [h for h in (self._md5, self._sha256, also_hash) if h is not None]
        self.failure: Exception | None = None

    async def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (at most READ_SIZE at a time); b"" once the chunk is complete."""
        if self._remaining == 0:
            return b""
        want = READ_SIZE if n < 0 else min(n, READ_SIZE)
        piece = await self._take(min(want, self._remaining))
        if not piece:
            self._fail(ChunkIncomplete(f"the body ended {self._remaining} bytes short"))
        if len(piece) > self._remaining:
            # Whatever the source hands over, no byte past the chunk's end
            # goes on: on local disk it would land in the next chunk.
            self._fail(self._too_long())
        self._remaining -= len(piece)
        for hasher in self._hashers:
            hasher.update(piece)
        if self._remaining == 0:
            await self._check_end()
        return piece

    async def _take(self, n: int) -> bytes:
        """Up to `n` bytes from the source; its failure becomes the client's problem."""
        try:
            return await self._source(n)
        except Problem as problem:
            self._fail(problem)
        except Exception as error:
            self._fail(ChunkIncomplete(f"reading the chunk failed: {error}"))

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while piece := await self.read(READ_SIZE):
            yield piece

    @property
    def started(self) -> bool:
        """Whether any bytes have been taken from the client (they cannot be read again)."""
        return self._remaining < self._length

    @property
    def md5(self) -> str | None:
        return self._md5.hexdigest() if self._md5 else None

    @property
    def sha256(self) -> str | None:
        return self._sha256.hexdigest() if self._sha256 else None

    async def _check_end(self) -> None:
        if await self._take(1):
            self._fail(self._too_long())
        if self._md5 and self._md5.digest() != self._expected.md5:
            self._fail(DigestMismatch(f"Content-MD5 does not match (got {self.md5})"))
        if self._sha256 and self._sha256.digest() != self._expected.sha256:
            self._fail(DigestMismatch(f"X-Chunk-SHA256 does not match (got {self.sha256})"))

    def _too_long(self) -> ChunkLengthMismatch:
        return ChunkLengthMismatch(
            f"the body is longer than the chunk ({self._length} bytes)", expected_size=self._length
        )

    def _fail(self, problem: Exception) -> NoReturn:
        self.failure = problem
        raise problem
