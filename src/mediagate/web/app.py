"""The application factory: settings in, a ready aiohttp application out."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import AsyncIterator, Coroutine, Iterator
from datetime import timedelta
from typing import Any, cast

import structlog
from aiohttp import web

from mediagate import tokens
from mediagate.catalog.base import SharedCatalog
from mediagate.config import DEFAULT_DATA_DIR, Settings
from mediagate.core.engine import Clock, UploadEngine, utc_now
from mediagate.core.library import MediaLibrary
from mediagate.core.links import StreamLinks
from mediagate.core.maintenance import background_maintenance
from mediagate.core.models import StorageKind
from mediagate.core.tus import TusUploads
from mediagate.migrate.reconciler import Reconciler
from mediagate.services import check_shared_spool, open_catalog, session_locks
from mediagate.storage.base import BlobStore
from mediagate.storage.breaker import CircuitBreaker, GuardedStore
from mediagate.storage.local import LocalStore
from mediagate.storage.s3_bootstrap import open_s3, prepare_until_ready
from mediagate.storage.s3_status import S3State, S3Status
from mediagate.web import api_docs, health, media, openapi, page, tus, uploads
from mediagate.web.cors import NATIVE_API, Cors
from mediagate.web.host import host_middleware, warn_without_public_url
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
    TUS,
)
from mediagate.web.problems import problems_middleware
from mediagate.web.request_context import request_context_middleware
from mediagate.web.request_gate import RequestGate
from mediagate.web.request_metrics import request_metrics_middleware
from mediagate.web.security_headers import add_security_headers

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
    cors = Cors(settings.cors_origins, [NATIVE_API, tus.CORS_PATHS])
    app = web.Application(
        middlewares=[
            request_metrics_middleware,
            request_context_middleware,
            gate.middleware,
            problems_middleware,
            host_middleware,
            cors.middleware,
        ],
        client_max_size=MAX_JSON_BODY,
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[REQUEST_GATE] = gate
    app.on_response_prepare.append(add_security_headers)
    app.on_response_prepare.append(cors.on_response_prepare)
    app.on_startup.append(warn_without_public_url)
    app.add_routes(uploads.routes)
    app.add_routes(media.routes)
    app.add_routes(health.routes)
    app.add_routes(page.routes)
    app.add_routes(tus.routes)
    app.add_routes(openapi.routes)
    app.add_routes(api_docs.routes)
    app.cleanup_ctx.append(_services)
    return app


def token_command(settings: Settings) -> str:
    """How to sign a token with the generated secret (from the server's working directory)."""
    if settings.data_dir == DEFAULT_DATA_DIR:
        return "mediagate token USER"
    data_dir = shlex.quote(str(settings.data_dir.resolve()))
    return f"MEDIAGATE_DATA_DIR={data_dir} mediagate token USER"


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    secret = tokens.obtain_secret(settings)
    if secret.generated:
        log.info(
            "auth.secret_generated",
            path=str((settings.data_dir / tokens.SECRET_FILE).resolve()),
            get_a_token=token_command(settings),
        )
    app[JWT_SECRET] = secret.value
    app[LINKS] = StreamLinks(secret.value, settings.signed_url_expiry)
    async with contextlib.AsyncExitStack() as stack:
        app[CATALOG] = catalog = await stack.enter_async_context(open_catalog(settings))
        if settings.database_url is not None:
            await check_shared_spool(cast(SharedCatalog, catalog), settings.data_dir)
        locks = session_locks(settings, catalog)
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
                stores[StorageKind.S3] = guarded = GuardedStore(s3, breaker)
                if not s3_status.ready:
                    stack.enter_context(
                        _background(prepare_until_ready(s3, s3_status, breaker, settings))
                    )
                if settings.auto_migrate:
                    app[RECONCILER] = reconciler = Reconciler(
                        catalog, local, guarded, key_prefix=settings.key_prefix, locks=locks
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
            max_upload_size=settings.max_upload_size,
            max_open_sessions_per_user=settings.max_open_sessions_per_user,
            clock=app[CLOCK],
            locks=locks,
        )
        app[LIBRARY] = MediaLibrary(
            catalog,
            stores,
            signed_url_expiry=settings.signed_url_expiry,
            cdn_base_url=settings.cdn_base_url,
            proxy_reads=settings.stream_mode == "proxy",
        )
        app[TUS] = TusUploads(
            engine,
            catalog,
            stores,
            app[LIBRARY],
            max_size=settings.max_upload_size,
            chunk_size=settings.chunk_size,
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
