"""The part URLs signed without botocore's request pipeline are botocore's own URLs."""

from __future__ import annotations

import datetime

import pytest
from aiobotocore.credentials import AioCredentials
from aiobotocore.session import get_session
from botocore.exceptions import NoCredentialsError

from mediagate.storage.s3 import control_config
from mediagate.storage.s3_parts import PartSigner
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


@pytest.mark.parametrize("client_options", ENDPOINTS)
@pytest.mark.parametrize("token", [None, "session/token+=="])
async def test_part_urls_are_the_ones_botocore_presigns(tmp_path, client_options, token):
    settings = make_settings(tmp_path, s3_endpoint_url=client_options.get("endpoint_url"))
    credentials = AioCredentials("AKIDEXAMPLE", "secret/key+", token)
    async with get_session().create_client(
        "s3",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret/key+",
        aws_session_token=token,
        config=control_config(settings),
        **client_options,
    ) as client:
        signer = PartSigner(client, credentials, "media-bucket")
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
            made = await signer.url(key, upload_id, number=number, length=number * 1048576)
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
            await PartSigner(client, None, "media-bucket").url("k", "u", number=1, length=1)
