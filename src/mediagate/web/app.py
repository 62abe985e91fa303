"""The application factory: settings in, a ready aiohttp application out."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import structlog
from aiohttp import web

from mediagate import tokens
from mediagate.catalog.sqlite import CATALOG_FILE, SQLiteCatalog
from mediagate.config import Settings
from mediagate.core.engine import Clock, UploadEngine, utc_now
from mediagate.core.errors import StorageUnavailable
from mediagate.core.library import MediaLibrary
from mediagate.core.links import StreamLinks
from mediagate.core.maintenance import background_maintenance
from mediagate.core.models import StorageKind
from mediagate.storage.base import BlobStore
from mediagate.storage.breaker import CircuitBreaker, GuardedStore
from mediagate.storage.local import LocalStore
from mediagate.storage.s3 import S3Store
from mediagate.web import media, uploads
from mediagate.web.keys import CLOCK, ENGINE, JWT_SECRET, LIBRARY, LINKS, SETTINGS
from mediagate.web.problems import problems_middleware
from mediagate.web.request_context import request_context_middleware

log = structlog.get_logger("mediagate")

# JSON bodies are small; chunk bodies are streamed and never meet this limit.
MAX_JSON_BODY = 64 * 1024


def create_app(settings: Settings, *, clock: Clock = utc_now) -> web.Application:
    """The application; `clock` is the engine's idea of now (tests move it on)."""
    app = web.Application(
        middlewares=[request_context_middleware, problems_middleware],
        client_max_size=MAX_JSON_BODY,
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app.add_routes(uploads.routes)
    app.add_routes(media.routes)
    app.cleanup_ctx.append(_services)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    secret = tokens.load_secret(settings)
    app[JWT_SECRET] = secret
    app[LINKS] = StreamLinks(secret, settings.signed_url_expiry)
    async with contextlib.AsyncExitStack() as stack:
        catalog = await SQLiteCatalog.open(settings.data_dir / CATALOG_FILE)
        stack.push_async_callback(catalog.close)
        stores: dict[StorageKind, BlobStore] = {StorageKind.LOCAL: LocalStore(settings.data_dir)}
        if settings.use_cloud_storage:
            s3 = await stack.enter_async_context(S3Store.connect(settings))
            breaker = CircuitBreaker(
                first_backoff=min(1.0, settings.s3_probe_max_interval),
                max_backoff=settings.s3_probe_max_interval,
            )
            try:
                await s3.ensure_bucket()
            except StorageUnavailable as error:
                breaker.failed(str(error))
                log.warning("s3.unavailable_at_start", error=str(error), fallback="local disk")
            stores[StorageKind.S3] = GuardedStore(s3, breaker)
        default = StorageKind.S3 if settings.use_cloud_storage else StorageKind.LOCAL
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
        )
        await stack.enter_async_context(background_maintenance(engine))
        log.info(
            "server.started",
            storage=default.value,
            data_dir=str(settings.data_dir.resolve()),
            bucket=settings.s3_bucket if settings.use_cloud_storage else None,
        )
        yield
