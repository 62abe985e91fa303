"""Shared fixtures: a real S3 server (moto, or Ceph RGW on the store tier) and a real
PostgreSQL on loopback, and mediagate served over real HTTP.

MEDIAGATE_TEST_S3 picks the S3 the fixtures point at: `moto` (the default), `rgw` (Ceph
RGW over http) or `rgw-https` (over https, with a self-signed certificate). The tier
runs the tests marked `store` (`pytest -m store`); a test that needs what only moto has
skips itself there with `skip_on_rgw`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from aiohttp import ClientResponse, ClientSession, TCPConnector
from aiohttp.test_utils import TestClient
from moto.server import ThreadedMotoServer

import rgw_server
from mediagate import tokens
from mediagate.config import Settings
from mediagate.web.app import create_app
from postgres_server import BIN, PostgresServer, available
from server_process import free_port
from tcp_proxy import CuttableProxy

MiB = 1024 * 1024

S3_TIER = os.environ.get("MEDIAGATE_TEST_S3", "moto")
if S3_TIER not in {"moto", "rgw", "rgw-https"}:
    raise SystemExit(f"MEDIAGATE_TEST_S3={S3_TIER}: must be moto, rgw or rgw-https")
ON_RGW = S3_TIER != "moto"
if ON_RGW:
    os.environ["AWS_ACCESS_KEY_ID"] = rgw_server.ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = rgw_server.SECRET_KEY
    # RGW 16 cannot read the aws-chunked bodies that carry botocore's default checksums
    # (MissingContentLength); mediagate's own clients already send them only when required.
    os.environ["AWS_REQUEST_CHECKSUM_CALCULATION"] = "when_required"
    os.environ["AWS_RESPONSE_CHECKSUM_VALIDATION"] = "when_required"
else:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
# The keys that the tier's S3 takes, for tests that give a server process its environment.
S3_ACCESS_KEY = os.environ["AWS_ACCESS_KEY_ID"]
S3_SECRET_KEY = os.environ["AWS_SECRET_ACCESS_KEY"]

skip_on_rgw = pytest.mark.skipif(ON_RGW, reason="needs moto (see the test's docstring)")
only_on_rgw = pytest.mark.skipif(
    not ON_RGW, reason="moto checks no signatures, keys, regions or Content-MD5"
)


def tier_s3_env(endpoint: str) -> dict[str, str]:
    """What a `mediagate serve` or `migrate` process needs to reach the tier's S3."""
    env = {
        "AWS_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
    }
    if "AWS_CA_BUNDLE" in os.environ:
        env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
    return env


def _start_rgw() -> rgw_server.RgwServer:
    if not rgw_server.available():
        reason = "Ceph RGW not found (apt-get install radosgw ceph-mon ceph-osd)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI must run the store tier on RGW")
        pytest.skip(reason)
    server = rgw_server.RgwServer(
        mon_port=free_port(),
        http_port=free_port(),
        https_port=free_port() if S3_TIER == "rgw-https" else None,
    )
    try:
        server.start()
    except BaseException:
        server.stop()
        server.remove()
        raise
    if server.ca_file is not None:
        # botocore, in this process and in the server processes the tests start.
        os.environ["AWS_CA_BUNDLE"] = str(server.ca_file)
    return server


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The S3 endpoint of the tier: moto by default (the name stays for the many callers)."""
    if ON_RGW:
        server = _start_rgw()
        try:
            yield server.endpoint
        finally:
            server.stop()
            server.remove()
        return
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    yield f"http://{host}:{port}"
    moto.stop()


def tier_ssl_context() -> ssl.SSLContext | None:
    """What an HTTP client following a redirect to the tier's S3 must trust, if not the
    system's CAs (the self-signed certificate of rgw-https)."""
    ca_file = os.environ.get("AWS_CA_BUNDLE")
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


def plain_client() -> ClientSession:
    """An HTTP client for S3's presigned URLs, trusting what the tier needs."""
    context = tier_ssl_context()
    return ClientSession(connector=TCPConnector(ssl=context) if context else None)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """PostgreSQL 15 for the whole run; in CI (CI=true) its absence fails instead of skipping."""
    if not available():
        reason = f"PostgreSQL binaries not found in {BIN} (apt-get install postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI must run the PostgreSQL cases")
        pytest.skip(reason)
    server = PostgresServer(free_port())
    try:
        server.init()
        server.start()
        yield server
        server.stop()
    finally:
        server.remove()


# The params of a `database_url` fixture that runs a module on both catalogs.
CATALOGS = ["sqlite", "postgres"]


@pytest.fixture
def database_url() -> str | None:
    """The catalog of the settings fixtures: SQLite (None) unless a module overrides this
    with a fixture parametrised over CATALOGS (see `database_url_for`)."""
    return None


def database_url_for(request: pytest.FixtureRequest) -> str | None:
    """None for the "sqlite" param, a fresh database for the "postgres" one."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[CuttableProxy]:
    """A loopback TCP proxy in front of S3, to cut S3 off (and restore it) for real."""
    scheme, _, address = moto_endpoint.partition("://")
    host, port = address.split(":")
    proxy = CuttableProxy(host, int(port), scheme=scheme)
    await proxy.start()
    yield proxy
    await proxy.cut()


@pytest.fixture
def bucket() -> str:
    return f"mediagate-{uuid.uuid4().hex[:12]}"


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    overrides.setdefault("jwt_secret", "test-secret-with-enough-length-for-hs256")
    # ffprobe costs ~0.1 s of CPU per upload: only the tests of probing turn it on.
    overrides.setdefault("probe", False)
    return Settings(_env_file=None, data_dir=data_dir, **overrides)


@pytest.fixture
def s3_settings(
    tmp_path: Path, moto_endpoint: str, bucket: str, database_url: str | None
) -> Settings:
    return make_settings(
        tmp_path / "data",
        use_cloud_storage=True,
        s3_bucket=bucket,
        s3_endpoint_url=moto_endpoint,
        database_url=database_url,
    )


@pytest.fixture
def unreachable_s3(tmp_path: Path) -> Settings:
    """Cloud storage on, pointed at a loopback port where nothing listens."""
    return make_settings(
        tmp_path / "data",
        use_cloud_storage=True,
        s3_bucket="mediagate-unreachable",
        s3_endpoint_url=f"http://127.0.0.1:{closed_port()}",
        s3_max_attempts=1,
    )


@pytest.fixture
def local_settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path / "data", database_url=database_url)


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


@pytest.fixture
async def start_api(aiohttp_client: Any) -> ApiFactory:
    """Start mediagate on a real loopback port; call again to 'restart' on the same data."""

    async def start(settings: Settings) -> Api:
        context = tier_ssl_context()
        connector = TCPConnector(ssl=context) if context else None
        client = await aiohttp_client(create_app(settings), connector=connector)
        return Api(client, settings)

    return start


@pytest.fixture
async def s3_api(start_api: ApiFactory, s3_settings: Settings) -> Api:
    return await start_api(s3_settings)


@pytest.fixture
async def local_api(start_api: ApiFactory, local_settings: Settings) -> Api:
    return await start_api(local_settings)


@pytest.fixture
async def s3_objects(moto_endpoint: str) -> AsyncIterator[Any]:
    """A plain aiobotocore client for checking what landed in the bucket."""
    session = get_session()
    async with session.create_client(
        "s3", region_name=rgw_server.REGION, endpoint_url=moto_endpoint
    ) as client:
        yield client


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


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
