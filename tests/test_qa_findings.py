"""Defects found by attacking a running server; each test failed before its fix."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import pytest
from yarl import URL

from conftest import MiB, make_settings
from mediagate.storage.local import LocalStore
from mediagate.storage.s3 import S3Store
from test_upload_errors import assert_problem


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'\xff\xfe{"filename": "a"}', "application/json"),  # not UTF-8
        (b'{"filename": "a", "size": 1}', "application/json; charset=bogus"),
        (b"[" * 50_000, "application/json"),  # nests deeper than the parser's stack
        (b'{"filename": "a", "size": ' + b"9" * 5000 + b"}", "application/json"),
    ],
    ids=["not-utf8", "unknown-charset", "deep-nesting", "5000-digit-number"],
)
async def test_initiate_body_that_cannot_be_decoded_is_400(local_api, body, content_type):
    answer = await local_api.client.post(
        "/api/v1/media/upload/initiate",
        data=body,
        headers={**local_api.headers, "Content-Type": content_type},
    )
    await assert_problem(answer, 400, "bad-request")


@pytest.mark.parametrize("field", ["size", "chunk_size"])
@pytest.mark.parametrize("value", [True, 10.0, "10"])
async def test_initiate_numbers_of_the_wrong_json_type_are_400(local_api, field, value):
    body = {"filename": "a.mp4", "size": 10, field: value}
    answer = await local_api.client.post(
        "/api/v1/media/upload/initiate", json=body, headers=local_api.headers
    )
    problem = await assert_problem(answer, 400, "bad-request")
    assert [error["field"] for error in problem["errors"]] == [field]


async def test_media_list_limit_that_is_a_digit_but_no_number_is_400(local_api):
    # "²".isdigit() is true, int("²") raises
    answer = await local_api.client.get("/api/v1/media?limit=%C2%B2", headers=local_api.headers)
    await assert_problem(answer, 400, "bad-request")


@pytest.mark.parametrize("created_at", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
async def test_media_list_cursor_with_a_date_out_of_range_is_400(local_api, created_at):
    cursor = base64.urlsafe_b64encode(json.dumps([created_at, "x"]).encode()).decode()
    answer = await local_api.client.get(
        "/api/v1/media", params={"cursor": cursor}, headers=local_api.headers
    )
    await assert_problem(answer, 400, "bad-request")


async def test_stream_link_with_a_non_ascii_signature_is_403(local_api):
    expires = int(time.time()) + 3600
    answer = await local_api.client.get(
        "/api/v1/media/stream/abc", params={"expires": str(expires), "signature": "é" * 64}
    )
    await assert_problem(answer, 403, "forbidden")


async def _slow_body(data: bytes, release: asyncio.Event):
    yield data[: len(data) // 2]
    await release.wait()
    yield data[len(data) // 2 :]


async def test_abort_while_a_chunk_is_arriving_answers_the_chunk_4xx(local_api, tmp_path):
    data = os.urandom(1000)
    answer = await local_api.initiate(filename="a.bin", size=len(data))
    session_id = (await answer.json())["session_id"]
    release = asyncio.Event()
    chunk = asyncio.create_task(
        local_api.client.post(
            f"/api/v1/media/upload/{session_id}/chunk/0",
            data=_slow_body(data, release),
            headers=local_api.headers,
        )
    )
    await asyncio.sleep(0.3)  # the first half is in, the server waits for the rest
    assert (await local_api.abort(session_id)).status == 204
    release.set()
    await assert_problem(await chunk, 404, "not-found")  # was a 500 (FOREIGN KEY)
    assert list((tmp_path / "data" / ".staging").iterdir()) == []


def _hold_complete_upload(monkeypatch, store_class) -> tuple[asyncio.Event, asyncio.Event]:
    """Make `store_class.complete_upload` stop until released: complete's unlucky moment."""
    reached, release = asyncio.Event(), asyncio.Event()
    original = store_class.complete_upload

    async def held(self, *args, **kwargs):
        reached.set()
        await release.wait()
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(store_class, "complete_upload", held)
    return reached, release


async def test_abort_racing_a_local_complete_is_409_and_complete_wins(local_api, monkeypatch):
    await _abort_racing_complete(local_api, monkeypatch, LocalStore)


async def test_abort_racing_an_s3_complete_is_409_and_complete_wins(s3_api, monkeypatch):
    await _abort_racing_complete(s3_api, monkeypatch, S3Store)


async def _abort_racing_complete(api, monkeypatch, store_class) -> None:
    data = os.urandom(6 * MiB)
    answer = await api.initiate(filename="a.bin", size=len(data), chunk_size=5 * MiB)
    session_id = (await answer.json())["session_id"]
    assert (await api.put_chunk(session_id, 0, data[: 5 * MiB])).status == 200
    assert (await api.put_chunk(session_id, 1, data[5 * MiB :])).status == 200
    reached, release = _hold_complete_upload(monkeypatch, store_class)
    complete = asyncio.create_task(api.complete(session_id))
    await asyncio.wait_for(reached.wait(), 10)
    # Before: 204, the upload discarded under complete: a local complete then
    # answered 404 (naming a server path), an S3 one 202 "finalizing" for a
    # media that could never finish, with the S3 breaker tripped.
    await assert_problem(await api.abort(session_id), 409, "session-not-open")
    release.set()
    completed = await complete
    assert completed.status == 201, await completed.text()
    media_id = (await completed.json())["media_id"]
    streamed = await api.client.get(f"/api/v1/media/stream/{media_id}", headers=api.headers)
    if streamed.status == 302:  # S3: follow the presigned link
        streamed = await api.client.get(streamed.headers["Location"])
    assert await streamed.read() == data


async def _raw_get(api, path: str, header_lines: bytes) -> tuple[int, bytes]:
    """A GET with header bytes no HTTP client library would send (not UTF-8)."""
    reader, writer = await asyncio.open_connection(api.client.host, api.client.port)
    writer.write(
        b"GET "
        + path.encode()
        + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + header_lines
        + b"\r\n"
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.fixture
async def proxy_mode_api(start_api, s3_settings):
    return await start_api(s3_settings.model_copy(update={"stream_mode": "proxy"}))


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
    proxy_mode_api, header_lines, status
):
    """As local media answer them; botocore failed signing such a header (500)."""
    data = b"0123456789"
    answer = await proxy_mode_api.initiate(filename="a.mp4", size=len(data))
    session_id = (await answer.json())["session_id"]
    assert (await proxy_mode_api.put_chunk(session_id, 0, data)).status == 200
    media = await (await proxy_mode_api.complete(session_id)).json()
    got, body = await _raw_get(proxy_mode_api, URL(media["stream_url"]).path_qs, header_lines)
    assert got == status, body
    if status == 200:
        assert body == data


async def test_bearer_token_that_is_not_utf8_is_401(local_api):
    status, body = await _raw_get(local_api, "/api/v1/media", b"Authorization: Bearer \xff\xfe\r\n")
    assert status == 401, body


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


@pytest.mark.parametrize("mark", ["\u202e", "\u202d", "\u2067", "\u200f", "\u061c"])
async def test_bidi_controls_are_stripped_from_filenames(local_api, mark):
    """`\u202egnp.exe` shows as `exe.png` in a browser's download bar: a spoofed type."""
    answer = await local_api.initiate(filename=f"{mark}gnp.exe", size=2)
    session_id = (await answer.json())["session_id"]
    assert (await local_api.put_chunk(session_id, 0, b"hi")).status == 200
    info = (await (await local_api.complete(session_id)).json())["info"]
    assert info["filename"] == "gnp.exe"
    streamed = await local_api.client.get(URL(info["stream_url"]).path_qs)
    assert streamed.headers["Content-Disposition"].endswith("''gnp.exe")
