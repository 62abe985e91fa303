"""mediagate's settings for a test, a client of its HTTP API, and the test data's helpers."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from mediagate import tokens
from mediagate.config import Settings

MiB = 1024 * 1024
PROBLEM = "application/problem+json"
JWT_SECRET = "test-secret-with-enough-length-for-hs256"
# Of a token made when the tests are collected: it must outlive a slow run.
TOKEN_LIFETIME = 24 * 3600

# The params of a `database_url` fixture that runs a module on both catalogs.
CATALOGS = ["sqlite", "postgres"]


def database_url_for(request: pytest.FixtureRequest) -> str | None:
    """None for the "sqlite" param, a fresh database for the "postgres" one."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_server").new_database()


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    overrides.setdefault("jwt_secret", JWT_SECRET)
    # ffprobe costs ~0.1 s of CPU per upload: only the tests of probing turn it on.
    overrides.setdefault("probe", False)
    return Settings(_env_file=None, data_dir=data_dir, **overrides)


class Api:
    """A client of mediagate's HTTP API acting as one user."""

    def __init__(self, client: TestClient, settings: Settings, user: str = "alice") -> None:
        self.client = client
        self.settings = settings
        self.user = user
        secret = tokens.load_secret(settings)
        self.headers = {"Authorization": f"Bearer {tokens.issue(secret, user, 3600)}"}

    def as_user(self, user: str) -> Api:
        return Api(self.client, self.settings, user)

    async def initiate(self, **body: Any) -> ClientResponse:
        body.setdefault("filename", "video.mp4")
        return await self.client.post(
            "/api/v1/media/upload/initiate", json=body, headers=self.headers
        )

    async def put_chunk(
        self, session_id: str, number: int, data: bytes, headers: dict[str, str] | None = None
    ) -> ClientResponse:
        return await self.client.post(
            f"/api/v1/media/upload/{session_id}/chunk/{number}",
            data=data,
            headers={**self.headers, **(headers or {})},
        )

    async def status(self, session_id: str) -> ClientResponse:
        return await self.client.get(f"/api/v1/media/upload/{session_id}", headers=self.headers)

    async def complete(self, session_id: str) -> ClientResponse:
        return await self.client.post(
            f"/api/v1/media/upload/{session_id}/complete", headers=self.headers
        )

    async def abort(self, session_id: str) -> ClientResponse:
        return await self.client.delete(f"/api/v1/media/upload/{session_id}", headers=self.headers)

    async def info(self, media_id: str) -> ClientResponse:
        return await self.client.get(f"/api/v1/media/info/{media_id}", headers=self.headers)

    async def delete(self, media_id: str) -> ClientResponse:
        return await self.client.delete(f"/api/v1/media/delete/{media_id}", headers=self.headers)


ApiFactory = Callable[[Settings], Any]


async def read_object(client: Any, bucket: str, key: str) -> bytes:
    answer = await client.get_object(Bucket=bucket, Key=key)
    async with answer["Body"] as body:
        return await body.read()


def md5_header(data: bytes) -> dict[str, str]:
    return {"Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode()}


def sha256_header(data: bytes) -> dict[str, str]:
    return {"X-Chunk-SHA256": hashlib.sha256(data).hexdigest()}


def chunks_of(data: bytes, chunk_size: int) -> list[bytes]:
    return [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]


async def assert_problem(answer: ClientResponse, status: int, code: str) -> dict[str, Any]:
    """A problem+json answer of this status and code, with its title, detail and request id."""
    assert answer.status == status, await answer.text()
    assert answer.headers["Content-Type"].startswith(PROBLEM)
    body = await answer.json()
    assert body["status"] == status
    assert body["type"].endswith(f"/{code}")
    assert body["title"] and body["detail"]
    assert answer.headers["X-Request-ID"] == body["request_id"]
    return body
