"""The composition root: what a process (server, migrator, bench) is built from.

Settings choose the catalog here and nowhere else: SQLite in the data
directory by default, PostgreSQL when MEDIAGATE_DATABASE_URL is set.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

from mediagate.catalog.base import Catalog, SharedCatalog
from mediagate.catalog.schema import SchemaUpgrade
from mediagate.catalog.sqlite import CATALOG_FILE, SQLiteCatalog
from mediagate.config import Settings, SettingsError
from mediagate.core.session_locks import CatalogSessionLocks, InProcessSessionLocks, SessionLocks

if TYPE_CHECKING:
    from mediagate.catalog.postgres import PostgresCatalog


@contextlib.asynccontextmanager
async def open_catalog(settings: Settings) -> AsyncIterator[Catalog]:
    """The catalog of these settings, its schema brought up to date; closed on exit."""
    catalog = await _open_catalog(settings)
    try:
        yield catalog
    finally:
        await catalog.close()


def session_locks(settings: Settings, catalog: Catalog) -> SessionLocks:
    """Where the upload rules hold: in this process for SQLite (one process owns it),
    in the catalog for PostgreSQL (any instance may get any request)."""
    if settings.database_url is None:
        return InProcessSessionLocks(catalog)
    from mediagate.catalog.postgres import PostgresCatalog

    return CatalogSessionLocks(cast(PostgresCatalog, catalog), instance_id())


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
    mine = marker.read_text().strip() if marker.is_file() else None
    proposed = mine or uuid.uuid4().hex
    shared = await catalog.shared_value("spool-token", proposed)
    if mine is None and shared == proposed:  # the first instance: this directory is the spool
        marker.parent.mkdir(parents=True, exist_ok=True)
        written = marker.with_suffix(".new")
        written.write_text(f"{shared}\n")
        os.replace(written, marker)
        return
    if mine != shared:
        raise SettingsError(
            f"invalid setting MEDIAGATE_DATA_DIR={str(data_dir)!r}: it is not the data "
            "directory the other instances on this MEDIAGATE_DATABASE_URL use "
            f"({marker} {'holds another token' if mine else 'is missing'}); mount the same "
            f"shared volume on every instance (or, if this is that volume, write {shared} "
            "into that file)"
        )


async def upgrade_catalog(settings: Settings) -> SchemaUpgrade:
    """Bring the catalog's schema up to date (what opening it does) and say what changed."""
    catalog = await _open_catalog(settings)
    await catalog.close()
    return catalog.schema_upgrade


async def _open_catalog(settings: Settings) -> SQLiteCatalog | PostgresCatalog:
    if settings.database_url is None:
        return await SQLiteCatalog.open(settings.data_dir / CATALOG_FILE)
    from mediagate.catalog.postgres import PostgresCatalog  # psycopg: only when configured

    return await PostgresCatalog.open(
        settings.database_url.get_secret_value(),
        pool_size=settings.database_pool_size,
        wait=settings.database_timeout,
    )
