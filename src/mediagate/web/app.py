"""The application factory: settings in, a ready aiohttp application out."""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from mediagate import tokens, version
from mediagate.config import DEFAULT_DATA_DIR, Settings, format_size
from mediagate.core.engine import Clock, utc_now
from mediagate.core.links import StreamLinks
from mediagate.jwks import IdentityKeys
from mediagate.services import Services, open_services
from mediagate.web import api_docs, health, ietf, media, openapi, page, tus, uploads
from mediagate.web.auth import identity_keys_middleware
from mediagate.web.cors import NATIVE_API, Cors
from mediagate.web.host import host_middleware, warn_without_public_url
from mediagate.web.keys import (
    CATALOG,
    CLOCK,
    DATA_DISK,
    ENGINE,
    IDENTITY_KEYS,
    IETF,
    JWT_SECRET,
    LIBRARY,
    LINKS,
    RECONCILER,
    REQUEST_GATE,
    S3_STATUS,
    SERVED,
    SETTINGS,
    TUS,
)
from mediagate.web.problems import problems_middleware
from mediagate.web.request_context import request_context_middleware
from mediagate.web.request_gate import RequestGate
from mediagate.web.request_metrics import request_metrics_middleware
from mediagate.web.security_headers import add_security_headers

log = structlog.get_logger("mediagate")


# JSON bodies are small; chunk bodies are streamed and never meet this limit.
MAX_JSON_BODY = 64 * 1024


def create_app(settings: Settings, *, clock: Clock = utc_now) -> web.Application:
    """The application; `clock` is the engine's idea of now (tests move it on)."""
    gate = RequestGate()
    cors = Cors(settings.cors_origins, [NATIVE_API, tus.CORS_PATHS, ietf.CORS_PATHS])
    app = web.Application(
        middlewares=[
            request_metrics_middleware,
            request_context_middleware,
            gate.middleware,
            problems_middleware,
            host_middleware,
            cors.middleware,
            identity_keys_middleware,
        ],
        client_max_size=MAX_JSON_BODY,
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[REQUEST_GATE] = gate
    if settings.jwt_jwks_url is not None:
        keys = IdentityKeys(
            settings.jwt_jwks_url, refetch_interval=settings.jwt_jwks_refetch_interval
        )
        app[IDENTITY_KEYS] = keys
        app.on_cleanup.append(lambda app: keys.close())
    app.on_response_prepare.append(add_security_headers)
    app.on_response_prepare.append(cors.on_response_prepare)
    app.on_startup.append(warn_without_public_url)
    app.add_routes(uploads.routes)
    app.add_routes(media.routes)
    app.add_routes(health.routes)
    app.add_routes(page.routes)
    app.add_routes(tus.routes)
    ietf.register(app)
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


def served(settings: Settings, services: Services) -> dict[str, str | None]:
    """How the server stores what it is sent, in the words of the settings."""
    return {
        "version": version(),
        "storage": services.default_storage.value,
        "bucket": settings.s3_bucket if settings.use_cloud_storage else None,
        "data_dir": str(settings.data_dir.resolve()),
        "catalog": "sqlite" if settings.database_url is None else "postgresql",
        "chunk_size": format_size(settings.chunk_size),
        "max_upload": format_size(settings.max_upload_size),
        "fallback": ("on" if settings.fallback else "off") if settings.use_cloud_storage else None,
        "min_free_disk": format_size(settings.min_free_disk),
        # Whose tokens are taken besides mediagate's own (HS256).
        "identity_provider": settings.jwt_jwks_url,
    }


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
    async with open_services(settings, clock=app[CLOCK]) as services:
        app[CATALOG] = services.catalog
        app[S3_STATUS] = services.s3_status
        app[DATA_DISK] = services.data_disk
        app[ENGINE] = services.engine
        app[LIBRARY] = services.library
        app[TUS] = services.tus
        app[IETF] = services.ietf
        if services.reconciler is not None:
            app[RECONCILER] = services.reconciler
        # Logged as `server.started` once the port is bound (web/server.py).
        app[SERVED] = served(settings, services)
        yield
    log.info("server.stopped")
