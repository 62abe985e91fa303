"""Typed application state."""

from __future__ import annotations

from aiohttp import web

from mediagate.catalog.base import Catalog
from mediagate.config import Settings
from mediagate.core.engine import Clock, UploadEngine
from mediagate.core.ietf import IetfUploads
from mediagate.core.library import MediaLibrary
from mediagate.core.links import StreamLinks
from mediagate.core.tus import TusUploads
from mediagate.jwks import IdentityKeys
from mediagate.migrate.reconciler import Reconciler
from mediagate.storage.local import LocalStore
from mediagate.storage.s3_status import S3Status
from mediagate.web.request_gate import RequestGate

SETTINGS = web.AppKey("settings", Settings)
JWT_SECRET = web.AppKey("jwt_secret", bytes)
# The identity provider's keys, with MEDIAGATE_JWT_JWKS_URL set.
IDENTITY_KEYS = web.AppKey("identity_keys", IdentityKeys)
ENGINE = web.AppKey("engine", UploadEngine)
LIBRARY = web.AppKey("library", MediaLibrary)
LINKS = web.AppKey("links", StreamLinks)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
CATALOG = web.AppKey("catalog", Catalog)
S3_STATUS = web.AppKey("s3_status", S3Status)
REQUEST_GATE = web.AppKey("request_gate", RequestGate)
RECONCILER = web.AppKey("reconciler", Reconciler)
TUS = web.AppKey("tus", TusUploads)
IETF = web.AppKey("ietf", IetfUploads)
# What the server serves, for its start-up log line (web/server.py).
SERVED: web.AppKey[dict[str, str | None]] = web.AppKey("served")
# The data directory's disk, when anything may be written to it (/readyz).
DATA_DISK: web.AppKey[LocalStore | None] = web.AppKey("data_disk")
