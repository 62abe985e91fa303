"""The upload engine's own bookkeeping, seen through the API and the engine."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import timedelta

import pytest

from mediagate import errors
from mediagate.core.assembly import worth_retrying
from mediagate.core.engine import utc_now
from mediagate.web.app import create_app
from mediagate.web.keys import SERVICES
from support.api import Api


@pytest.mark.parametrize(
    ("problem", "retried"),
    [
        (errors.StorageUnavailable("S3 away"), True),
        (errors.CatalogUnavailable("PostgreSQL restarting"), True),
        (errors.StorageFull("disk full"), True),
        (errors.BodyReadTimeout("a spilled part's read stalled"), True),
        (errors.NotFound("the spilled chunk's file is gone"), False),
        (errors.MissingChunks("a chunk's record is gone"), False),
        (errors.StorageRejected("InvalidPart"), False),
        (errors.FileDigestMismatch("wrong SHA-256"), False),
    ],
)
def test_a_finalizing_session_is_retried_only_for_what_may_pass(
    problem: errors.Problem, retried: bool
) -> None:
    assert worth_retrying(problem) is retried


async def test_retried_completes_and_aborts_of_finished_sessions_keep_no_gates(
    aiohttp_client, local_settings
):
    now = [utc_now()]
    client = await aiohttp_client(create_app(local_settings, clock=lambda: now[0]))
    api = Api(client, local_settings)
    engine = client.app[SERVICES].engine
    completed, expired = [], []
    for sessions in (completed, expired):
        for _ in range(20):
            sid = (await (await api.initiate(size=1)).json())["session_id"]
            assert (await api.put_chunk(sid, 0, b"x")).status == 200
            sessions.append(sid)
    for sid in completed:
        assert (await api.complete(sid)).status == 201
    now[0] += timedelta(seconds=local_settings.session_ttl + 1)
    assert await engine.expire_sessions() == len(expired)

    for sid in completed:
        assert (await api.complete(sid)).status == 201
        assert (await api.abort(sid)).status == 409
    for sid in expired:
        assert (await api.complete(sid)).status == 410
    assert len(engine.locks) == 0


async def test_the_sweep_forgets_digests_of_sessions_another_server_finished(
    start_api, local_settings
):
    first, second = await start_api(local_settings), await start_api(local_settings)
    sids = []
    for _ in range(5):
        answer = await first.initiate(size=1, sha256=hashlib.sha256(b"x").hexdigest())
        sid = (await answer.json())["session_id"]
        assert (await first.put_chunk(sid, 0, b"x")).status == 200
        sids.append(sid)
    for sid in sids[:3]:
        assert (await second.complete(sid)).status == 201
    for sid in sids[3:]:
        assert (await second.abort(sid)).status == 204
    engine = first.client.app[SERVICES].engine
    assert set(engine._digests) == set(sids)
    await engine.expire_sessions()
    assert engine._digests == {}
    assert len(engine.locks) == 0


async def test_the_sweep_removes_staging_files_no_session_refers_to(local_api):
    """An abort killed after forgetting its session leaves its staging file behind."""
    engine = local_api.client.app[SERVICES].engine
    catalog = local_api.client.app[SERVICES].catalog
    live = (await (await local_api.initiate(size=3)).json())["session_id"]
    orphaned = (await (await local_api.initiate(size=3)).json())["session_id"]
    for sid in (live, orphaned):
        assert (await local_api.put_chunk(sid, 0, b"abc")).status == 200
    await catalog.delete_session(orphaned)
    staging = local_api.settings.data_dir / ".staging"
    hours_ago = time.time() - 2 * 3600
    for file in staging.iterdir():
        os.utime(file, (hours_ago, hours_ago))

    await engine.expire_sessions()
    (left,) = staging.iterdir()
    assert (await local_api.complete(live)).status == 201  # the live session's file stayed
    assert not left.exists()
