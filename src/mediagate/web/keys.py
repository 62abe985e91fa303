"""Typed application state."""

from __future__ import annotations

from aiohttp import web

from mediagate.config import Settings
from mediagate.core.engine import Clock, UploadEngine
from mediagate.core.library import MediaLibrary
from mediagate.core.links import StreamLinks

SETTINGS = web.AppKey("settings", Settings)
JWT_SECRET = web.AppKey("jwt_secret", bytes)
ENGINE = web.AppKey("engine", UploadEngine)
LIBRARY = web.AppKey("library", MediaLibrary)
LINKS = web.AppKey("links", StreamLinks)
CLOCK = web.AppKey("clock", Clock)
