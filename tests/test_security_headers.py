"""`X-Content-Type-Options: nosniff` on every answer, whoever produced it."""

from __future__ import annotations

import pytest
from yarl import URL


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/metrics", 200),
        ("GET", "/no/such/path", 404),
        ("PUT", "/api/v1/media", 405),
        ("GET", "/api/v1/media", 401),
        ("GET", "/api/v1/media/stream/nope?expires=1&signature=x", 403),
    ],
)
async def test_every_answer_says_nosniff(local_api, method, path, status):
    answer = await local_api.client.request(method, path)
    assert answer.status == status
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


async def test_file_answers_and_oversized_bodies_say_nosniff(local_api):
    session = await (await local_api.initiate(filename="a.mp4", size=10)).json()
    await local_api.put_chunk(session["session_id"], 0, b"0123456789")
    media = await (await local_api.complete(session["session_id"])).json()
    link = URL(media["stream_url"]).path_qs
    for headers, status in [
        ({}, 200),
        ({"Range": "bytes=2-3"}, 206),
        ({"If-None-Match": f'"{media["media_id"]}"'}, 304),
        ({"Range": "bytes=99-"}, 416),
    ]:
        answer = await local_api.client.get(link, headers=headers)
        assert answer.status == status
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
    too_big = await local_api.client.post(
        "/api/v1/media/upload/initiate", data=b"x" * 100_000, headers=local_api.headers
    )
    assert too_big.status == 413
    assert too_big.headers["X-Content-Type-Options"] == "nosniff"
