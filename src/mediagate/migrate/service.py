"""The migration run: jobs fanned out over a semaphore, each record switched only once its copy
is verified, so that a crash at any moment leaves every media fully local or fully in S3.

Order for one media: upload (verified, see transfer.py) → switch the record in
one compare-and-set (`Catalog.move_media`) → only then, with `--delete-local`,
delete the local copy. A server serving the media looks the record up on each
request, so it streams the local file before the switch and redirects to S3
after it; the local file outlives the switch, so a request in between is served
either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mediagate import metrics
from mediagate.catalog.base import MediaRecords
from mediagate.catalog.connect import open_catalog
from mediagate.config import Settings
from mediagate.core.probing import store_bytes
from mediagate.errors import NotFound, Problem, StorageUnavailable
from mediagate.migrate.plan import DropLocalCopy, Import, Job, Move, Options, Plan, plan_migration
from mediagate.migrate.report import Outcome, Report, Status
from mediagate.migrate.transfer import Expected, FileIdentity, FileRejected, Uploaded, Uploader
from mediagate.models import Media, StorageKind
from mediagate.storage.base import MigrationTarget, NewObject
from mediagate.storage.local import LocalStore
from mediagate.storage.s3 import S3Store
from mediagate.storage.s3_bootstrap import check_access, prepare_bucket

KEPT_CHANGED_COPY = "the local copy changed after the upload, so it was kept"


@dataclass(frozen=True)
class Stores:
    catalog: MediaRecords
    local: LocalStore
    # S3 itself (`mediagate migrate`), or S3 behind the server's breaker (the reconciler),
    # whose failures other uploads must notice.
    s3: MigrationTarget


@contextlib.asynccontextmanager
async def open_stores(settings: Settings) -> AsyncIterator[Stores]:
    """The catalog, the data directory and the bucket of these settings (nothing is sent yet)."""
    async with open_catalog(settings) as catalog, S3Store.connect(settings) as s3:
        yield Stores(catalog, LocalStore(settings.data_dir), s3)


async def dry_run(settings: Settings, options: Options) -> Plan:
    """The plan, once it is certain that S3 would take it (a plan it would refuse is
    no answer to "what would a run do")."""
    async with open_catalog(settings) as catalog, S3Store.connect(settings) as s3:
        status = await check_access(s3.control_client, settings)
        if not status.ready:
            raise StorageUnavailable(
                f"S3 cannot be used ({status.problem}): a run would migrate nothing; "
                "the s3.unavailable log line says how to fix it"
            )
        return await plan_migration(catalog, LocalStore(settings.data_dir), options)


async def migrate_all(settings: Settings, options: Options, report: Report) -> None:
    async with open_catalog(settings) as catalog, S3Store.connect(settings) as s3:
        stores = Stores(catalog, LocalStore(settings.data_dir), s3)
        plan = await plan_migration(stores.catalog, stores.local, options)
        status = await prepare_bucket(s3.control_client, settings)
        if not status.ready:
            raise StorageUnavailable(
                f"S3 cannot be used ({status.problem}): nothing was migrated; "
                "the s3.unavailable log line says how to fix it"
            )
        report.start(plan)
        try:
            await Migrator(stores, options, report).run(plan.jobs)
        finally:
            report.close()


def new_object(media: Media) -> NewObject:
    return NewObject(
        key=media.key, content_type=media.content_type, owner=media.user_id, filename=media.filename
    )


def recorded_sha256(media: Media) -> str | None:
    prefix = "sha256:"
    if media.checksum and media.checksum.startswith(prefix):
        return media.checksum.removeprefix(prefix)
    return None


def describe(error: Exception) -> str:
    if isinstance(error, Problem):
        return error.detail
    if isinstance(error, OSError):
        return f"{error.strerror or error} ({error.filename})"
    return str(error) or type(error).__name__


class Migrator:
    def __init__(self, stores: Stores, options: Options, report: Report) -> None:
        self._catalog = stores.catalog
        self._local = stores.local
        self._s3 = stores.s3
        self._options = options
        self._report = report
        self._uploader = Uploader(
            stores.s3,
            part_size=options.part_size,
            in_flight=options.batch_size,
            on_sent=report.sent,
        )

    async def run(self, jobs: Sequence[Job]) -> None:
        """Carry out every job, `batch_size` at a time; one job's failure never stops the rest."""
        files = asyncio.Semaphore(self._options.batch_size)
        async with asyncio.TaskGroup() as group:
            for job in jobs:
                await files.acquire()
                group.create_task(self._carry_out(job, files))

    async def _carry_out(self, job: Job, files: asyncio.Semaphore) -> None:
        try:
            outcome = await self._dispatch(job)
        except Exception as error:
            outcome = Outcome(Status.FAILED, describe(error))
        finally:
            files.release()
        self._report.finished(job.label, outcome)
        if outcome.status in (Status.MIGRATED, Status.IMPORTED):
            metrics.migration_file("migrated", outcome.size)
        elif outcome.status is Status.FAILED:
            metrics.migration_file("failed", job.media.size)

    async def _dispatch(self, job: Job) -> Outcome:
        match job:
            case Move():
                return await self._move(job)
            case Import():
                return await self._import(job)
            case DropLocalCopy():
                return await self._drop_local_copy(job)

    async def _move(self, job: Move) -> Outcome:
        media = job.media
        expected = Expected(size=media.size, sha256=recorded_sha256(media))
        uploaded = await self._uploader.upload(
            job.path, self._local.root, new_object(media), expected
        )
        poster = await self._copy_poster(media)
        moved = await self._catalog.move_media(
            media.id,
            source=StorageKind.LOCAL,
            target=StorageKind.S3,
            checksum=f"sha256:{uploaded.sha256}",
        )
        if not moved:
            await self._forget_object(media)
            return Outcome(Status.SKIPPED, "deleted or migrated by someone else meanwhile")
        outcome = await self._uploaded(Status.MIGRATED, job.path, uploaded, store_key=media.key)
        if poster is not None and outcome.local_copy_deleted:
            await self._local.delete(poster)
        return outcome

    async def _copy_poster(self, media: Media) -> str | None:
        """The media's poster (core/probing.py) into S3 beside it, before the media moves;
        its key, or None if it has none (or its file is gone: the poster link then 404s)."""
        if media.poster_key is None:
            return None
        try:
            image = await asyncio.to_thread(self._local.path(media.poster_key).read_bytes)
        except FileNotFoundError:
            return None
        await store_bytes(self._s3, media.poster_key, image, owner=media.user_id)
        return media.poster_key

    async def _import(self, job: Import) -> Outcome:
        uploaded = await self._uploader.upload(
            job.path, job.root, new_object(job.media), Expected()
        )
        media = job.media.model_copy(
            update={"size": uploaded.size, "checksum": f"sha256:{uploaded.sha256}"}
        )
        if not await self._catalog.add_media(media):
            return Outcome(Status.SKIPPED, "imported by another run meanwhile")
        return await self._uploaded(Status.IMPORTED, job.path, uploaded, store_key=None)

    async def _uploaded(
        self, status: Status, path: Path, uploaded: Uploaded, *, store_key: str | None
    ) -> Outcome:
        """The outcome of a switched upload, once its local copy is deleted if asked to."""
        if not self._options.delete_local:
            return Outcome(status, size=uploaded.size)
        if not await self._delete_copy(path, uploaded.identity, store_key=store_key):
            return Outcome(status, KEPT_CHANGED_COPY, size=uploaded.size)
        return Outcome(status, size=uploaded.size, local_copy_deleted=True)

    async def _drop_local_copy(self, job: DropLocalCopy) -> Outcome:
        media = job.media
        try:
            stored = await self._s3.stat(media.key)
        except NotFound:
            raise FileRejected("its S3 object is missing; the local copy stays") from None
        if stored.size != media.size:
            raise FileRejected(
                f"its S3 object is {stored.size} bytes but its record says {media.size}; "
                "the local copy stays"
            )
        identity = await asyncio.to_thread(file_identity, job.path)
        if identity.size != media.size:
            raise FileRejected(
                f"the local copy is {identity.size} bytes but the media {media.size}; it stays"
            )
        key = None if job.legacy else media.key
        if not await self._delete_copy(job.path, identity, store_key=key):
            raise FileRejected("the local copy changed while being checked; it stays")
        return Outcome(Status.LOCAL_COPY_DELETED)

    async def _delete_copy(
        self, path: Path, identity: FileIdentity, *, store_key: str | None
    ) -> bool:
        """Delete a local copy, unless it changed since it was read; True if it is gone."""
        if await asyncio.to_thread(file_identity, path) != identity:
            return False
        if store_key is None:
            await asyncio.to_thread(path.unlink)
        else:
            await self._local.delete(store_key)
        return True

    async def _forget_object(self, media: Media) -> None:
        """Delete the object just written, unless a record points at it after all."""
        current = await self._catalog.get_media(media.id)
        if current is None or current.storage is StorageKind.LOCAL:
            await self._s3.delete(media.key)


def file_identity(path: Path) -> FileIdentity:
    return FileIdentity.of(os.stat(path, follow_symlinks=False))


@dataclass(frozen=True)
class Verification:
    media: Media
    ok: bool
    detail: str

    def as_json(self, bucket: str) -> dict[str, object]:
        return {
            "media_id": self.media.id,
            "bucket": bucket,
            "key": self.media.key,
            "size": self.media.size,
            "checksum": self.media.checksum,
            "ok": self.ok,
            "detail": self.detail,
        }

    def as_text(self, bucket: str) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return f"{verdict}: media {self.media.id} (s3://{bucket}/{self.media.key}): {self.detail}"


async def verify_media(stores: Stores, media_id: str, *, user_id: str | None) -> Verification:
    """Compare the S3 object of a media with its record: size, then checksum (reads it whole)."""
    media = await stores.catalog.get_media(media_id)
    if media is None or (user_id is not None and media.user_id != user_id):
        owner = f" of user {user_id}" if user_id else ""
        raise NotFound(f"there is no media {media_id}{owner}")
    if media.storage is not StorageKind.S3:
        return Verification(media, False, "it is still in local storage: there is no S3 copy")
    try:
        stored = await stores.s3.stat(media.key)
    except NotFound:
        return Verification(media, False, "its S3 object is missing")
    if stored.size != media.size:
        return Verification(
            media, False, f"the S3 object is {stored.size} bytes, the record says {media.size}"
        )
    return await compare_checksum(stores.s3, media, stored.etag)


async def compare_checksum(s3: MigrationTarget, media: Media, etag: str) -> Verification:
    expected = media.checksum or ""
    kind, _, value = expected.partition(":")
    if kind == "sha256":
        actual = await object_sha256(s3, media)
        if actual != value:
            return Verification(
                media, False, f"the S3 object's SHA-256 is {actual}, the record says {value}"
            )
        return Verification(media, True, f"size ({media.size} bytes) and SHA-256 match")
    if kind == "etag":
        if etag.strip('"') != value:
            return Verification(media, False, f"the S3 ETag is {etag}, the record says {value}")
        return Verification(media, True, f"size ({media.size} bytes) and ETag match")
    return Verification(media, True, f"size matches ({media.size} bytes); no checksum recorded")


async def object_sha256(s3: MigrationTarget, media: Media) -> str:
    hasher = hashlib.sha256()
    if media.size:  # S3 answers a range request on an empty object with 416
        async for piece in s3.read(media.key):
            hasher.update(piece)
    return hasher.hexdigest()
