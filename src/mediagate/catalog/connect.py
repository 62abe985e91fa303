"""Which catalog the settings name: SQLite in the data directory by default,
PostgreSQL when MEDIAGATE_DATABASE_URL is set. Decided here and nowhere else, for
the server, the migrator and the benches."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from mediagate.catalog.base import CATALOG_FILE, Catalog
from mediagate.catalog.schema import SchemaUpgrade
from mediagate.catalog.sqlite import SQLiteCatalog
from mediagate.config import Settings

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


async def upgrade_catalog(settings: Settings) -> SchemaUpgrade:
    """Bring the catalog's schema up to date (what opening it does) and say what changed."""
    catalog = await _open_catalog(settings)
    await catalog.close()
    return catalog.schema_upgrade


async def _open_catalog(settings: Settings) -> SQLiteCatalog | PostgresCatalog:
    if settings.database_url is None:
        return await SQLiteCatalog.open(
            settings.data_dir / CATALOG_FILE, endpoints=settings.webhook_urls
        )
    from mediagate.catalog.postgres import PostgresCatalog  # psycopg: only when configured

    return await PostgresCatalog.open(
        settings.database_url.get_secret_value(),
        pool_size=settings.database_pool_size,
        wait=settings.database_timeout,
        endpoints=settings.webhook_urls,
    )
