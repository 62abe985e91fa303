"""The composition root: a server's catalog, stores, engine and background work.

`open_services` wires them from the settings and owns the background work:
closing it cancels every task and waits for it. (The catalog itself is chosen
by `catalog.connect.open_catalog`, which the migrator and benches use too.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog

from mediagate import metrics
from mediagate.catalog.base import Catalog, SharedCatalog
from mediagate.catalog.connect import open_catalog
from mediagate.config import Settings, SettingsError, needs_shared_volume, uses_local_disk
from mediagate.core.direct import DirectUploads
from mediagate.core.engine import Clock, UploadEngine
from mediagate.core.hooks import Hooks
from mediagate.core.ietf import IetfUploads
from mediagate.core.library import MediaLibrary
from mediagate.core.maintenance import background_maintenance, run_periodically
from mediagate.core.media_policy import MediaPolicy
from mediagate.core.offsets import OffsetUploads
from mediagate.core.probe import Limits
from mediagate.core.probing import SWEEP_INTERVAL, MediaProber, probe_unprobed
from mediagate.core.session_locks import CatalogSessionLocks, InProcessSessionLocks, SessionLocks
from mediagate.core.tus import TusUploads
from mediagate.core.webhooks import WebhookSender
from mediagate.migrate.reconciler import Reconciler
from mediagate.storage.base import StoreRoles, Stores, VerifiedWrites
from mediagate.storage.breaker import CircuitBreaker, guard
from mediagate.storage.local import LocalStore
from mediagate.storage.s3_bootstrap import open_s3, prepare_until_ready
from mediagate.storage.s3_status import S3State, S3Status

log = structlog.get_logger("mediagate")

# How long closing waits for a cancelled background task (a library may swallow
# one cancellation: cpython gh-86296, met in psycopg's pool).
STOP_WAIT = 5.0


@dataclass(frozen=True)
class Services:
    """What a running server is made of."""

    catalog: Catalog
    roles: StoreRoles
    s3_status: S3Status
    engine: UploadEngine
    library: MediaLibrary
    tus: TusUploads
    direct: DirectUploads
    ietf: IetfUploads
    reconciler: Reconciler | None
    # The disk of the data directory, when anything may be written to it (/readyz).
    data_disk: LocalStore | None


@contextlib.asynccontextmanager
async def open_services(settings: Settings, *, clock: Clock) -> AsyncIterator[Services]:
    """A server's parts and its background work, for the life of the context."""
    async with contextlib.AsyncExitStack() as stack:
        catalog = await stack.enter_async_context(open_catalog(settings))
        if isinstance(catalog, SharedCatalog) and needs_shared_volume(settings):
            await check_shared_spool(catalog, settings.data_dir)
        locks = session_locks(catalog)
        local = LocalStore(settings.data_dir, min_free=settings.min_free_disk)
        # Local disk takes new uploads, unless S3 does; then it takes what S3 cannot.
        roles = StoreRoles(primary=local, spill=local)
        s3_status = S3Status(S3State.DISABLED)
        reconciler = None
        if settings.use_cloud_storage:
            s3, s3_status = await open_s3(settings, stack)
            if s3 is not None:
                # Kept while S3 is unavailable: its media still get presigned links.
                breaker = CircuitBreaker(
                    first_backoff=min(1.0, settings.s3_probe_max_interval),
                    max_backoff=settings.s3_probe_max_interval,
                    on_change=s3_status.follow,
                    failing_since_start=None if s3_status.ready else s3_status.problem,
                )
                primary = guard(s3, breaker)
                roles = StoreRoles(primary=primary, spill=local)
                if not s3_status.ready:
                    await stack.enter_async_context(
                        _running(
                            "s3.prepare", prepare_until_ready(s3, s3_status, breaker, settings)
                        )
                    )
                if settings.auto_migrate and isinstance(primary, VerifiedWrites):
                    reconciler = Reconciler(
                        catalog,
                        local,
                        primary,
                        breaker=breaker,
                        key_prefix=settings.key_prefix,
                        locks=locks,
                    )
                    await stack.enter_async_context(
                        _running("reconciler", reconciler.run_forever())
                    )
        hooks = None
        if settings.webhook_secret is not None and (
            settings.hook_pre_create_url or settings.hook_pre_finish_url
        ):
            hooks = Hooks(
                settings.webhook_secret.get_secret_value(),
                pre_create_url=settings.hook_pre_create_url,
                pre_finish_url=settings.hook_pre_finish_url,
                timeout=settings.hook_timeout,
                failure=settings.hook_failure,
            )
            stack.push_async_callback(hooks.close)
        prober = await stack.enter_async_context(media_prober(settings, roles.by_kind))
        engine = UploadEngine(
            catalog,
            roles,
            key_prefix=settings.key_prefix,
            chunk_size=settings.chunk_size,
            session_ttl=timedelta(seconds=settings.session_ttl),
            max_upload_size=settings.max_upload_size,
            max_open_sessions_per_user=settings.max_open_sessions_per_user,
            clock=clock,
            locks=locks,
            fallback=settings.fallback,
            hooks=hooks,
            prober=prober,
        )
        library = MediaLibrary(
            catalog,
            roles.by_kind,
            signed_url_expiry=settings.signed_url_expiry,
            uploads=engine,
            cdn_base_url=settings.cdn_base_url,
            proxy_reads=settings.stream_mode == "proxy",
        )
        offsets = OffsetUploads(
            engine,
            catalog,
            roles.by_kind,
            library,
            max_size=settings.max_upload_size,
            chunk_size=settings.chunk_size,
            memory_per_user=settings.tus_memory_per_user,
        )
        direct = DirectUploads(engine, catalog, roles.primary, max_size=settings.max_upload_size)
        tus = TusUploads(offsets, library)
        ietf = IetfUploads(offsets, library)
        await stack.enter_async_context(background_maintenance(engine))
        if prober is not None:
            await stack.enter_async_context(
                _running(
                    "probe",
                    run_periodically(
                        "probe",
                        functools.partial(probe_unprobed, catalog, prober, locks),
                        SWEEP_INTERVAL,
                    ),
                )
            )
        if settings.webhook_urls and settings.webhook_secret is not None:
            sender = WebhookSender(
                catalog,
                settings.webhook_secret.get_secret_value(),
                timeout=settings.webhook_timeout,
                retry_for=settings.webhook_retry_for,
                on_settled=metrics.webhook_attempt,
            )
            catalog.on_events_written(sender.wake)
            await stack.enter_async_context(_running("webhooks", sender.run_forever()))
        data_disk = local if uses_local_disk(settings) else None
        yield Services(
            catalog, roles, s3_status, engine, library, tus, direct, ietf, reconciler, data_disk
        )


@contextlib.asynccontextmanager
async def media_prober(settings: Settings, stores: Stores) -> AsyncIterator[MediaProber | None]:
    """The prober of finished media, or None with MEDIAGATE_PROBE=false or no ffprobe.

    A policy (MEDIAGATE_ACCEPT, MEDIAGATE_MAX_DURATION) without probing would let
    everything through: the server refuses to start instead."""
    policy = MediaPolicy(accept=settings.accept, max_duration=settings.max_duration)
    missing = shutil.which("ffprobe") is None or shutil.which("ffmpeg") is None
    if policy.refuses_anything and (missing or not settings.probe):
        raise SettingsError(
            "invalid setting MEDIAGATE_ACCEPT/MEDIAGATE_MAX_DURATION: they judge what probing "
            "finds, which needs MEDIAGATE_PROBE=true and ffprobe and ffmpeg on the PATH "
            "(apt-get install ffmpeg)"
        )
    if not settings.probe:
        yield None
        return
    if missing:
        log.warning("probe.unavailable", reason="ffprobe or ffmpeg not found on PATH")
        yield None
        return
    if shutil.which("prlimit") is None:
        log.warning("probe.no_memory_limit", reason="prlimit (util-linux) not found on PATH")
    prober = MediaProber(
        stores,
        limits=Limits(timeout=settings.probe_timeout, memory=settings.probe_memory),
        concurrency=settings.probe_concurrency,
        policy=policy,
    )
    try:
        yield prober
    finally:
        await prober.close()


@contextlib.asynccontextmanager
async def _running(name: str, work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """`work` as a task for the life of the context; cancelled and waited for on exit."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=STOP_WAIT)
        if not done:
            log.warning("background.not_stopped", task=name)


def session_locks(catalog: Catalog) -> SessionLocks:
    """Where the upload rules hold: in the catalog when several instances share it
    (PostgreSQL: any instance may get any request), else in this process (SQLite: one
    process owns it)."""
    if isinstance(catalog, SharedCatalog):
        return CatalogSessionLocks(catalog, instance_id())
    return InProcessSessionLocks(catalog)


def instance_id() -> str:
    """This process among the instances: its host and pid (for people), and a random
    part (so that a restarted process never passes for its predecessor)."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:6]}"


# Where the data directory keeps the spool token the catalog holds too.
SPOOL_TOKEN_FILE = ".spool-token"


async def check_shared_spool(catalog: SharedCatalog, data_dir: Path) -> None:
    """Refuse to start unless the data directory is the one every instance of this
    catalog uses: spilled chunks, tus tails and local media written by one instance are
    finished and served by any other."""
    marker = data_dir / SPOOL_TOKEN_FILE
    mine = _spool_token(marker)
    shared = await catalog.shared_value("spool-token", mine)
    if mine != shared:
        raise SettingsError(
            f"invalid setting MEDIAGATE_DATA_DIR={str(data_dir)!r}: it is not the data "
            "directory the other instances on this MEDIAGATE_DATABASE_URL use "
            f"({marker} holds another token); mount the same shared volume on every "
            f"instance (or, if this is that volume, write {shared} into that file)"
        )


def _spool_token(marker: Path) -> str:
    """The data directory's spool token, made now if it has none. Made atomically (a
    hard link never overwrites), so processes starting together on one directory all
    read the one that was made first."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    made = marker.with_name(f"{marker.name}.{uuid.uuid4().hex}")
    made.write_text(f"{uuid.uuid4().hex}\n")
    try:
        os.link(made, marker)
    except FileExistsError:
        pass  # made by an earlier start, or by a process starting beside this one
    finally:
        made.unlink()
    return marker.read_text().strip()
