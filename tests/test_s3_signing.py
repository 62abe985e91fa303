"""The URLs ObjectSigner signs without botocore's request pipeline are botocore's own."""

from __future__ import annotations

import datetime

import pytest
from aiobotocore.credentials import AioCredentials
from aiobotocore.session import get_session
from botocore.exceptions import NoCredentialsError

from mediagate.disposition import presentation
from mediagate.storage.s3 import control_config
from mediagate.storage.s3_signing import ObjectSigner
from support.api import make_settings

NOW = datetime.datetime(2026, 12, 7, 23, 59, 59)

KEYS = [
    "user-1/2026/12/clip.mp4",
    "a b/été + pluie=1&2.mov",
    "odd/%41~tilde/!'()*;:@$,[]#?.mkv",
    "日本/🎬 film.webm",
    "trailing/",
]

ENDPOINTS = [
    # An S3-compatible store behind an endpoint URL: path addressing.
    {"region_name": "us-east-1", "endpoint_url": "http://127.0.0.1:9000"},
    {"region_name": "eu-west-3", "endpoint_url": "https://s3.example.net:8443/"},
    # AWS itself: virtual-host addressing, the region's endpoint.
    {"region_name": "eu-west-1"},
    {"region_name": "us-east-1"},
]


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: NOW)


@pytest.fixture(params=ENDPOINTS, ids=["path", "path-https-port", "aws-eu-west-1", "aws"])
async def clients(request, tmp_path):
    """botocore's presigning client and our signer, both of the same bucket; the client's
    credentials with a session token whose characters need encoding."""
    options = request.param
    settings = make_settings(tmp_path, s3_endpoint_url=options.get("endpoint_url"))
    token = "session/token+=="
    async with get_session().create_client(
        "s3",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret/key+",
        aws_session_token=token,
        config=control_config(settings),
        **options,
    ) as client:
        credentials = AioCredentials("AKIDEXAMPLE", "secret/key+", token)
        yield client, ObjectSigner(client, credentials, "media-bucket")


async def test_part_urls_are_the_ones_botocore_presigns(clients):
    client, signer = clients
    for number, key in enumerate(KEYS, start=1):
        upload_id = f"2~Zx+/y={number}"
        expected = await client.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": "media-bucket",
                "Key": key,
                "UploadId": upload_id,
                "PartNumber": number,
                "ContentLength": number * 1048576,
            },
            ExpiresIn=900,
        )
        made = await signer.url(
            "PUT",
            key,
            params={"uploadId": upload_id, "partNumber": str(number)},
            headers={"Content-Length": str(number * 1048576)},
            expires_in=900,
        )
        assert made == expected


@pytest.mark.parametrize("operation", ["get_object", "head_object"])
async def test_read_urls_are_the_ones_botocore_presigns(clients, operation):
    client, signer = clients
    for key in KEYS:
        shown = presentation(key.rpartition("/")[2] or "x", "video/mp4")
        expected = await client.generate_presigned_url(
            operation,
            Params={
                "Bucket": "media-bucket",
                "Key": key,
                "ResponseContentType": shown.content_type,
                "ResponseContentDisposition": shown.content_disposition,
            },
            ExpiresIn=3600,
        )
        made = await signer.url(
            "GET" if operation == "get_object" else "HEAD",
            key,
            params={
                "response-content-type": shown.content_type,
                "response-content-disposition": shown.content_disposition,
            },
            expires_in=3600,
        )
        assert made == expected


async def test_no_credentials_is_botocores_error(tmp_path):
    settings = make_settings(tmp_path, s3_endpoint_url="http://127.0.0.1:9000")
    async with get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9000",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=control_config(settings),
    ) as client:
        with pytest.raises(NoCredentialsError):
            await ObjectSigner(client, None, "media-bucket").url(
                "GET", "k", params={}, expires_in=60
            )
