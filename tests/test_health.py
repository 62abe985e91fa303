"""/healthz, /readyz and /metrics over real HTTP: open without a token, and /readyz's shapes."""

from __future__ import annotations

import pytest

from mediagate.web.keys import CATALOG


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
    assert await answer.json() == {"catalog": "ok", "s3": "disabled"}


async def test_readyz_with_s3_ready(s3_api):
    answer = await s3_api.client.get("/readyz")
    assert answer.status == 200
    assert await answer.json() == {"catalog": "ok", "s3": "ok"}


async def test_readyz_is_a_503_problem_when_the_catalog_does_not_answer(local_api):
    await local_api.client.app[CATALOG].close()

    answer = await local_api.client.get("/readyz")

    assert answer.status == 503
    assert answer.content_type == "application/problem+json"
    problem = await answer.json()
    assert problem["type"].endswith("/not-ready")
    assert (problem["status"], problem["catalog"], problem["s3"]) == (
        503,
        "unavailable",
        "disabled",
    )
    assert "catalog" in problem["detail"]
