"""GET/HEAD /api/v1/media/stream/{id} for local media: signed links, Range, conditionals."""

from __future__ import annotations

import random
import time

import pytest
from yarl import URL

from mediagate.web import media
from mediagate.web.media import private_cache_control

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


async def test_a_local_files_range_and_conditions_are_parsed_once(local_api, uploaded, monkeypatch):
    """send_file weighs them (web/ranges.py); the parse for a store that reads them
    itself (proxy mode) is not made for a file this server sends."""
    parsed = []
    monkeypatch.setattr(media, "proxy_read", lambda *args: parsed.append(args))
    path = signed_path(uploaded)
    first = await local_api.client.get(path)
    modified, etag = first.headers["Last-Modified"], first.headers["ETag"]
    assert (await local_api.client.get(path, headers={"If-Modified-Since": modified})).status == 304
    headers = {"Range": "bytes=0-9,20-29", "If-Range": etag}
    ranged = await local_api.client.get(path, headers=headers)
    assert ranged.status == 206 and ranged.content_type == "multipart/byteranges"
    assert parsed == []


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
    # Text is an active type: served as an attachment of no type, the record keeps the truth.
    served = kept if kept.startswith("video/") else "application/octet-stream"
    assert streamed.headers["Content-Type"] == served


@pytest.mark.parametrize(
    ("filename", "declared"),
    [
        ("x.html", None),
        ("x.svg", None),
        ("x.xml", None),
        ("x.js", None),
        ("video.mp4", "text/html"),
    ],
)
async def test_active_uploads_are_served_as_sandboxed_attachments(local_api, filename, declared):
    """An uploader's HTML or SVG must not run in the API's origin through a signed link."""
    page = b"<html><script>alert(document.domain)</script></html>"
    body = {"filename": filename, "size": len(page)}
    if declared:
        body["content_type"] = declared
    session = await (await local_api.initiate(**body)).json()
    assert (await local_api.put_chunk(session["session_id"], 0, page)).status == 200
    media = await (await local_api.complete(session["session_id"])).json()
    for headers in ({}, {"Range": "bytes=0-9"}):
        answer = await local_api.client.get(signed_path(media), headers=headers)
        assert answer.status in (200, 206)
        assert answer.headers["Content-Type"] == "application/octet-stream"
        assert answer.headers["Content-Disposition"].startswith("attachment;")
        assert answer.headers["Content-Security-Policy"] == "sandbox"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
    info = await (await local_api.info(media["media_id"])).json()
    assert info["content_type"] != "application/octet-stream"  # the record keeps the truth


async def test_video_is_still_shown_inline_without_a_sandbox(local_api, uploaded):
    answer = await local_api.client.get(signed_path(uploaded))
    assert answer.headers["Content-Type"] == "video/mp4"
    assert answer.headers["Content-Disposition"].startswith("inline;")
    assert "Content-Security-Policy" not in answer.headers
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


async def test_bytes_behind_a_signed_link_stay_out_of_shared_caches(local_api, uploaded):
    """A CDN or proxy that kept them would serve them after expiry and after a delete."""
    answer = await local_api.client.get(signed_path(uploaded))
    assert answer.headers["Cache-Control"] == "private, max-age=31536000, immutable"


@pytest.mark.parametrize(
    ("setting", "sent"),
    [
        ("max-age=31536000, immutable", "private, max-age=31536000, immutable"),
        ("public, max-age=600, s-maxage=600", "private, max-age=600"),
        ("private, max-age=60", "private, max-age=60"),
        ("no-store", "no-store"),
        ("", "private"),
    ],
)
def test_private_cache_control(setting, sent):
    assert private_cache_control(setting) == sent
