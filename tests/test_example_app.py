"""The worked example of docs/integration.md (examples/app.py), run for real: the example
app and `mediagate serve` as two processes on loopback, set up as the doc says. A user
signed in by the app uploads with the app's token; the app records the media.ready it
verified; the next upload, over the user's quota, gets the app's refusal."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mediagate.client import MediagateClient, ProblemError
from support.server_process import ServerProcess, free_port

EXAMPLE = Path(__file__).parent.parent / "examples" / "app.py"
WHSEC = "whsec_" + base64.b64encode(os.urandom(32)).decode()
QUOTA = 1000


class ExampleApp:
    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._data = data
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE),
            "--port",
            str(self.port),
            "--data",
            str(self._data),
            "--quota",
            str(QUOTA),
            env={"PATH": os.environ.get("PATH", ""), "MEDIAGATE_WEBHOOK_SECRET": WHSEC},
            stdout=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(30), aiohttp.ClientSession() as http:
            while True:
                assert self.process.returncode is None, "the example app exited at start"
                try:
                    async with http.get(f"{self.base}/.well-known/jwks.json"):
                        return
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.base + path, **kw) as r,
        ):
            return r.status, await r.json() if r.content_type == "application/json" else None


@pytest.fixture
async def example(tmp_path) -> AsyncIterator[tuple[ExampleApp, ServerProcess]]:
    app = ExampleApp(tmp_path / "app-data")
    await app.start()
    # The environment docs/integration.md "A worked example" gives mediagate.
    server = ServerProcess(
        tmp_path / "data",
        {
            "MEDIAGATE_JWT_JWKS_URL": f"{app.base}/.well-known/jwks.json",
            "MEDIAGATE_JWT_ISSUER": app.base,
            "MEDIAGATE_JWT_AUDIENCE": "mediagate",
            "MEDIAGATE_WEBHOOK_URL": f"{app.base}/webhooks",
            "MEDIAGATE_WEBHOOK_SECRET": WHSEC,
            "MEDIAGATE_HOOK_PRE_CREATE_URL": f"{app.base}/hooks/pre-create",
        },
    )
    try:
        await server.start()
        yield app, server
    finally:
        await server.stop()
        await app.stop()


async def test_an_upload_with_the_apps_token_is_recorded_and_the_next_one_over_quota_refused(
    example, tmp_path
):
    app, server = example
    status, login = await app.call("POST", "/login", json={"user": "alice"})
    assert status == 200
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    first.write_bytes(os.urandom(600))
    second.write_bytes(os.urandom(600))

    async with MediagateClient(server.base, login["token"]) as client:
        uploaded = await client.upload(first, resume=False)
        async with asyncio.timeout(30):
            while not (await app.call("GET", "/users/alice/media"))[1]["media"]:
                await asyncio.sleep(0.1)
        with pytest.raises(ProblemError) as refused:
            await client.upload(second, resume=False)
    # A media.ready nobody signed with the secret is refused and not recorded.
    forged = {
        "type": "media.ready",
        "timestamp": "2026-12-06T19:14:03.123456Z",
        "data": {"media_id": "m1", "user_id": "alice", "filename": "x.mp4", "size": 1},
    }
    headers = {
        "webhook-id": "msg_forged",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode(),
    }
    status, _ = await app.call("POST", "/webhooks", json=forged, headers=headers)

    assert status == 401
    _, recorded = await app.call("GET", "/users/alice/media")
    assert recorded["used"] == 600
    [media] = recorded["media"]
    assert (media["media_id"], media["filename"], media["size"]) == (
        uploaded.media.media_id,
        "first.mp4",
        600,
    )
    assert refused.value.status == 403
    assert refused.value.code == "upload-refused"
    assert refused.value.detail == (
        "over your quota: second.mp4 is 600 bytes, you have 400 of 1000 bytes left"
    )
