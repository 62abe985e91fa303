"""Presigned object URLs without botocore's request pipeline.

botocore's `generate_presigned_url` runs most of a client call's machinery
(parameter validation, serialising, endpoint rules, hooks) before it signs:
~0.25 ms of CPU a URL, paid for every relayed part and every probe or download
redirect. `ObjectSigner` asks botocore once for the bucket's URL and signing
scope, then signs each request with botocore's own SigV4 query signer
(`S3SigV4QueryAuth`, ~0.07 ms): tests/test_s3_signing.py checks that its URLs
are botocore's, character for character.
"""

from __future__ import annotations

from typing import Any

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import NoCredentialsError
from botocore.utils import percent_encode


class ObjectSigner:
    """Presigned URLs of objects in `bucket`, as `presigner` (an S3 client with SigV4)
    makes them, signed with `credentials` (the client's: given, or the session's chain;
    refreshable ones are asked for their current keys at every URL)."""

    def __init__(self, presigner: Any, credentials: Any, bucket: str) -> None:
        self._presigner = presigner
        self._credentials = credentials
        self._bucket = bucket
        self._endpoint: tuple[str, str, str] | None = None

    async def url(
        self,
        method: str,
        key: str,
        *,
        params: dict[str, str],
        expires_in: int,
        headers: dict[str, str] | None = None,
    ) -> str:
        """`method` on `key` with the query `params` (in botocore's order) and `headers`
        (signed: the request must send them as they are)."""
        base, region, service = self._endpoint or await self._resolve()
        if self._credentials is None:
            raise NoCredentialsError()
        credentials = await self._credentials.get_frozen_credentials()
        # The key as botocore's serializer writes a greedy path label.
        request = AWSRequest(
            method=method,
            url=base + percent_encode(key, safe="/~"),
            headers=headers or {},
            params=params,
        )
        S3SigV4QueryAuth(credentials, service, region, expires=expires_in).add_auth(request)
        return str(request.url)

    async def _resolve(self) -> tuple[str, str, str]:
        """The bucket's URL (to which the key is appended) and the signing region and
        service, from one URL botocore presigns: its endpoint rules decide them."""
        probe = await self._presigner.generate_presigned_url(
            "get_object", Params={"Bucket": self._bucket, "Key": "k"}
        )
        address, _, query = probe.partition("?")
        scope = dict(pair.split("=", 1) for pair in query.split("&"))["X-Amz-Credential"]
        *_, region, service, _ = scope.split("%2F")
        self._endpoint = (address.removesuffix("k"), region, service)
        return self._endpoint
