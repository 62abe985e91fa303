"""The access log of `mediagate serve`: every request, never a stream link's signature."""

from __future__ import annotations

import json

import aiohttp
from yarl import URL

from mediagate import tokens
from server_process import ServerProcess

SECRET = "test-secret-with-enough-length-for-hs256"


async def test_a_signed_stream_link_is_logged_without_its_query(tmp_path):
    log = tmp_path / "server.log"
    server = ServerProcess(tmp_path / "data", {"MEDIAGATE_JWT_SECRET": SECRET}, log=log)
    await server.start()
    auth = {"Authorization": f"Bearer {tokens.issue(SECRET.encode(), 'alice', 3600)}"}
    try:
        async with aiohttp.ClientSession(base_url=server.base) as http:
            async with http.post(
                "/api/v1/media/upload/initiate", json={"filename": "a.mp4", "size": 5}, headers=auth
            ) as answer:
                session = (await answer.json())["session_id"]
            base = f"/api/v1/media/upload/{session}"
            async with http.post(f"{base}/chunk/0", data=b"hello", headers=auth) as answer:
                assert answer.status == 200
            async with http.post(f"{base}/complete", headers=auth) as answer:
                link = URL((await answer.json())["stream_url"])
            async with http.get(link.path_qs) as answer:
                assert await answer.read() == b"hello"
    finally:
        await server.stop()

    assert link.query["signature"] not in log.read_text()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    access = [line["event"] for line in lines if line["logger"] == "aiohttp.access"]
    assert any(f'"GET {link.path} HTTP/1.1" 200 ' in event for event in access), access
