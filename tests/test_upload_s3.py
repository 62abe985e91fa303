"""Uploads into S3 (moto, or RGW on the store tier) through a real mediagate server."""

from __future__ import annotations

import asyncio
import hashlib
import random

import aiohttp
import pytest
from yarl import URL

from support.api import (
    CATALOGS,
    MiB,
    chunks_of,
    database_url_for,
    md5_header,
    read_object,
    sha256_header,
)
from support.tier import plain_client

pytestmark = pytest.mark.store


@pytest.fixture(params=CATALOGS)
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Every test here runs on the SQLite catalog and on the PostgreSQL one."""
    return database_url_for(request)


async def stored(s3_objects, bucket: str, media: dict, filename: str = "video.mp4") -> bytes:
    return await read_object(s3_objects, bucket, f"media/alice/{media['media_id']}/{filename}")


def payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


async def upload_parallel(api, data: bytes, **initiate) -> dict:
    created = await api.initiate(size=len(data), **initiate)
    assert created.status == 201, await created.text()
    session = await created.json()
    pieces = chunks_of(data, session["chunk_size"])
    assert len(pieces) == session["total_chunks"]
    order = list(range(len(pieces)))
    random.Random(len(data)).shuffle(order)
    answers = await asyncio.gather(
        *(api.put_chunk(session["session_id"], n, pieces[n]) for n in order)
    )
    assert [a.status for a in answers] == [200] * len(order)
    done = await api.complete(session["session_id"])
    assert done.status == 201, await done.text()
    return await done.json()


@pytest.mark.parametrize(
    "size",
    [
        1,
        5 * MiB - 1,
        5 * MiB,
        5 * MiB + 1,
        pytest.param(3 * 5 * MiB + 12_345, marks=pytest.mark.transport),
    ],
    ids=["1-byte", "5MiB-1", "5MiB", "5MiB+1", "3-chunks-and-a-tail"],
)
async def test_parallel_shuffled_upload_lands_byte_for_byte(s3_api, s3_objects, bucket, size):
    data = payload(size)
    done = await upload_parallel(s3_api, data, filename="clip.mp4", chunk_size=5 * MiB)

    key = f"media/alice/{done['media_id']}/clip.mp4"
    assert await read_object(s3_objects, bucket, key) == data
    info = done["info"]
    assert (info["size"], info["storage"], info["content_type"]) == (size, "s3", "video/mp4")
    head = await s3_objects.head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == "video/mp4"
    assert head["CacheControl"] == "max-age=31536000, immutable"
    assert head["Metadata"] == {"owner": "alice", "filename": "clip.mp4"}


@pytest.mark.transport
async def test_zero_byte_file_completes_without_chunks(s3_api, s3_objects, bucket):
    created = await (await s3_api.initiate(filename="empty.bin", size=0)).json()
    assert created["total_chunks"] == 0
    done = await s3_api.complete(created["session_id"])
    assert done.status == 201
    media = await done.json()
    key = f"media/alice/{media['media_id']}/empty.bin"
    assert await read_object(s3_objects, bucket, key) == b""


async def test_a_zero_byte_object_carries_what_a_multipart_one_does(s3_api, s3_objects, bucket):
    heads = []
    for size in (0, 5):
        created = await (await s3_api.initiate(filename="clip é.mp4", size=size)).json()
        if size:
            assert (await s3_api.put_chunk(created["session_id"], 0, b"x" * size)).status == 200
        media = await (await s3_api.complete(created["session_id"])).json()
        head = await s3_objects.head_object(
            Bucket=bucket, Key=f"media/alice/{media['media_id']}/clip é.mp4"
        )
        assert head["ContentLength"] == size
        heads.append(head)

    empty, multipart = (
        {name: head.get(name) for name in ("ContentType", "CacheControl", "ContentDisposition")}
        | {"Metadata": head["Metadata"]}
        for head in heads
    )
    assert empty == multipart
    assert empty == {
        "ContentType": "video/mp4",
        "CacheControl": "max-age=31536000, immutable",
        "ContentDisposition": "inline; filename=\"clip _.mp4\"; filename*=UTF-8''clip%20%C3%A9.mp4",
        "Metadata": {"owner": "alice", "filename": "clip%20%C3%A9.mp4"},
    }


async def test_retried_chunk_replaces_the_first(s3_api, s3_objects, bucket):
    data = payload(5 * MiB + 10)
    session = await (await s3_api.initiate(size=len(data), chunk_size=5 * MiB)).json()
    first, tail = chunks_of(data, 5 * MiB)
    assert (
        await s3_api.put_chunk(session["session_id"], 0, payload(5 * MiB, seed=99))
    ).status == 200
    assert (await s3_api.put_chunk(session["session_id"], 0, first)).status == 200
    assert (await s3_api.put_chunk(session["session_id"], 1, tail)).status == 200
    media = await (await s3_api.complete(session["session_id"])).json()
    key = f"media/alice/{media['media_id']}/video.mp4"
    assert await read_object(s3_objects, bucket, key) == data


async def test_chunk_digests_are_checked_and_a_bad_one_keeps_nothing(s3_api, s3_objects, bucket):
    data = payload(5 * MiB + 3)
    session = await (await s3_api.initiate(size=len(data), chunk_size=5 * MiB)).json()
    sid = session["session_id"]
    first, tail = chunks_of(data, 5 * MiB)
    assert (await s3_api.put_chunk(sid, 0, first, md5_header(first))).status == 200
    corrupted = b"X" + first[1:]
    bad = await s3_api.put_chunk(sid, 0, corrupted, md5_header(first))
    assert bad.status == 422
    assert (await bad.json())["type"].endswith("/digest-mismatch")
    bad_sha = await s3_api.put_chunk(sid, 1, b"Y" + tail[1:], sha256_header(tail))
    assert bad_sha.status == 422
    status = await (await s3_api.status(sid)).json()
    assert status["received"] == []  # a failed re-send leaves the chunk to be sent again

    assert (await s3_api.put_chunk(sid, 0, first, sha256_header(first))).status == 200
    assert (await s3_api.put_chunk(sid, 1, tail, md5_header(tail))).status == 200
    media = await (await s3_api.complete(sid)).json()
    assert (
        await read_object(s3_objects, bucket, f"media/alice/{media['media_id']}/video.mp4") == data
    )


@pytest.mark.transport
async def test_multipart_form_chunks_are_streamed(s3_api, s3_objects, bucket):
    data = payload(5 * MiB + 77)
    session = await (await s3_api.initiate(size=len(data), chunk_size=5 * MiB)).json()
    for number, piece in enumerate(chunks_of(data, 5 * MiB)):
        form = aiohttp.FormData()
        form.add_field("note", "ignored")
        form.add_field("file", piece, filename="blob", content_type="application/octet-stream")
        answer = await s3_api.client.post(
            f"/api/v1/media/upload/{session['session_id']}/chunk/{number}",
            data=form,
            headers=s3_api.headers,
        )
        assert answer.status == 200, await answer.text()
    media = await (await s3_api.complete(session["session_id"])).json()
    assert (
        await read_object(s3_objects, bucket, f"media/alice/{media['media_id']}/video.mp4") == data
    )


@pytest.mark.parametrize("in_order", [True, False], ids=["in-order", "shuffled"])
async def test_declared_sha256_is_verified(s3_api, s3_objects, bucket, in_order):
    data = payload(3 * 5 * MiB + 5)
    digest = hashlib.sha256(data).hexdigest()
    session = await (
        await s3_api.initiate(size=len(data), chunk_size=5 * MiB, sha256=digest)
    ).json()
    pieces = chunks_of(data, 5 * MiB)
    order = list(range(len(pieces))) if in_order else [2, 0, 3, 1]
    for n in order:
        assert (await s3_api.put_chunk(session["session_id"], n, pieces[n])).status == 200
    done = await s3_api.complete(session["session_id"])
    assert done.status == 201
    assert (await done.json())["info"]["checksum"] == f"sha256:{digest}"


@pytest.mark.parametrize("in_order", [True, False], ids=["in-order", "shuffled"])
async def test_wrong_sha256_is_422_and_the_session_stays_open(s3_api, s3_objects, bucket, in_order):
    data = payload(2 * 5 * MiB + 5)
    session = await (
        await s3_api.initiate(size=len(data), chunk_size=5 * MiB, sha256="0" * 64)
    ).json()
    sid = session["session_id"]
    pieces = chunks_of(data, 5 * MiB)
    order = [0, 1, 2] if in_order else [2, 1, 0]
    for n in order:
        assert (await s3_api.put_chunk(sid, n, pieces[n])).status == 200
    answer = await s3_api.complete(sid)
    assert answer.status == 422
    assert (await answer.json())["type"].endswith("/file-digest-mismatch")
    status = await s3_api.status(sid)
    assert status.status == 200
    found = await status.json()
    assert found["state"] == "open"
    assert (found["last_error"] is None) is in_order  # read back: the session was reset
    listed = await s3_objects.list_objects_v2(Bucket=bucket)
    assert listed.get("KeyCount", 0) == 0  # nothing published under a wrong digest
    media = await (await s3_api.client.get("/api/v1/media", headers=s3_api.headers)).json()
    assert media["items"] == []


@pytest.mark.transport
async def test_completed_upload_shows_in_info_list_and_can_be_deleted(s3_api, s3_objects, bucket):
    done = await upload_parallel(s3_api, payload(1000), filename="a.webm")
    media_id = done["media_id"]
    info = await (await s3_api.info(media_id)).json()
    assert info["filename"] == "a.webm" and info["size"] == 1000
    assert "/api/v1/media/stream/" in info["stream_url"] and "signature=" in info["stream_url"]

    listed = await (await s3_api.client.get("/api/v1/media", headers=s3_api.headers)).json()
    assert [item["media_id"] for item in listed["items"]] == [media_id]

    assert (await s3_api.delete(media_id)).status == 204
    assert (await s3_api.info(media_id)).status == 404
    assert (await s3_objects.list_objects_v2(Bucket=bucket)).get("KeyCount", 0) == 0


async def test_retried_complete_returns_the_same_media(s3_api):
    session = await (await s3_api.initiate(size=3)).json()
    await s3_api.put_chunk(session["session_id"], 0, b"abc")
    first = await (await s3_api.complete(session["session_id"])).json()
    again = await s3_api.complete(session["session_id"])
    assert again.status == 201
    assert (await again.json())["media_id"] == first["media_id"]


@pytest.mark.transport
async def test_abort_discards_the_multipart_upload(s3_api, s3_objects, bucket):
    session = await (await s3_api.initiate(size=5 * MiB + 1, chunk_size=5 * MiB)).json()
    await s3_api.put_chunk(session["session_id"], 0, payload(5 * MiB))
    assert (await s3_api.abort(session["session_id"])).status == 204
    assert (await s3_api.status(session["session_id"])).status == 404
    uploads = await s3_objects.list_multipart_uploads(Bucket=bucket)
    assert uploads.get("Uploads", []) == []


@pytest.mark.transport
async def test_stream_redirects_to_a_presigned_url(s3_api, bucket):
    done = await upload_parallel(s3_api, payload(4096), filename="movie.mp4")
    answer = await s3_api.client.get(URL(done["stream_url"]).path_qs, allow_redirects=False)
    assert answer.status == 302
    location = answer.headers["Location"]
    assert bucket in location and "X-Amz-Signature" in location
    async with plain_client() as plain, plain.get(location) as s3_answer:
        assert s3_answer.status == 200
        assert s3_answer.headers["Content-Type"] == "video/mp4"
        assert "movie.mp4" in s3_answer.headers["Content-Disposition"]
        assert await s3_answer.read() == payload(4096)


@pytest.mark.transport
async def test_head_on_a_stream_link_follows_to_a_url_signed_for_head(s3_api, bucket):
    """Before: the redirect of a HEAD went to a URL presigned for GET, which a real S3
    (RGW, AWS) answers 403; moto checks no signature, so only the RGW tier shows it."""
    done = await upload_parallel(s3_api, payload(4096), filename="movie.mp4")
    answer = await s3_api.client.head(URL(done["stream_url"]).path_qs, allow_redirects=False)
    assert answer.status == 302
    location = answer.headers["Location"]
    async with plain_client() as plain:
        async with plain.head(location) as s3_answer:
            assert s3_answer.status == 200
            assert s3_answer.headers["Content-Length"] == "4096"
            assert s3_answer.headers["Content-Type"] == "video/mp4"
            assert "movie.mp4" in s3_answer.headers["Content-Disposition"]


async def test_presigned_links_and_objects_keep_active_types_from_rendering(
    s3_api, s3_objects, bucket
):
    page = b"<html><script>alert(document.domain)</script></html>"
    done = await upload_parallel(s3_api, page, filename="x.html")
    answer = await s3_api.client.get(URL(done["stream_url"]).path_qs, allow_redirects=False)
    assert answer.status == 302
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    async with plain_client() as plain, plain.get(answer.headers["Location"]) as s3_answer:
        assert s3_answer.status == 200
        assert s3_answer.headers["Content-Type"] == "application/octet-stream"
        assert s3_answer.headers["Content-Disposition"].startswith("attachment;")
    # What a CDN in front of the bucket would serve.
    key = f"media/alice/{done['media_id']}/x.html"
    head = await s3_objects.head_object(Bucket=bucket, Key=key)
    assert head["ContentDisposition"].startswith("attachment;")
