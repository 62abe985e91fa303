"""The `BlobStore` protocol: what the engine needs from a place that keeps bytes.

A store receives a file as numbered parts, possibly in parallel and out of
order, then assembles them. Stores raise `mediagate.errors.Problem`s
(translated at their edge), never their client library's exceptions.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from mediagate.models import StorageKind


class PartBody(Protocol):
    """A part's bytes as a stream: read in pieces or iterated, never held whole.

    `failure` is set when the body itself failed (the client went away, or the
    bytes did not match their digest): the store's call then fails through no
    fault of the store, and the store re-raises that failure as it is.
    """

    failure: Exception | None

    async def read(self, n: int = -1) -> bytes: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True)
class NewObject:
    """What a store is told about the object an upload will become."""

    key: str
    content_type: str
    owner: str
    filename: str


@dataclass(frozen=True)
class StoredObject:
    size: int
    etag: str


@dataclass(frozen=True)
class ListedPart:
    """A part the store holds of an unfinished upload: its number (0-based), size, ETag."""

    number: int
    size: int
    etag: str


class BlobStore(Protocol):
    kind: StorageKind

    async def start_upload(self, target: NewObject) -> str:
        """Begin an upload; returns the store's id for it."""

    async def put_part(
        self, key: str, upload_id: str, *, number: int, offset: int, length: int, body: PartBody
    ) -> str:
        """Store part `number` (0-based) of `length` bytes at `offset`; returns its ETag.

        Sending a part again replaces it.
        """

    async def complete_upload(self, key: str, upload_id: str, etags: Sequence[str]) -> StoredObject:
        """Assemble the parts, given their ETags in order, into the object at `key`."""

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Discard an unfinished upload and all its parts."""

    def read(self, key: str, offset: int = 0) -> AsyncIterator[bytes]:
        """The object's bytes from `offset` to its end."""

    async def delete(self, key: str) -> None:
        """Remove the object; removing one that is gone already is not an error."""


Stores = Mapping[StorageKind, BlobStore]


@runtime_checkable
class Presigning(Protocol):
    """A store whose objects a client can fetch directly, by a signed URL."""

    async def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int, head: bool = False
    ) -> str:
        """A URL for GET, or for HEAD with `head` (a signature names its method)."""
        ...


@runtime_checkable
class PartCopying(Protocol):
    """A store that makes a part of an upload from a stored object, without the bytes
    passing through this server (S3's UploadPartCopy)."""

    async def copy_part(self, key: str, upload_id: str, *, number: int, source_key: str) -> str:
        """Part `number` (0-based) of `upload_id` := the whole object at `source_key`; its ETag."""


@runtime_checkable
class Remainders(Protocol):
    """A store whose parts but the last have a smallest size (S3: 5 MiB): a tus
    upload's bytes short of a part wait in it as small objects of their own."""

    async def put_stream(self, key: str, *, length: int, body: PartBody) -> None:
        """Store the object at `key` from `length` bytes of `body`."""

    async def delete_under(self, prefix: str) -> None:
        """Remove every object whose key starts with `prefix`."""


@runtime_checkable
class LocalFiles(Protocol):
    """A store whose objects are files this server can send itself."""

    def path(self, key: str) -> Path: ...


@dataclass(frozen=True)
class ReadConditions:
    """A player's Range and conditional headers, for a store that evaluates them itself."""

    range: str | None = None
    if_range: str | None = None
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: datetime | None = None
    if_unmodified_since: datetime | None = None


@dataclass(frozen=True)
class ObjectRead:
    """The store's answer: a status (200, 206, 304, 412 or 416), headers, and the body."""

    status: int
    headers: dict[str, str]
    body: AsyncGenerator[bytes, None] | None


@runtime_checkable
class ConditionalReads(Protocol):
    """A store that answers Range and conditional reads itself (S3's GetObject)."""

    async def read_conditionally(
        self, key: str, conditions: ReadConditions, *, head: bool
    ) -> ObjectRead: ...
