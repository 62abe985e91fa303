"""The composition root: a server's parts, and the background work it owns."""

from __future__ import annotations

import asyncio

from mediagate.core.engine import utc_now
from mediagate.models import StorageKind
from mediagate.services import open_services


async def test_closing_the_services_stops_and_waits_for_all_their_background_work(
    unreachable_s3,
):
    settings = unreachable_s3.model_copy(update={"auto_migrate": True})
    before = asyncio.all_tasks()
    async with open_services(settings, clock=utc_now) as services:
        assert services.default_storage is StorageKind.S3
        assert services.reconciler is not None
        started = asyncio.all_tasks() - before
        names = {task.get_name() for task in started}
        assert {"s3.prepare", "reconciler"} <= names  # S3 is retried, local media migrated
    assert all(task.done() for task in started)  # none left running after close


async def test_a_local_server_has_no_s3_and_no_reconciler(local_settings):
    async with open_services(local_settings, clock=utc_now) as services:
        assert set(services.stores) == {StorageKind.LOCAL}
        assert services.default_storage is StorageKind.LOCAL
        assert services.reconciler is None
