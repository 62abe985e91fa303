"""A circuit breaker around a store, fed by the outcomes of real calls.

It guards the primary store, whatever its kind. While S3 (say) is failing, every
request would otherwise wait out its own connect timeout (and retries) before
falling back: one dead S3, thousands of slow failures. Once a call fails with
`StorageUnavailable` the breaker opens and calls fail at once; after a back-off one
call goes through as a probe, and its outcome closes the breaker or doubles the
back-off (up to a ceiling).
"""

from __future__ import annotations

import contextlib
import functools
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import structlog

from mediagate.errors import StorageUnavailable
from mediagate.models import StorageKind
from mediagate.storage.base import (
    BlobStore,
    ConditionalReads,
    DirectParts,
    ListedPart,
    LocalFiles,
    NewObject,
    ObjectRead,
    PartBody,
    PartCopying,
    Presigning,
    ReadConditions,
    Remainders,
    Route,
    StoredObject,
    VerifiedWrites,
)

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


class _Guard:
    """The breaker in front of a store, and how each call passes it."""

    breaker: CircuitBreaker
    kind: StorageKind

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


class GuardedStore(_Guard):
    """A `BlobStore` whose calls pass through a circuit breaker: the primary store,
    whatever its kind, so that while it fails new uploads go to local disk at once.

    Made by `guard`, which adds the optional capabilities of the store it guards and
    no others. Every call is wrapped by name, so that a new call to the store cannot
    slip past the breaker unnoticed; only what the store computes locally (a presigned
    URL, a local file's path) is not. A call counts against the store only for its own
    failures: when a part's body failed first (the client went away, sent too much,
    stalled; a local file ran short), the store merely saw its request end early.
    """

    def __init__(self, inner: BlobStore, breaker: CircuitBreaker) -> None:
        self._inner = inner
        self.breaker = breaker
        self.kind = inner.kind

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

    async def read(self, key: str, offset: int = 0) -> AsyncIterator[bytes]:
        with self._guarded():
            async for piece in self._inner.read(key, offset):
                yield piece

    async def delete(self, key: str) -> None:
        await self._call(lambda: self._inner.delete(key))


class _GuardedPresigning(_Guard):
    _inner: Presigning

    def route(self, url: str) -> Route:
        return self._inner.route(url)

    async def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int, head: bool = False
    ) -> str:
        # Signed locally: the store is not asked, so an open breaker need not refuse it.
        return await self._inner.presigned_url(
            key, filename=filename, content_type=content_type, expires_in=expires_in, head=head
        )


class _GuardedPartCopying(_Guard):
    _inner: PartCopying

    async def copy_part(self, key: str, upload_id: str, *, number: int, source_key: str) -> str:
        return await self._call(
            lambda: self._inner.copy_part(key, upload_id, number=number, source_key=source_key)
        )


class _GuardedRemainders(_Guard):
    _inner: Remainders

    async def put_stream(self, key: str, *, length: int, body: PartBody) -> None:
        await self._call(lambda: self._inner.put_stream(key, length=length, body=body), body)

    async def delete_under(self, prefix: str) -> None:
        await self._call(lambda: self._inner.delete_under(prefix))


class _GuardedDirectParts(_Guard):
    _inner: DirectParts

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


class _GuardedConditionalReads(_Guard):
    _inner: ConditionalReads

    async def read_conditionally(
        self, key: str, conditions: ReadConditions, *, head: bool
    ) -> ObjectRead:
        return await self._call(lambda: self._inner.read_conditionally(key, conditions, head=head))


class _GuardedLocalFiles(_Guard):
    _inner: LocalFiles

    def path(self, key: str) -> Path:
        return self._inner.path(key)  # a name on this server's disk: nothing is asked


class _GuardedVerifiedWrites(_Guard):
    _inner: VerifiedWrites

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


# Each optional capability of storage/base.py, and its guarded calls.
_CAPABILITIES: tuple[tuple[type, type[_Guard]], ...] = (
    (Presigning, _GuardedPresigning),
    (PartCopying, _GuardedPartCopying),
    (Remainders, _GuardedRemainders),
    (ConditionalReads, _GuardedConditionalReads),
    (LocalFiles, _GuardedLocalFiles),
    (VerifiedWrites, _GuardedVerifiedWrites),
    (DirectParts, _GuardedDirectParts),
)


def guard(store: BlobStore, breaker: CircuitBreaker) -> GuardedStore:
    """`store` behind `breaker`, with the optional capabilities `store` has."""
    wrappers = tuple(
        wrapper for capability, wrapper in _CAPABILITIES if isinstance(store, capability)
    )
    return _guarded_class(wrappers)(store, breaker)


@functools.cache
def _guarded_class(wrappers: tuple[type[_Guard], ...]) -> type[GuardedStore]:
    made = type("GuardedStore", (GuardedStore, *wrappers), {})
    assert issubclass(made, GuardedStore)
    return made
