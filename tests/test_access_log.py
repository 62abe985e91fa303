"""The access log of `mediagate serve`: every request, never a stream link's signature;
in JSON one field per fact, the bytes being the body bytes really sent."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from mediagate import tokens
from support.api import MiB, chunks_of
from support.server_process import ServerProcess

SECRET = "test-secret-with-enough-length-for-hs256"
AUTH = {"Authorization": f"Bearer {tokens.issue(SECRET.encode(), 'alice', 3600)}"}


async def upload(http: aiohttp.ClientSession, data: bytes) -> URL:
    """Upload `data` as alice's media; its signed stream link."""
    async with http.post(
        "/api/v1/media/upload/initiate",
        json={"filename": "a.mp4", "size": len(data)},
        headers=AUTH,
    ) as answer:
        session = await answer.json()
    base = f"/api/v1/media/upload/{session['session_id']}"
    for number, piece in enumerate(chunks_of(data, session["chunk_size"])):
        async with http.post(f"{base}/chunk/{number}", data=piece, headers=AUTH) as answer:
            assert answer.status == 200
    async with http.post(f"{base}/complete", headers=AUTH) as answer:
        return URL((await answer.json())["stream_url"])


async def access_lines(log: Path, count: int) -> list[dict[str, Any]]:
    """The first `count` access lines, once written (a line follows its answer's end)."""
    async with asyncio.timeout(30):
        while True:
            text = await asyncio.to_thread(log.read_text)
            lines = [json.loads(line) for line in text.splitlines()]
            access = [line for line in lines if line["logger"] == "aiohttp.access"]
            if len(access) >= count:
                return access
            await asyncio.sleep(0.1)


async def named_lines(log: Path, wanted: list[str]) -> dict[str, dict[str, Any]]:
    """The access lines of the requests sent with these X-Request-IDs, once all are written."""
    async with asyncio.timeout(30):
        while True:
            by_id = {line["request_id"]: line for line in await access_lines(log, 0)}
            if all(request_id in by_id for request_id in wanted):
                return by_id
            await asyncio.sleep(0.1)


async def named_and_other_line(
    log: Path, ids: list[dict[str, str]], path: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The access lines of the requests sent with `ids`, in that order, and the one other
    line for `path`, once all are written."""
    wanted = [request_id["X-Request-ID"] for request_id in ids]
    async with asyncio.timeout(30):
        while True:
            access = await access_lines(log, 0)
            by_id = {line["request_id"]: line for line in access}
            others = [
                line for line in access if line["path"] == path and line["request_id"] not in wanted
            ]
            if all(request_id in by_id for request_id in wanted) and others:
                return [by_id[request_id] for request_id in wanted], others[0]
            await asyncio.sleep(0.1)


async def test_a_signed_stream_link_is_logged_without_its_query(tmp_path):
    log = tmp_path / "server.log"
    server = ServerProcess(tmp_path / "data", {"MEDIAGATE_JWT_SECRET": SECRET}, log=log)
    await server.start()
    try:
        async with aiohttp.ClientSession(base_url=server.base) as http:
            link = await upload(http, b"hello")
            async with http.get(link.path_qs) as answer:
                assert await answer.read() == b"hello"
            access = await access_lines(log, 5)
    finally:
        await server.stop()

    assert link.query["signature"] not in log.read_text()
    assert {"method": "GET", "path": link.path, "status": 200} in [
        {name: line[name] for name in ("method", "path", "status")} for line in access
    ]


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "reads"])
async def test_json_lines_give_each_request_its_fields_and_the_body_bytes_sent(tmp_path, sendfile):
    # Larger than what the kernel's socket buffers hold, so that a cut download is cut.
    data = os.urandom(40 * MiB + 5)
    size = len(data)
    log = tmp_path / "server.log"
    env = {"MEDIAGATE_JWT_SECRET": SECRET} | ({} if sendfile else {"AIOHTTP_NOSENDFILE": "1"})
    server = ServerProcess(tmp_path / "data", env, log=log)
    await server.start()
    try:
        async with aiohttp.ClientSession(base_url=server.base) as http:
            link = await upload(http, data)
            media_id = link.path.rsplit("/", 1)[-1]
            ids = [{"X-Request-ID": f"request-{n}"} for n in range(5)]
            async with http.get(link.path_qs, headers=ids[0]) as whole:
                assert await whole.read() == data
            async with http.get(link.path_qs, headers={"Range": "bytes=10-1009", **ids[1]}) as part:
                assert (part.status, await part.read()) == (206, data[10:1010])
            async with http.head(link.path_qs, headers=ids[2]) as head:
                assert head.status == 200
            info_url = f"/api/v1/media/info/{media_id}"
            async with http.get(info_url, headers={**AUTH, **ids[3]}) as info:
                info_body = await info.read()
            async with http.get(info_url, headers=ids[4]) as refused:
                refused_body = await refused.read()
            async with aiohttp.ClientSession(base_url=server.base) as cut_short:
                async with cut_short.get(link.path_qs) as download:
                    read = len(await download.content.readexactly(MiB))
                    download.close()  # the connection, mid-body
            # Picked by request id: the upload's last line may still be on its way.
            named, cut = await named_and_other_line(log, ids, link.path)
    finally:
        await server.stop()

    assert [
        {name: line[name] for name in ("method", "path", "status", "bytes_sent", "user_id")}
        for line in named
    ] == [
        {"method": "GET", "path": link.path, "status": 200, "bytes_sent": size, "user_id": None},
        {"method": "GET", "path": link.path, "status": 206, "bytes_sent": 1000, "user_id": None},
        {"method": "HEAD", "path": link.path, "status": 200, "bytes_sent": 0, "user_id": None},
        {
            "method": "GET",
            "path": f"/api/v1/media/info/{media_id}",
            "status": 200,
            "bytes_sent": len(info_body),
            "user_id": "alice",
        },
        {
            "method": "GET",
            "path": f"/api/v1/media/info/{media_id}",
            "status": 401,
            "bytes_sent": len(refused_body),
            "user_id": None,
        },
    ]
    for line, request_id in zip(named, ids, strict=True):
        assert line["event"] == "http.request"
        assert line["request_id"] == request_id["X-Request-ID"]
        assert line["remote"] == "127.0.0.1"
        assert 0 <= line["duration_seconds"] < 60
    assert (cut["path"], cut["status"]) == (link.path, 200)
    assert read <= cut["bytes_sent"] < len(data)


async def test_a_terminal_gets_one_line_of_text_with_the_body_bytes(tmp_path):
    data = os.urandom(3 * MiB)
    log = tmp_path / "server.log"
    server = ServerProcess(
        tmp_path / "data",
        {"MEDIAGATE_JWT_SECRET": SECRET, "MEDIAGATE_LOG_FORMAT": "console"},
        log=log,
    )
    await server.start()
    try:
        async with aiohttp.ClientSession(base_url=server.base) as http:
            link = await upload(http, data)
            async with http.get(link.path_qs) as answer:
                assert await answer.read() == data
            async with asyncio.timeout(30):
                while f'"GET {link.path} HTTP/1.1"' not in await asyncio.to_thread(log.read_text):
                    await asyncio.sleep(0.1)
    finally:
        await server.stop()

    (line,) = [line for line in log.read_text().splitlines() if f"GET {link.path} " in line]
    assert re.search(rf'127\.0\.0\.1 "GET {re.escape(link.path)} HTTP/1\.1" 200 {len(data)} ', line)
    assert link.query["signature"] not in line


async def test_an_upload_grant_in_a_path_is_not_logged(tmp_path):
    grant = "YWxpY2U.1999999999.c2lnbmF0dXJlLXRoYXQtbXVzdC1zdGF5LXNlY3JldA"
    log = tmp_path / "server.log"
    server = ServerProcess(tmp_path / "data", {"MEDIAGATE_JWT_SECRET": SECRET}, log=log)
    await server.start()
    try:
        async with aiohttp.ClientSession(base_url=server.base) as http:
            path = f"/api/v1/companion/grant/{grant}/s3/multipart"
            named = {"X-Request-ID": "granted"}
            async with http.post(path, json={"filename": "a.mp4"}, headers=named) as answer:
                assert answer.status >= 400  # not a genuine grant
            line = (await named_lines(log, ["granted"]))["granted"]
    finally:
        await server.stop()

    assert line["path"] == "/api/v1/companion/grant/[grant]/s3/multipart"
    assert "c2lnbmF0dXJl" not in log.read_text()


async def test_an_s3_object_relayed_logs_its_body_bytes(tmp_path, moto_endpoint, bucket):
    data = os.urandom(40 * MiB + 5)
    log = tmp_path / "server.log"
    env = {
        "MEDIAGATE_JWT_SECRET": SECRET,
        "MEDIAGATE_STREAM_MODE": "proxy",
        "USE_CLOUD_STORAGE": "true",
        "AWS_S3_BUCKET_NAME": bucket,
        "AWS_S3_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
    }
    server = ServerProcess(tmp_path / "data", env, log=log)
    await server.start()
    try:
        async with aiohttp.ClientSession(base_url=server.base) as http:
            link = await upload(http, data)
            info_url = f"/api/v1/media/info/{link.path.rsplit('/', 1)[-1]}"
            async with http.get(info_url, headers=AUTH) as info:
                assert (await info.json())["storage"] == "s3"
            async with http.get(link.path_qs, headers={"X-Request-ID": "whole"}) as answer:
                assert await answer.read() == data
            async with aiohttp.ClientSession(base_url=server.base) as cut_short:
                async with cut_short.get(link.path_qs, headers={"X-Request-ID": "cut"}) as answer:
                    read = len(await answer.content.readexactly(MiB))
                    answer.close()  # the connection, mid-body
            logged = await named_lines(log, ["whole", "cut"])
            whole, cut = logged["whole"], logged["cut"]
    finally:
        await server.stop()

    assert (whole["path"], whole["status"], whole["bytes_sent"]) == (link.path, 200, len(data))
    assert (cut["path"], cut["status"]) == (link.path, 200)
    assert read <= cut["bytes_sent"] < len(data)
