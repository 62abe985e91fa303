"""/healthz, /readyz and /metrics over real HTTP: open without a token, and /readyz's shapes."""

from __future__ import annotations

import pytest

from support.api import make_settings


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/healthz", "application/json"),
        ("/readyz", "application/json"),
        ("/metrics", "text/plain"),
    ],
)
async def test_operations_endpoints_need_no_token(local_api, path, content_type):
    answer = await local_api.client.get(path)
    assert answer.status == 200
    assert answer.content_type == content_type


async def test_healthz_says_the_process_is_alive(local_api):
    answer = await local_api.client.get("/healthz")
    assert await answer.json() == {"status": "ok"}


async def test_readyz_with_local_storage_only(local_api):
    answer = await local_api.client.get("/readyz")
    body = await answer.json()
    assert body.pop("disk_free_bytes") > 0
    assert body == {"catalog": "ok", "s3": "disabled", "disk": "ok"}


async def test_readyz_with_s3_ready(s3_api):
    answer = await s3_api.client.get("/readyz")
    assert answer.status == 200
    body = await answer.json()
    assert body.pop("disk_free_bytes") > 0  # the SQLite catalog, and the spill, are on it
    assert body == {"catalog": "ok", "s3": "ok", "disk": "ok"}


async def test_readyz_is_a_503_naming_the_data_disk_below_its_floor(start_api, tmp_path):
    api = await start_api(make_settings(tmp_path / "data", min_free_disk="1024TiB"))
    answer = await api.client.get("/readyz")
    assert answer.status == 503
    assert answer.content_type == "application/problem+json"
    problem = await answer.json()
    assert problem["type"].endswith("/not-ready")
    assert (problem["catalog"], problem["disk"]) == ("ok", "low")
    assert 0 < problem["disk_free_bytes"] < 1024**5
    assert "data disk" in problem["detail"]
    assert "MEDIAGATE_MIN_FREE_DISK=1024 TiB" in problem["detail"]
