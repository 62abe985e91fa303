"""The S3 the tests face, picked by MEDIAGATE_TEST_S3: `moto` (the default), `rgw` (Ceph
RGW over http) or `rgw-https` (over https, with a self-signed certificate). The tier runs
the tests marked `store` (`pytest -m store`); a test that needs what only moto has skips
itself there with `skip_on_rgw`.

Imported first by conftest.py: it sets the AWS keys of this process's environment.
"""

from __future__ import annotations

import os
import ssl

import pytest
from aiohttp import ClientSession, TCPConnector

from support import rgw_server
from support.server_process import free_port

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


def start_rgw() -> rgw_server.RgwServer:
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


def tier_ssl_context() -> ssl.SSLContext | None:
    """What an HTTP client following a redirect to the tier's S3 must trust, if not the
    system's CAs (the self-signed certificate of rgw-https)."""
    ca_file = os.environ.get("AWS_CA_BUNDLE")
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


def plain_client() -> ClientSession:
    """An HTTP client for S3's presigned URLs, trusting what the tier needs."""
    context = tier_ssl_context()
    return ClientSession(connector=TCPConnector(ssl=context) if context else None)
