"""Typed application state.

The server's parts are one key, `SERVICES`, typed by what the handlers use of them
(`services.Services` is the one the server hangs there).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Protocol

from aiohttp import web

from mediagate.catalog.base import Catalog
from mediagate.config import Settings
from mediagate.core.direct import DirectUploads
from mediagate.core.engine import Clock, UploadEngine
from mediagate.core.ietf import IetfUploads
from mediagate.core.library import MediaLibrary
from mediagate.core.links import StreamLinks
from mediagate.core.tus import TusUploads
from mediagate.core.upload_grants import UploadGrants
from mediagate.jwks import IdentityKeys
from mediagate.web.request_gate import RequestGate


class StorageStatus(Protocol):
    """Whether S3 can take new uploads, and why not (/readyz)."""

    @property
    def state(self) -> StrEnum: ...

    @property
    def problem(self) -> str | None: ...


class DataDisk(Protocol):
    """The disk of the data directory (/readyz)."""

    @property
    def root(self) -> Path: ...

    @property
    def min_free(self) -> int: ...

    async def free_space(self) -> int: ...


class ServerParts(Protocol):
    """What the handlers use of a running server."""

    @property
    def catalog(self) -> Catalog: ...

    @property
    def engine(self) -> UploadEngine: ...

    @property
    def library(self) -> MediaLibrary: ...

    @property
    def tus(self) -> TusUploads: ...

    @property
    def direct(self) -> DirectUploads: ...

    @property
    def ietf(self) -> IetfUploads: ...

    @property
    def s3_status(self) -> StorageStatus: ...

    @property
    def data_disk(self) -> DataDisk | None:
        """None when nothing may be written to it."""
        ...


SETTINGS = web.AppKey("settings", Settings)
JWT_SECRET = web.AppKey("jwt_secret", bytes)
# The identity provider's keys, with MEDIAGATE_JWT_JWKS_URL set.
IDENTITY_KEYS = web.AppKey("identity_keys", IdentityKeys)
SERVICES: web.AppKey[ServerParts] = web.AppKey("services")
LINKS = web.AppKey("links", StreamLinks)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
REQUEST_GATE = web.AppKey("request_gate", RequestGate)
GRANTS = web.AppKey("grants", UploadGrants)
# What the server serves, for its start-up log line (web/server.py).
SERVED: web.AppKey[dict[str, str | None]] = web.AppKey("served")
