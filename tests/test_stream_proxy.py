"""MEDIAGATE_STREAM_MODE=proxy: S3 media streamed through the server, Range passed on to S3."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from yarl import URL

from support.api import MiB, make_settings
from support.raw_http import raw_get

pytestmark = pytest.mark.store

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


@pytest.mark.transport
async def test_the_whole_object_comes_through_the_server(proxy_api, uploaded):
    answer = await proxy_api.client.get(path(uploaded), allow_redirects=False)
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "video/mp4"
    assert answer.headers["Content-Length"] == str(len(DATA))
    assert answer.headers["Accept-Ranges"] == "bytes"
    assert "movie.mp4" in answer.headers["Content-Disposition"]
    assert answer.headers["Cache-Control"].startswith("private")  # never a shared cache
    assert await answer.read() == DATA


@pytest.mark.transport
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


def byteranges(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """The (Content-Range, bytes) of each part of a multipart/byteranges body."""
    boundary = content_type.split("boundary=", 1)[1].encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n"))
        parts.append((fields[b"Content-Range"].decode(), data.removesuffix(b"\r\n")))
    return parts


async def answer_of(api, path: str, method: str, headers: dict) -> tuple:
    answer = await api.client.request(method, path, headers=headers, allow_redirects=False)
    body = await answer.read()
    content_type = answer.headers.get("Content-Type", "")
    if content_type.startswith("multipart/byteranges"):
        body = byteranges(content_type, body)
    elif content_type.startswith("application/problem+json"):
        body = (await answer.json(content_type=None))["status"]
    return answer.status, answer.headers.get("Content-Range"), body


@pytest.fixture
async def local_twin(start_api, local_settings) -> tuple:
    """The same bytes as `uploaded`, as a local media served by the local path."""
    api = await start_api(local_settings)
    session = await (await api.initiate(filename="movie.mp4", size=len(DATA))).json()
    assert (await api.put_chunk(session["session_id"], 0, DATA)).status == 200
    return api, await (await api.complete(session["session_id"])).json()


END = len(DATA)


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {"Range": f"bytes={END}-"}),  # RGW's 416 carries no size
        ("GET", {"Range": f"bytes={END + 10}-{END + 20}"}),
        ("GET", {"Range": "bytes=-0"}),
        ("GET", {"Range": "bytes=9-3"}),  # invalid: ignored, the whole object (RGW: 416)
        ("GET", {"Range": "bytes=abc"}),
        ("GET", {"Range": "items=0-9"}),  # an unknown unit is ignored
        ("GET", {"Range": "bytes=0-1,4-6"}),  # RGW sent the first range only
        ("GET", {"Range": f"bytes=-3,0-0,100-199,{END}-"}),
        ("GET", {"Range": "bytes=0-4,5-9"}),  # adjacent: one range
        ("GET", {"Range": "bytes=0-1", "If-Range": '"stale"'}),
        ("GET", {"Range": f"bytes={END}-", "If-Range": '"stale"'}),  # If-Range first
        ("HEAD", {"Range": "bytes=0-1,4-6"}),
    ],
    ids=[
        "from-the-end",
        "past-the-end",
        "suffix-0",
        "last-before-first",
        "not-a-range",
        "unknown-unit",
        "two-ranges",
        "four-ranges-one-unsatisfiable",
        "adjacent",
        "stale-if-range",
        "stale-if-range-unsatisfiable",
        "head",
    ],
)
async def test_odd_ranges_are_answered_as_the_local_path_answers_them(
    proxy_api, uploaded, local_twin, method, headers
):
    """RFC 9110 as the local path applies it, with the size from the catalog."""
    local_api, local_media = local_twin
    proxied = await answer_of(proxy_api, path(uploaded), method, headers)
    local = await answer_of(local_api, path(local_media), method, headers)
    assert proxied == local


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


@pytest.mark.transport
async def test_a_player_leaving_mid_body_leaves_the_server_healthy(proxy_api, uploaded):
    url = proxy_api.client.make_url(path(uploaded))
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(f"GET {url.path_qs} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await reader.read(64 * 1024)
    writer.transport.abort()
    for _ in range(3):
        answer = await proxy_api.client.get(path(uploaded), headers={"Range": "bytes=0-0"})
        assert answer.status == 206


@pytest.mark.parametrize(
    ("header_lines", "status"),
    [
        (b"Range: bytes=0-1\xff\r\n", 200),  # an invalid Range is ignored
        (b'If-Match: "\xff"\r\n', 412),  # no ETag of ours matches it
        (b'If-None-Match: "\xff"\r\n', 200),
        (b'If-Range: "\xff"\r\nRange: bytes=0-1\r\n', 200),  # If-Range fails: whole file
    ],
    ids=["range", "if-match", "if-none-match", "if-range"],
)
async def test_proxied_stream_with_non_utf8_conditional_headers_is_no_500(
    proxy_api, header_lines, status
):
    """As local media answer them; botocore failed signing such a header (500)."""
    data = b"0123456789"
    answer = await proxy_api.initiate(filename="a.mp4", size=len(data))
    session_id = (await answer.json())["session_id"]
    assert (await proxy_api.put_chunk(session_id, 0, data)).status == 200
    media = await (await proxy_api.complete(session_id)).json()
    got, body = await raw_get(proxy_api, URL(media["stream_url"]).path_qs, header_lines)
    assert got == status, body
    if status == 200:
        assert body == data


@pytest.mark.transport
async def test_s3_cut_during_a_proxied_stream_closes_the_connection_cleanly(
    start_api, proxy, tmp_path, bucket
):
    """Before: a 500 problem response was written into the middle of the 200's body
    (a player got JSON spliced into the video) and the connection was left open."""
    settings = make_settings(
        tmp_path / "data",
        use_cloud_storage=True,
        s3_bucket=bucket,
        s3_endpoint_url=proxy.url,
        stream_mode="proxy",
    )
    api = await start_api(settings)
    data = os.urandom(12 * MiB)
    answer = await api.initiate(filename="a.mp4", size=len(data), chunk_size=12 * MiB)
    session_id = (await answer.json())["session_id"]
    assert (await api.put_chunk(session_id, 0, data)).status == 200
    media = await (await api.complete(session_id)).json()
    reader, writer = await asyncio.open_connection(api.client.host, api.client.port)
    path = URL(media["stream_url"]).path_qs
    writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    body = await reader.readexactly(1 * MiB)
    await proxy.cut()
    body += await asyncio.wait_for(reader.read(), 10)  # EOF: the server closed it
    writer.close()
    assert len(body) < len(data)
    assert body == data[: len(body)]


async def test_active_uploads_come_through_as_sandboxed_attachments(proxy_api):
    page = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
    session = await (await proxy_api.initiate(filename="x.svg", size=len(page))).json()
    assert (await proxy_api.put_chunk(session["session_id"], 0, page)).status == 200
    media = await (await proxy_api.complete(session["session_id"])).json()
    answer = await proxy_api.client.get(path(media), allow_redirects=False)
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/octet-stream"
    assert answer.headers["Content-Disposition"].startswith("attachment;")
    assert answer.headers["Content-Security-Policy"] == "sandbox"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert await answer.read() == page


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
