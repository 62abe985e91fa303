"""MEDIAGATE_AUTO_MIGRATE: media that fell back to local disk move to S3 by themselves.

While S3 is healthy, a round every few minutes moves every local media the
way `mediagate migrate --delete-local` does (the same Migrator: read once,
verified, switched by compare-and-set, the local copy removed last), a few
files at a time so that uploads keep most of the bandwidth.
"""

from __future__ import annotations

import asyncio

import structlog

from mediagate.catalog.base import Catalog
from mediagate.core.session_locks import SessionLocks
from mediagate.migrate.plan import Move, Options, media_pages
from mediagate.migrate.report import Report, Summary
from mediagate.migrate.service import Migrator, Stores
from mediagate.models import StorageKind
from mediagate.storage.base import MigrationTarget
from mediagate.storage.breaker import CircuitBreaker
from mediagate.storage.local import LocalStore

log = structlog.get_logger("mediagate.reconciler")

# Files moved at once: enough to keep a link busy, few enough to leave uploads room.
FILES_AT_ONCE = 2
# How long the server waits between rounds. New fallbacks are rare and not urgent.
ROUND_INTERVAL = 300.0


class Reconciler:
    def __init__(
        self,
        catalog: Catalog,
        local: LocalStore,
        s3: MigrationTarget,
        *,
        breaker: CircuitBreaker,
        key_prefix: str,
        locks: SessionLocks,
    ) -> None:
        """`s3` behind `breaker`: a failing S3 shows in /readyz and sends uploads to
        local disk, whoever met the failure first."""
        self._stores = Stores(catalog, local, s3)
        self._breaker = breaker
        self._locks = locks
        self._options = Options(delete_local=True, batch_size=FILES_AT_ONCE, key_prefix=key_prefix)

    async def run_once(self) -> Summary:
        """Move every local media to S3 now, if S3 is healthy; what happened."""
        summary = Summary()
        if not self._breaker.healthy:
            return summary
        # One instance's round at a time: no media is moved twice.
        async with self._locks.exclusive("reconciler", "round") as mine:
            if mine:
                await self._move_all(summary)
        return summary

    async def _move_all(self, summary: Summary) -> None:
        jobs = [
            Move(media, self._stores.local.path(media.key))
            async for page in media_pages(self._stores.catalog, StorageKind.LOCAL, None)
            for media in page
        ]
        if jobs:
            await Migrator(self._stores, self._options, Report(summary)).run(jobs)
            log.info(
                "reconciler.round",
                migrated=summary.migrated,
                failed=summary.failed,
                skipped=summary.skipped,
                bytes=summary.bytes,
            )

    async def run_forever(self, interval: float = ROUND_INTERVAL) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("reconciler.failed")
            await asyncio.sleep(interval)
