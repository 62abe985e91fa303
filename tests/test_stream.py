"""GET/HEAD /api/v1/media/stream/{id} for local media: signed links, Range, conditionals."""

from __future__ import annotations

import random
import time

import pytest
from yarl import URL

DATA = random.Random(11).randbytes(300_000)


@pytest.fixture
async def uploaded(local_api) -> dict:
    session = await (await local_api.initiate(filename="movie.mp4", size=len(DATA))).json()
    assert (await local_api.put_chunk(session["session_id"], 0, DATA)).status == 200
    return await (await local_api.complete(session["session_id"])).json()


def signed_path(media: dict) -> str:
    return URL(media["stream_url"]).path_qs


async def test_the_signed_link_plays_without_headers(local_api, uploaded):
    answer = await local_api.client.get(signed_path(uploaded))
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "video/mp4"
    assert answer.headers["Accept-Ranges"] == "bytes"
    assert "movie.mp4" in answer.headers["Content-Disposition"]
    assert await answer.read() == DATA


@pytest.mark.parametrize(
    ("range_header", "status", "content_range", "body"),
    [
        ("bytes=0-99", 206, "bytes 0-99/300000", DATA[:100]),
        ("bytes=299990-", 206, "bytes 299990-299999/300000", DATA[299990:]),
        ("bytes=-10", 206, "bytes 299990-299999/300000", DATA[-10:]),
        ("bytes=100-99999999999999999999", 206, "bytes 100-299999/300000", DATA[100:]),
        ("bytes=300000-", 416, "bytes */300000", None),
        ("bytes=oops", 200, None, DATA),
    ],
)
async def test_range_requests_seek(local_api, uploaded, range_header, status, content_range, body):
    answer = await local_api.client.get(signed_path(uploaded), headers={"Range": range_header})
    assert answer.status == status
    assert answer.headers.get("Content-Range") == content_range
    if body is not None:
        assert await answer.read() == body


async def test_validators_give_304_and_if_range(local_api, uploaded):
    path = signed_path(uploaded)
    first = await local_api.client.get(path)
    etag = first.headers["ETag"]
    assert etag == f'"{uploaded["media_id"]}"'
    assert (await local_api.client.get(path, headers={"If-None-Match": etag})).status == 304
    modified = first.headers["Last-Modified"]
    assert (await local_api.client.get(path, headers={"If-Modified-Since": modified})).status == 304
    ranged = await local_api.client.get(path, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert ranged.status == 206
    stale = await local_api.client.get(path, headers={"Range": "bytes=0-9", "If-Range": '"x"'})
    assert stale.status == 200 and await stale.read() == DATA


async def test_head_ignores_range(local_api, uploaded):
    answer = await local_api.client.head(signed_path(uploaded), headers={"Range": "bytes=0-9"})
    assert answer.status == 200
    assert answer.headers["Content-Length"] == str(len(DATA))


async def test_owner_token_works_and_others_do_not(local_api, uploaded):
    path = f"/api/v1/media/stream/{uploaded['media_id']}"
    assert (await local_api.client.get(path, headers=local_api.headers)).status == 200
    mallory = local_api.as_user("mallory")
    assert (await local_api.client.get(path, headers=mallory.headers)).status == 404
    assert (await local_api.client.get(path)).status == 401


def _change_last_character(text: str) -> str:
    """Always a change: replacing with a fixed "0" is none when the id ends in "0"."""
    return text[:-1] + ("1" if text.endswith("0") else "0")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: url.update_query(signature="0" * 64),
        lambda url: url.update_query(expires="1"),
        lambda url: url.with_path(_change_last_character(url.path)).with_query(url.query),
    ],
    ids=["signature", "expiry", "media-id"],
)
async def test_tampered_or_expired_links_are_403(local_api, uploaded, tamper):
    url = tamper(URL(uploaded["stream_url"]))
    assert url != URL(uploaded["stream_url"])
    answer = await local_api.client.get(url.path_qs)
    assert answer.status == 403
    assert answer.headers["Content-Type"].startswith("application/problem+json")


async def test_a_file_missing_on_disk_is_404_not_500(local_api, local_settings, uploaded):
    for path in local_settings.data_dir.rglob("movie.mp4"):
        path.unlink()
    answer = await local_api.client.get(signed_path(uploaded))
    assert answer.status == 404


async def test_a_link_with_a_non_ascii_signature_is_403(local_api):
    expires = int(time.time()) + 3600
    answer = await local_api.client.get(
        "/api/v1/media/stream/abc", params={"expires": str(expires), "signature": "é" * 64}
    )
    assert answer.status == 403
    assert answer.headers["Content-Type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("declared", "kept"),
    [
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        ("Text/Plain;Charset=UTF-8", "text/plain; charset=UTF-8"),
        ('video/mp4; codecs="avc1.42E01E, mp4a.40.2"',) * 2,
    ],
)
async def test_a_declared_media_type_keeps_its_parameters(local_api, declared, kept):
    answer = await local_api.initiate(filename="notes.txt", size=2, content_type=declared)
    session_id = (await answer.json())["session_id"]
    assert (await local_api.put_chunk(session_id, 0, b"hi")).status == 200
    media = await (await local_api.complete(session_id)).json()
    assert media["info"]["content_type"] == kept
    streamed = await local_api.client.get(signed_path(media))
    assert streamed.headers["Content-Type"] == kept
