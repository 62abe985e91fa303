"""The `BlobStore` protocol: what the engine needs from a place that keeps bytes.

A store receives a file as numbered parts, possibly in parallel and out of
order, then assembles them. Stores raise `mediagate.errors.Problem`s
(translated at their edge), never their client library's exceptions.
"""

from __future__ import annotations

import io
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


# The stores by the kind the catalog records, to find where a session, a chunk or a
# media lives; what a new upload goes to is a role (`StoreRoles`).
Stores = Mapping[StorageKind, BlobStore]


@runtime_checkable
class Staging(Protocol):
    """A store that assembles an upload in one file on its own disk, each part written at
    its offset (local disk): parts staged there can be read back by offset and sent on
    to another store, and the disk is asked whether it can hold a file before it starts."""

    async def check_new_upload(self, size: int) -> None:
        """Refuse an upload of `size` bytes the disk could never hold, or no room is left."""

    def part_body(self, upload_id: str, offset: int, length: int) -> PartBody:
        """A staged part's bytes, to send on to another store."""
        ...

    async def staged_uploads(self, idle_for: float) -> list[str]:
        """Ids of the staged uploads not written to for `idle_for` seconds."""
        ...


class SpillStore(BlobStore, Staging, Protocol):
    """What the spill role needs: a `BlobStore` that stages on its own disk."""


@dataclass(frozen=True)
class StoreRoles:
    """The stores by the part they play: `primary` takes new uploads; `spill` (local
    disk) takes what the primary cannot, and may be the primary itself."""

    primary: BlobStore
    spill: SpillStore

    @property
    def by_kind(self) -> Stores:
        """Where what the catalog recorded lives (a session's, a chunk's, a media's kind)."""
        return {self.spill.kind: self.spill, self.primary.kind: self.primary}


@dataclass(frozen=True)
class Route:
    """How this server reaches a store's URL itself (probing reads them): through
    `proxy` (None: straight), its TLS checked against `ca_file` (None: the system's
    certificates), as the store's own calls reach it."""

    proxy: str | None = None
    ca_file: str | None = None


@runtime_checkable
class Presigning(Protocol):
    """A store whose objects a client can fetch directly, by a signed URL."""

    def route(self, url: str) -> Route:
        """How this server reaches `url`, one of the store's."""
        ...

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
class DirectParts(Protocol):
    """A store whose upload parts a client can PUT itself, at a URL the server signs,
    and which lists the parts it holds (S3): direct uploads (core/direct.py)."""

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
        """A URL to PUT part `number` (0-based); a `length` or `content_md5` is signed in."""
        ...

    async def list_parts(self, key: str, upload_id: str) -> list[ListedPart]:
        """The parts the store holds of an unfinished upload, by number."""
        ...


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


@runtime_checkable
class VerifiedWrites(Protocol):
    """A store that checks each write against the MD5 sent with it (S3's Content-MD5)
    and tells a stored object's size and ETag: what a migration writes to."""

    async def stat(self, key: str) -> StoredObject: ...

    async def put_object(
        self, target: NewObject, body: io.BytesIO, *, content_md5: str
    ) -> StoredObject: ...

    async def start_checked_upload(self, target: NewObject) -> str: ...

    async def put_checked_part(
        self, key: str, upload_id: str, *, number: int, body: io.BytesIO, content_md5: str
    ) -> str: ...

    async def complete_checked_upload(
        self, key: str, upload_id: str, etags: Sequence[str]
    ) -> StoredObject: ...

    async def abort_uploads(self, key: str) -> None:
        """Abort every unfinished upload to `key` (a migration's earlier attempts)."""


class MigrationTarget(BlobStore, VerifiedWrites, Protocol):
    """A `BlobStore` local media can be migrated to."""
