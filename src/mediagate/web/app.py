"""The application factory: settings in, a ready aiohttp application out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Iterator
from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web

from mediagate import tokens
from mediagate.config import Settings
from mediagate.core.engine import Clock, UploadEngine, utc_now
from mediagate.core.library import MediaLibrary
from mediagate.core.links import StreamLinks
from mediagate.core.maintenance import background_maintenance
from mediagate.core.models import StorageKind
from mediagate.migrate.reconciler import Reconciler
from mediagate.services import open_catalog
from mediagate.storage.base import BlobStore
from mediagate.storage.breaker import CircuitBreaker, GuardedStore
from mediagate.storage.local import LocalStore
from mediagate.storage.s3_bootstrap import open_s3, prepare_until_ready
from mediagate.storage.s3_status import S3State, S3Status
from mediagate.web import health, media, uploads
from mediagate.web.keys import (
    CATALOG,
    CLOCK,
    ENGINE,
    JWT_SECRET,
    LIBRARY,
    LINKS,
    RECONCILER,
    REQUEST_GATE,
    S3_STATUS,
    SETTINGS,
)
from mediagate.web.problems import problems_middleware
from mediagate.web.request_context import request_context_middleware
from mediagate.web.request_gate import RequestGate
from mediagate.web.request_metrics import request_metrics_middleware

log = structlog.get_logger("mediagate")


@contextlib.contextmanager
def _background(work: Coroutine[Any, Any, None]) -> Iterator[None]:
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()


# JSON bodies are small; chunk bodies are streamed and never meet this limit.
MAX_JSON_BODY = 64 * 1024


def create_app(settings: Settings, *, clock: Clock = utc_now) -> web.Application:
    """The application; `clock` is the engine's idea of now (tests move it on)."""
    gate = RequestGate()
    app = web.Application(
        middlewares=[
            request_metrics_middleware,
            request_context_middleware,
            gate.middleware,
            problems_middleware,
        ],
        client_max_size=MAX_JSON_BODY,
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[REQUEST_GATE] = gate
    app.add_routes(uploads.routes)
    app.add_routes(media.routes)
    app.add_routes(health.routes)
    app.cleanup_ctx.append(_services)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    secret = tokens.load_secret(settings)
    app[JWT_SECRET] = secret
    app[LINKS] = StreamLinks(secret, settings.signed_url_expiry)
    async with contextlib.AsyncExitStack() as stack:
        app[CATALOG] = catalog = await stack.enter_async_context(open_catalog(settings))
        local = LocalStore(settings.data_dir)
        stores: dict[StorageKind, BlobStore] = {StorageKind.LOCAL: local}
        s3_status = S3Status(S3State.DISABLED)
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
                stores[StorageKind.S3] = GuardedStore(s3, breaker)
                if not s3_status.ready:
                    stack.enter_context(
                        _background(prepare_until_ready(s3, s3_status, breaker, settings))
                    )
                if settings.auto_migrate:
                    app[RECONCILER] = reconciler = Reconciler(
                        catalog, local, s3, breaker, key_prefix=settings.key_prefix
                    )
                    stack.enter_context(_background(reconciler.run_forever()))
        app[S3_STATUS] = s3_status
        default = StorageKind.S3 if StorageKind.S3 in stores else StorageKind.LOCAL
        app[ENGINE] = engine = UploadEngine(
            catalog,
            stores,
            default_storage=default,
            key_prefix=settings.key_prefix,
            chunk_size=settings.chunk_size,
            session_ttl=timedelta(seconds=settings.session_ttl),
            clock=app[CLOCK],
        )
        app[LIBRARY] = MediaLibrary(
            catalog,
            stores,
            signed_url_expiry=settings.signed_url_expiry,
            cdn_base_url=settings.cdn_base_url,
            proxy_reads=settings.stream_mode == "proxy",
        )
        await stack.enter_async_context(background_maintenance(engine))
        log.info(
            "server.started",
            storage=default.value,
            data_dir=str(settings.data_dir.resolve()),
            bucket=settings.s3_bucket if settings.use_cloud_storage else None,
        )
        yield
    log.info("server.stopped")
