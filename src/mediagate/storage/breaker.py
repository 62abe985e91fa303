"""A circuit breaker around a store, fed by the outcomes of real calls.

While S3 is failing, every request would otherwise wait out its own connect
timeout (and retries) before falling back: one dead S3, thousands of slow
failures. Once a call fails with `StorageUnavailable` the breaker opens and
calls fail at once; after a back-off one call goes through as a probe, and its
outcome closes the breaker or doubles the back-off (up to a ceiling).
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import structlog

from mediagate.errors import StorageUnavailable
from mediagate.storage.base import (
    ListedPart,
    NewObject,
    ObjectRead,
    PartBody,
    ReadConditions,
    StoredObject,
)
from mediagate.storage.s3 import S3Store

log = structlog.get_logger("mediagate.storage")

T = TypeVar("T")
Clock = Callable[[], float]


class CircuitBreaker:
    def __init__(
        self,
        *,
        first_backoff: float = 1.0,
        max_backoff: float = 30.0,
        clock: Clock = time.monotonic,
        on_change: Callable[[str | None], None] | None = None,
        failing_since_start: str | None = None,
    ) -> None:
        """`failing_since_start`: open from the outset (the cause is logged already)."""
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self._clock = clock
        self._backoff = first_backoff
        self._open_until: float | None = None
        self._probing = False
        self._on_change = on_change
        self.last_error = failing_since_start
        if failing_since_start is not None:
            self._open_until = clock() + first_backoff

    @property
    def healthy(self) -> bool:
        return self._open_until is None

    def allow(self) -> bool:
        """Whether a call may go out now (when open, one probe after the back-off)."""
        if self._open_until is None:
            return True
        if self._probing or self._clock() < self._open_until:
            return False
        self._probing = True
        return True

    def succeeded(self) -> None:
        if self._open_until is not None:
            log.info("storage.recovered", after_error=self.last_error)
            if self._on_change is not None:
                self._on_change(None)
        self._open_until = None
        self._probing = False
        self._backoff = self._first_backoff
        self.last_error = None

    def inconclusive(self) -> None:
        """The call failed for a reason that says nothing about the store's health."""
        self._probing = False

    def failed(self, error: str) -> None:
        if self._open_until is None:
            log.warning("storage.unavailable", error=error, retry_in=self._backoff)
            if self._on_change is not None:
                self._on_change(error)
        elif self._probing:
            self._backoff = min(self._backoff * 2, self._max_backoff)
        self._probing = False
        self._open_until = self._clock() + self._backoff
        self.last_error = error


class GuardedStore:
    """An `S3Store` whose calls to S3 pass through a circuit breaker.

    Every capability is wrapped by name, so that a new call to S3 cannot slip
    past the breaker unnoticed; only presigning, a local computation, is not.
    A call counts against S3 only for S3's own failures: when a part's body
    failed first (the client went away, sent too much, stalled; a local file
    ran short), S3 merely saw its request end early.
    """

    def __init__(self, inner: S3Store, breaker: CircuitBreaker) -> None:
        self._inner = inner
        self.breaker = breaker
        self.kind = inner.kind

    @property
    def inner(self) -> S3Store:
        return self._inner

    @property
    def control_client(self) -> Any:
        """The bucket set-up's client (`s3_bootstrap`); its calls are not guarded."""
        return self._inner.control_client

    @contextlib.contextmanager
    def _guarded(self, body: PartBody | None = None) -> Iterator[None]:
        """Fail fast while the breaker is open; feed it the outcome of the call."""
        if not self.breaker.allow():
            raise StorageUnavailable(f"{self.kind.value} is unavailable: {self.breaker.last_error}")
        try:
            yield
        except StorageUnavailable as error:
            if body is not None and body.failure is not None:
                self.breaker.inconclusive()
            else:
                self.breaker.failed(str(error))
            raise
        except BaseException:
            self.breaker.inconclusive()
            raise
        self.breaker.succeeded()

    async def _call(self, work: Callable[[], Awaitable[T]], body: PartBody | None = None) -> T:
        with self._guarded(body):
            return await work()

    async def start_upload(self, target: NewObject) -> str:
        return await self._call(lambda: self._inner.start_upload(target))

    async def put_part(
        self, key: str, upload_id: str, *, number: int, offset: int, length: int, body: PartBody
    ) -> str:
        return await self._call(
            lambda: self._inner.put_part(
                key, upload_id, number=number, offset=offset, length=length, body=body
            ),
            body,
        )

    async def complete_upload(self, key: str, upload_id: str, etags: Sequence[str]) -> StoredObject:
        return await self._call(lambda: self._inner.complete_upload(key, upload_id, etags))

    async def abort_upload(self, key: str, upload_id: str) -> None:
        await self._call(lambda: self._inner.abort_upload(key, upload_id))

    async def put_stream(self, key: str, *, length: int, body: PartBody) -> None:
        await self._call(lambda: self._inner.put_stream(key, length=length, body=body), body)

    async def delete_under(self, prefix: str) -> None:
        await self._call(lambda: self._inner.delete_under(prefix))

    async def copy_part(self, key: str, upload_id: str, *, number: int, source_key: str) -> str:
        return await self._call(
            lambda: self._inner.copy_part(key, upload_id, number=number, source_key=source_key)
        )

    async def read(self, key: str, offset: int = 0) -> AsyncIterator[bytes]:
        with self._guarded():
            async for piece in self._inner.read(key, offset):
                yield piece

    async def delete(self, key: str) -> None:
        await self._call(lambda: self._inner.delete(key))

    async def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int, head: bool = False
    ) -> str:
        # Signed locally: S3 is not asked, so an open breaker need not refuse it.
        return await self._inner.presigned_url(
            key, filename=filename, content_type=content_type, expires_in=expires_in, head=head
        )

    async def list_parts(self, key: str, upload_id: str) -> list[ListedPart]:
        return await self._call(lambda: self._inner.list_parts(key, upload_id))

    async def presigned_part_url(
        self,
        key: str,
        upload_id: str,
        *,
        number: int,
        expires_in: int,
        length: int | None = None,
        content_md5: str | None = None,
    ) -> str:
        # Signed locally, but refused while S3 fails: the client would only fail at S3
        # itself, when the server can still take the part (relay, fallback).
        if not self.breaker.allow():
            raise StorageUnavailable(f"{self.kind.value} is unavailable: {self.breaker.last_error}")
        return await self._inner.presigned_part_url(
            key,
            upload_id,
            number=number,
            expires_in=expires_in,
            length=length,
            content_md5=content_md5,
        )

    async def read_conditionally(
        self, key: str, conditions: ReadConditions, *, head: bool
    ) -> ObjectRead:
        return await self._call(lambda: self._inner.read_conditionally(key, conditions, head=head))

    async def stat(self, key: str) -> StoredObject:
        return await self._call(lambda: self._inner.stat(key))

    async def put_object(
        self, target: NewObject, body: io.BytesIO, *, content_md5: str
    ) -> StoredObject:
        return await self._call(
            lambda: self._inner.put_object(target, body, content_md5=content_md5)
        )

    async def start_checked_upload(self, target: NewObject) -> str:
        return await self._call(lambda: self._inner.start_checked_upload(target))

    async def put_checked_part(
        self, key: str, upload_id: str, *, number: int, body: io.BytesIO, content_md5: str
    ) -> str:
        return await self._call(
            lambda: self._inner.put_checked_part(
                key, upload_id, number=number, body=body, content_md5=content_md5
            )
        )

    async def complete_checked_upload(
        self, key: str, upload_id: str, etags: Sequence[str]
    ) -> StoredObject:
        return await self._call(lambda: self._inner.complete_checked_upload(key, upload_id, etags))

    async def abort_uploads(self, key: str) -> None:
        await self._call(lambda: self._inner.abort_uploads(key))


# What a migration writes to: S3 itself (`mediagate migrate`), or S3 behind the
# server's breaker (the reconciler), whose failures other uploads must notice.
S3Objects = S3Store | GuardedStore
