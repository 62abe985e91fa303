"""The shared fixtures: a real S3 server (moto, or Ceph RGW on the store tier, see
support/tier.py) and a real PostgreSQL on loopback, and mediagate served over real HTTP.

Only fixtures live here; what a test imports comes from the `support` package.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from aiohttp import TCPConnector
from moto.server import ThreadedMotoServer

from mediagate.catalog.base import Catalog
from mediagate.catalog.postgres import PostgresCatalog
from mediagate.catalog.sqlite import SQLiteCatalog
from mediagate.config import Settings
from mediagate.web.app import create_app
from support import rgw_server
from support.api import Api, ApiFactory, make_settings
from support.postgres_server import BIN, PostgresServer, available
from support.server_process import free_port
from support.tcp_proxy import CuttableProxy
from support.tier import ON_RGW, start_rgw, tier_ssl_context

# A shell starts a background job with SIGINT ignored, and the processes the tests start
# would inherit that: the Ctrl-C tests (client, migrate) need it to reach them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The S3 endpoint of the tier: moto by default (the name stays for the many callers)."""
    if ON_RGW:
        server = start_rgw()
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


@pytest.fixture
def database_url() -> str | None:
    """The catalog of the settings fixtures: SQLite (None) unless a module overrides this
    with a fixture parametrised over CATALOGS (see `support.api.database_url_for`)."""
    return None


@pytest.fixture
async def catalog(tmp_path: Path, database_url: str | None) -> AsyncIterator[Catalog]:
    """The catalog at `database_url`: SQLite in `tmp_path` unless a module makes it PostgreSQL."""
    if database_url is None:
        opened: Catalog = await SQLiteCatalog.open(tmp_path / "catalog.db")
    else:
        opened = await PostgresCatalog.open(database_url)
    yield opened
    await opened.close()


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
def proxied_settings(
    tmp_path: Path, proxy: CuttableProxy, bucket: str, database_url: str | None
) -> Settings:
    """S3 through `proxy`, probed again soon (0.2 s at most) once it is back."""
    return make_settings(
        tmp_path / "data",
        use_cloud_storage=True,
        s3_bucket=bucket,
        s3_endpoint_url=proxy.url,
        s3_probe_max_interval=0.2,
        database_url=database_url,
    )


@pytest.fixture
def impatient_settings(tmp_path: Path, proxy: CuttableProxy, bucket: str) -> Settings:
    """S3 through `proxy`, each call tried once and given up after 3 s without an answer."""
    return make_settings(
        tmp_path / "data",
        use_cloud_storage=True,
        s3_bucket=bucket,
        s3_endpoint_url=proxy.url,
        s3_read_timeout=3,
        s3_max_attempts=1,
    )


@pytest.fixture
def unreachable_s3(tmp_path: Path) -> Settings:
    """Cloud storage on, pointed at a loopback port where nothing listens."""
    return make_settings(
        tmp_path / "data",
        use_cloud_storage=True,
        s3_bucket="mediagate-unreachable",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_max_attempts=1,
    )


@pytest.fixture
def local_settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path / "data", database_url=database_url)


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
