"""MEDIAGATE_STREAM_MODE=proxy: S3 media streamed through the server, Range passed on to S3."""

from __future__ import annotations

import asyncio
import random

import pytest
from yarl import URL

from conftest import MiB, make_settings

DATA = random.Random(12).randbytes(3 * MiB + 5)


@pytest.fixture
async def proxy_api(start_api, s3_settings):
    return await start_api(s3_settings.model_copy(update={"stream_mode": "proxy"}))


@pytest.fixture
async def uploaded(proxy_api) -> dict:
    session = await (await proxy_api.initiate(filename="movie.mp4", size=len(DATA))).json()
    assert (await proxy_api.put_chunk(session["session_id"], 0, DATA)).status == 200
    media = await (await proxy_api.complete(session["session_id"])).json()
    assert media["info"]["storage"] == "s3"
    return media


def path(media: dict) -> str:
    return URL(media["stream_url"]).path_qs


async def test_the_whole_object_comes_through_the_server(proxy_api, uploaded):
    answer = await proxy_api.client.get(path(uploaded), allow_redirects=False)
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "video/mp4"
    assert answer.headers["Content-Length"] == str(len(DATA))
    assert answer.headers["Accept-Ranges"] == "bytes"
    assert "movie.mp4" in answer.headers["Content-Disposition"]
    assert await answer.read() == DATA


@pytest.mark.parametrize(
    ("headers", "status", "content_range", "body"),
    [
        ({"Range": "bytes=10-19"}, 206, f"bytes 10-19/{len(DATA)}", DATA[10:20]),
        (
            {"Range": "bytes=-7"},
            206,
            f"bytes {len(DATA) - 7}-{len(DATA) - 1}/{len(DATA)}",
            DATA[-7:],
        ),
        ({"Range": f"bytes={len(DATA)}-"}, 416, f"bytes */{len(DATA)}", None),
        ({"Range": "bytes=0-9", "If-Range": '"stale"'}, 200, None, DATA),
    ],
)
async def test_ranges_are_answered_by_s3(proxy_api, uploaded, headers, status, content_range, body):
    answer = await proxy_api.client.get(path(uploaded), headers=headers)
    assert answer.status == status
    assert answer.headers.get("Content-Range") == content_range
    if body is not None:
        assert await answer.read() == body


async def test_if_range_with_the_current_etag_keeps_the_range(proxy_api, uploaded):
    etag = (await proxy_api.client.head(path(uploaded))).headers["ETag"]
    answer = await proxy_api.client.get(
        path(uploaded), headers={"Range": "bytes=0-9", "If-Range": etag}
    )
    assert answer.status == 206 and await answer.read() == DATA[:10]


async def test_conditionals_give_304_and_412(proxy_api, uploaded):
    head = await proxy_api.client.head(path(uploaded))
    assert head.status == 200 and head.headers["Content-Length"] == str(len(DATA))
    etag = head.headers["ETag"]
    not_modified = await proxy_api.client.get(path(uploaded), headers={"If-None-Match": etag})
    assert not_modified.status == 304 and await not_modified.read() == b""
    failed = await proxy_api.client.get(path(uploaded), headers={"If-Match": '"other"'})
    assert failed.status == 412
    assert failed.headers["Content-Type"].startswith("application/problem+json")


async def test_a_player_leaving_mid_body_leaves_the_server_healthy(proxy_api, uploaded):
    url = proxy_api.client.make_url(path(uploaded))
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(f"GET {url.path_qs} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await reader.read(64 * 1024)
    writer.transport.abort()
    for _ in range(3):
        answer = await proxy_api.client.get(path(uploaded), headers={"Range": "bytes=0-0"})
        assert answer.status == 206


async def test_s3_failing_under_proxied_reads_shows_in_readyz(start_api, proxy, tmp_path, bucket):
    settings = make_settings(
        tmp_path / "data",
        use_cloud_storage=True,
        s3_bucket=bucket,
        s3_endpoint_url=proxy.url,
        s3_max_attempts=1,
        stream_mode="proxy",
    )
    api = await start_api(settings)
    session = await (await api.initiate(filename="movie.mp4", size=10)).json()
    assert (await api.put_chunk(session["session_id"], 0, b"0123456789")).status == 200
    media = await (await api.complete(session["session_id"])).json()
    await proxy.cut()
    answer = await api.client.get(path(media))
    assert answer.status == 503
    ready = await (await api.client.get("/readyz")).json()
    assert ready["s3"] == "unavailable"  # new uploads go to local disk without trying S3
    other = await (await api.as_user("bob").initiate(size=1)).json()
    assert other["storage"] == "local"
