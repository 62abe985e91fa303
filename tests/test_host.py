"""The Host header: links are built on it only when it is a valid host[:port]."""

from __future__ import annotations

import asyncio
import json

import pytest
from structlog.testing import capture_logs

from mediagate.web.host import is_valid_host

BAD_HOSTS = [":80", "x:99999", "a:b:c", "h/../x", "ex@mple.com", "x:0", "[zz::1]", "a b"]


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("localhost", True),
        ("media.example.com", True),
        ("media.example.com.", True),
        ("media.example.com:8443", True),
        ("127.0.0.1:8080", True),
        ("[::1]", True),
        ("[::1]:8080", True),
        ("my_service:80", True),
        *[(bad, False) for bad in BAD_HOSTS],
        ("", False),
        ("x:", False),
        ("-x.com", False),
        ("a..b", False),
        ("é.com", False),
        ("a" * 64 + ".com", False),
    ],
)
def test_host_values(value, valid):
    assert is_valid_host(value) is valid


async def raw(api, method: str, path: str, host: str) -> tuple[int, dict, dict]:
    """One request with exactly the Host given, as a hostile client would send it."""
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: {api.headers['Authorization']}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode())
    async with asyncio.timeout(10):
        answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    header_block, _, body = rest.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in header_block.decode().split("\r\n"))
    return int(status_line.split()[1]), headers, json.loads(body) if body else {}


async def complete_upload(api) -> str:
    session = await (await api.initiate(filename="a.mp4", size=3)).json()
    assert (await api.put_chunk(session["session_id"], 0, b"abc")).status == 200
    return session["session_id"]


@pytest.mark.parametrize("host", BAD_HOSTS)
async def test_a_malformed_host_is_400_on_info_list_and_complete(local_api, host):
    session_id = await complete_upload(local_api)
    status, headers, body = await raw(
        local_api, "POST", f"/api/v1/media/upload/{session_id}/complete", host
    )
    assert status == 400 and headers["Content-Type"] == "application/problem+json"
    assert "Host" in body["detail"]
    # Nothing was recorded: the session is still open and completes with a sane Host.
    assert (await (await local_api.status(session_id)).json())["state"] == "open"
    listing = await (await local_api.client.get("/api/v1/media", headers=local_api.headers)).json()
    assert listing["items"] == []
    media = await (await local_api.complete(session_id)).json()

    for path in (f"/api/v1/media/info/{media['media_id']}", "/api/v1/media"):
        status, _, body = await raw(local_api, "GET", path, host)
        assert status == 400 and "Host" in body["detail"]


async def test_links_carry_the_valid_host_the_client_sent(local_api):
    session_id = await complete_upload(local_api)
    status, _, body = await raw(
        local_api,
        "POST",
        f"/api/v1/media/upload/{session_id}/complete",
        "media.example.com:8443",
    )
    assert status == 201
    assert body["stream_url"].startswith("http://media.example.com:8443/api/v1/media/stream/")


async def test_the_public_url_wins_over_the_host(start_api, local_settings):
    settings = local_settings.model_copy(update={"public_url": "https://media.example.com"})
    api = await start_api(settings)
    session_id = await complete_upload(api)
    status, _, body = await raw(
        api, "POST", f"/api/v1/media/upload/{session_id}/complete", "elsewhere.example"
    )
    assert status == 201
    assert body["stream_url"].startswith("https://media.example.com/api/v1/media/stream/")


async def test_start_up_warns_when_no_public_url_is_set(start_api, local_settings):
    with capture_logs() as logs:
        await start_api(local_settings)
    warnings = [line for line in logs if line["event"] == "server.no_public_url"]
    assert len(warnings) == 1 and "MEDIAGATE_PUBLIC_URL" in warnings[0]["fix"]
    with capture_logs() as logs:
        await start_api(local_settings.model_copy(update={"public_url": "https://m.example"}))
    assert not [line for line in logs if line["event"] == "server.no_public_url"]
