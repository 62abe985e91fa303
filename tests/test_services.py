"""The composition root: a server's parts, and the background work it owns."""

from __future__ import annotations

import asyncio

from mediagate.core.engine import utc_now
from mediagate.models import StorageKind
from mediagate.services import open_services
from mediagate.web.app import create_app
from support.api import Api, MiB, make_settings, read_object


async def test_closing_the_services_stops_and_waits_for_all_their_background_work(
    unreachable_s3,
):
    settings = unreachable_s3.model_copy(update={"auto_migrate": True})
    before = asyncio.all_tasks()
    async with open_services(settings, clock=utc_now) as services:
        assert services.roles.primary.kind is StorageKind.S3
        assert services.reconciler is not None
        started = asyncio.all_tasks() - before
        names = {task.get_name() for task in started}
        assert {"s3.prepare", "reconciler"} <= names  # S3 is retried, local media migrated
    assert all(task.done() for task in started)  # none left running after close


async def test_a_local_server_has_no_s3_and_no_reconciler(local_settings):
    async with open_services(local_settings, clock=utc_now) as services:
        assert set(services.roles.by_kind) == {StorageKind.LOCAL}
        assert services.roles.primary.kind is StorageKind.LOCAL
        assert services.reconciler is None


async def test_with_s3_and_the_fallback_off_instances_share_no_data_directory(
    aiohttp_client, tmp_path, postgres_server, moto_endpoint, bucket, s3_objects
):
    """Nothing of an upload is on local disk then: each instance keeps its own
    MEDIAGATE_DATA_DIR, and an upload goes through both."""
    database_url = postgres_server.new_database()
    instances = []
    for folder in ("one", "two"):
        settings = make_settings(
            tmp_path / folder,
            use_cloud_storage=True,
            s3_bucket=bucket,
            s3_endpoint_url=moto_endpoint,
            database_url=database_url,
            fallback=False,
        )
        instances.append(Api(await aiohttp_client(create_app(settings)), settings))
    one, two = instances
    ready = await one.client.get("/readyz")
    assert ready.status == 200
    assert "disk" not in await ready.json()  # nothing is written there: not its business
    data = bytes(range(256)) * (24 * 1024) + b"tail"  # 6 MiB + 4 bytes: two chunks
    created = await one.initiate(filename="clip.mp4", size=len(data), chunk_size=5 * MiB)
    session = await created.json()
    assert session["storage"] == "s3"
    sid = session["session_id"]
    assert (await two.put_chunk(sid, 0, data[: 5 * MiB])).status == 200
    assert (await one.put_chunk(sid, 1, data[5 * MiB :])).status == 200
    done = await two.complete(sid)
    assert done.status == 201, await done.text()
    media = await done.json()
    assert media["info"]["storage"] == "s3"
    key = f"media/alice/{media['media_id']}/clip.mp4"
    assert await read_object(s3_objects, bucket, key) == data
