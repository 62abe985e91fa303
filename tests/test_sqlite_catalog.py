"""The SQLite catalog: what it guarantees beyond plain storage of records."""

from __future__ import annotations

import asyncio
import sqlite3
import stat

import pytest

from mediagate.catalog.base import CATALOG_FILE
from mediagate.catalog.sql import Tx
from mediagate.catalog.sqlite import SQLiteCatalog


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_catalog_files_are_readable_by_their_owner_only(local_api, local_settings):
    assert (await local_api.initiate(filename="a.bin", size=2)).status == 201  # writes the WAL
    catalog = local_settings.data_dir / CATALOG_FILE
    files = [
        catalog,
        catalog.with_name(f"{CATALOG_FILE}-wal"),
        catalog.with_name(f"{CATALOG_FILE}-shm"),
    ]
    assert {file.name: mode(file) for file in files} == {file.name: 0o600 for file in files}


async def test_a_catalog_left_world_readable_is_made_private(tmp_path):
    path = tmp_path / CATALOG_FILE
    sqlite3.connect(path).close()
    path.chmod(0o644)
    catalog = await SQLiteCatalog.open(path)
    await catalog.close()
    assert mode(path) == 0o600


async def test_a_transaction_that_awaits_anything_but_its_statements_is_rolled_back(tmp_path):
    """A transaction runs to its end in one hop to the catalog's thread: a `work` that
    would yield to the event loop (and let another call's statements in) is refused."""
    catalog = await SQLiteCatalog.open(tmp_path / CATALOG_FILE)

    async def strays(tx: Tx) -> None:
        await tx.execute("INSERT INTO shared_rows VALUES (1)")
        await asyncio.sleep(0)

    try:
        await catalog._execute("CREATE TABLE shared_rows (n INTEGER)")
        with pytest.raises(RuntimeError, match="awaited something other than a statement"):
            await catalog._transaction(strays)
        assert await catalog._fetch_all("SELECT n FROM shared_rows") == []
    finally:
        await catalog.close()
