"""Pins what the streaming UploadPart path relies on in aiobotocore/botocore.

If an upgrade changes any of it, these fail before a user's upload does.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError

from mediagate.storage.s3 import streaming_config
from support.api import MiB, make_settings

pytestmark = pytest.mark.store

PART = 6 * MiB


class UnseekableBody:
    """Like a request body: async read and iteration, no tell/seek, no length."""

    def __init__(self, size: int) -> None:
        self._left = size
        self.digest = hashlib.md5()

    async def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        piece = bytes([n % 251]) * n
        self._left -= n
        self.digest.update(piece)
        return piece

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while piece := await self.read(256 * 1024):
            yield piece


async def upload_part_with(config, endpoint: str, bucket: str) -> tuple[str, str]:
    async with get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=endpoint, config=config
    ) as s3:
        await s3.create_bucket(Bucket=bucket)
        upload = await s3.create_multipart_upload(Bucket=bucket, Key="k")
        body = UnseekableBody(PART)
        answer = await s3.upload_part(
            Bucket=bucket,
            Key="k",
            UploadId=upload["UploadId"],
            PartNumber=1,
            ContentLength=PART,
            Body=body,
        )
        return answer["ETag"].strip('"'), body.digest.hexdigest()


@pytest.mark.transport
async def test_streaming_client_takes_an_unseekable_body(tmp_path, moto_endpoint, bucket):
    settings = make_settings(tmp_path, s3_endpoint_url=moto_endpoint)
    etag, md5 = await upload_part_with(streaming_config(settings), moto_endpoint, bucket)
    assert etag == md5  # the part holds exactly the streamed bytes


def test_streaming_client_neither_signs_payloads_nor_retries(tmp_path):
    config = streaming_config(make_settings(tmp_path))
    assert config.s3["payload_signing_enabled"] is False
    assert config.request_checksum_calculation == "when_required"
    assert config.retries == {"total_max_attempts": 1}


@pytest.mark.transport
async def test_botocore_defaults_cannot_stream_such_a_body(moto_endpoint, bucket):
    """Why the streaming client exists: the default CRC32 checksum needs tell()."""
    with pytest.raises((BotoCoreError, AttributeError, TypeError)):
        await upload_part_with(None, moto_endpoint, bucket)
