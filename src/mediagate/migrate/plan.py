"""What a migration run has to do, found without writing anything (a dry run prints it).

- every ready media on local disk (of one user, or of all) is a `Move`;
- with `--source`, every regular file below that folder that the catalog does
  not know is an `Import`, owned by `--user-id` (default `unknown`);
- with `--delete-local`, a local copy whose media is in S3 already (a run that
  stopped between switching the record and deleting the file, or one without
  `--delete-local`) is a `DropLocalCopy`.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mediagate.catalog.base import MediaRecords
from mediagate.core.keys import object_key
from mediagate.filenames import sanitize_filename
from mediagate.models import Media, StorageKind
from mediagate.storage.local import LocalStore

MiB = 1024 * 1024
LEGACY_OWNER = "unknown"
PAGE = 500
# An imported file's media id is derived from its absolute path, so a later run
# knows the file as imported, and a run that crashed between the upload and the
# record re-uploads to the same key instead of leaving a duplicate.
LEGACY_NAMESPACE = uuid.UUID("6f0e3c1e-8d4b-4a35-9a57-5d3f1f0c2b6e")


@dataclass(frozen=True)
class Options:
    user_id: str | None = None
    source: Path | None = None
    delete_local: bool = False
    batch_size: int = 10
    key_prefix: str = "media/"
    part_size: int = 8 * MiB

    @property
    def owner(self) -> str:
        """Who imported legacy files belong to."""
        return self.user_id or LEGACY_OWNER


@dataclass(frozen=True)
class Move:
    """A media on local disk, to be copied to S3 under the same key and switched over."""

    media: Media
    path: Path

    @property
    def label(self) -> str:
        return self.media.key


@dataclass(frozen=True)
class Import:
    """A legacy file below `root`, to become `media` (size and checksum taken as it uploads)."""

    media: Media
    path: Path
    root: Path

    @property
    def label(self) -> str:
        return printable(self.path)


@dataclass(frozen=True)
class DropLocalCopy:
    """A local copy of a media that is in S3 already."""

    media: Media
    path: Path
    legacy: bool

    @property
    def label(self) -> str:
        return printable(self.path)


Job = Move | Import | DropLocalCopy


@dataclass(frozen=True)
class Skip:
    item: str
    reason: str


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)

    @property
    def uploads(self) -> list[Move | Import]:
        return [job for job in self.jobs if not isinstance(job, DropLocalCopy)]

    @property
    def upload_bytes(self) -> int:
        return sum(job.media.size for job in self.uploads)


def printable(path: Path) -> str:
    """The path as text; bytes that are not UTF-8 show as escapes."""
    return str(path).encode("utf-8", "backslashreplace").decode()


async def plan_migration(catalog: MediaRecords, local: LocalStore, options: Options) -> Plan:
    plan = Plan()
    async for page in media_pages(catalog, StorageKind.LOCAL, options.user_id):
        plan.jobs += [Move(media, local.path(media.key)) for media in page]
    if options.delete_local:
        async for page in media_pages(catalog, StorageKind.S3, options.user_id):
            copies = await asyncio.to_thread(local_copies, local, page)
            plan.jobs += [DropLocalCopy(media, path, legacy=False) for media, path in copies]
    if options.source is not None:
        await plan_imports(catalog, options.source.resolve(), options, plan)
    return plan


async def media_pages(
    catalog: MediaRecords, storage: StorageKind, user_id: str | None
) -> AsyncIterator[list[Media]]:
    after: str | None = None
    while page := await catalog.media_in_storage(storage, user_id=user_id, after=after, limit=PAGE):
        yield page
        after = page[-1].id


def local_copies(local: LocalStore, media: list[Media]) -> list[tuple[Media, Path]]:
    paths = ((item, local.path(item.key)) for item in media)
    return [(item, path) for item, path in paths if path.exists()]


async def plan_imports(catalog: MediaRecords, root: Path, options: Options, plan: Plan) -> None:
    for found in await asyncio.to_thread(lambda: list(walk_legacy(root))):
        if isinstance(found, Skip):
            plan.skipped.append(found)
            continue
        path, info = found
        media = legacy_media(path, info, owner=options.owner, key_prefix=options.key_prefix)
        known = await catalog.get_media(media.id)
        if known is None:
            plan.jobs.append(Import(media, path, root))
        elif options.delete_local and known.storage is StorageKind.S3:
            plan.jobs.append(DropLocalCopy(known, path, legacy=True))
        else:
            plan.skipped.append(Skip(f"{printable(path)} (media {known.id})", "already imported"))


def walk_legacy(root: Path) -> Iterator[tuple[Path, os.stat_result] | Skip]:
    """Regular files below `root`, in name order; symbolic links are reported, never followed."""
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            yield Skip(f"{printable(folder)}: {error.strerror}", "unreadable folder")
            continue
        subfolders = []
        for entry in entries:
            path = Path(entry.path)
            if entry.is_symlink():
                yield Skip(printable(path), "symbolic link (not followed)")
            elif entry.is_dir(follow_symlinks=False):
                subfolders.append(path)
            elif entry.is_file(follow_symlinks=False):
                yield path, entry.stat(follow_symlinks=False)
            else:
                yield Skip(printable(path), "not a regular file")
        folders.extend(reversed(subfolders))


def legacy_media(path: Path, info: os.stat_result, *, owner: str, key_prefix: str) -> Media:
    media_id = legacy_media_id(path)
    filename = sanitize_filename(path.name)
    return Media(
        id=media_id,
        user_id=owner,
        filename=filename,
        content_type=guess_content_type(filename),
        size=info.st_size,
        checksum=None,
        storage=StorageKind.S3,
        key=object_key(key_prefix, owner, media_id, filename),
        created_at=datetime.fromtimestamp(info.st_mtime, UTC),
    )


def legacy_media_id(path: Path) -> str:
    """A UUID 5 of the path's bytes (uuid.uuid5 wants text, which such a path may not be)."""
    name = LEGACY_NAMESPACE.bytes + os.fsencode(path)
    digest = hashlib.sha1(name, usedforsecurity=False).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def guess_content_type(filename: str) -> str:
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed or "application/octet-stream"
