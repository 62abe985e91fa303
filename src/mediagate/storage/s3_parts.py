"""UploadPart as one plain HTTP PUT: a presigned URL, aiohttp streams the body.

Why not the client's `upload_part`: botocore's request pipeline (parameter
validation, endpoint rules, user agent, header signing, hooks, response
parsing) costs ~0.7 ms of CPU per call on its own, ~1.5 ms inside a busy
server: with 8 MiB chunks, a fifth of what relaying the bytes costs
(bench/README.md, "The relay's floor"). A presigned URL carries the same SigV4
signature over the same request: method, bucket, key, upload id, part number
and `Content-Length` are signed; the payload is `UNSIGNED-PAYLOAD`, as it was
with `payload_signing_enabled: False` (the digests a client sends are checked by
the chunk stream, core/chunk_stream.py).

The URL is signed by `ObjectSigner` (storage/s3_signing.py): botocore's own
SigV4 query signer without the rest of its pipeline.

What botocore did besides, done here the same way:

- `Expect: 100-continue`, so that S3 can refuse a part before its first byte
  is taken from the client (the engine then keeps the chunk on local disk).
- An error answer is parsed by botocore's own parser into the `ClientError`
  that `upload_part` raised, so `s3_errors` translates it as before.
- The call is counted and timed in `mediagate_s3_requests_total` and its
  histogram as `UploadPart`.
- No retries: a streamed body cannot be sent twice.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

import aiohttp
from botocore.exceptions import ClientError, HTTPClientError
from botocore.parsers import create_parser
from yarl import URL

from mediagate import metrics
from mediagate.config import Settings
from mediagate.proxies import EnvironmentProxies
from mediagate.storage.base import PartBody
from mediagate.storage.s3_instrumentation import outcome_of
from mediagate.storage.s3_signing import ObjectSigner

OPERATION = "UploadPart"
# Parallel chunk uploads each hold one connection to S3 for their whole length.
MAX_CONNECTIONS = 128
# The URL is used at once; S3 checks its expiry when the request starts, not
# while the body streams.
URL_SECONDS = 900


def part_session(settings: Settings, ca_bundle: str | None) -> aiohttp.ClientSession:
    """The HTTP client of part uploads, with the S3 clients' pool size and timeouts, and
    AWS_CA_BUNDLE's certificates if set; each part names its proxy (`PartUploads`)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=MAX_CONNECTIONS, ssl=ssl.create_default_context(cafile=ca_bundle)
        ),
        timeout=aiohttp.ClientTimeout(
            sock_connect=settings.s3_connect_timeout, sock_read=settings.s3_read_timeout
        ),
        # Only the headers of the signed request: no Content-Type, no compression asked.
        skip_auto_headers={"Content-Type", "Accept-Encoding"},
        auto_decompress=False,
    )


class PartUploads:
    """Sends parts of multipart uploads, signed by `signer`; `client` (an S3 client)
    gives the model to read S3's errors with."""

    def __init__(
        self,
        signer: ObjectSigner,
        client: Any,
        http: aiohttp.ClientSession,
        proxies: EnvironmentProxies,
    ) -> None:
        self._signer = signer
        self._http = http
        self._operation = client.meta.service_model.operation_model(OPERATION)
        self._parser = create_parser(client.meta.service_model.protocol)
        self._proxies = proxies

    async def put(
        self, key: str, upload_id: str, *, number: int, length: int, body: PartBody
    ) -> str:
        """Part `number` (1-based, as S3 counts) from `body`, exactly `length` bytes; its ETag."""
        signed = {"Content-Length": str(length)}  # sent as signed
        url = await self._signer.url(
            "PUT",
            key,
            params={"uploadId": upload_id, "partNumber": str(number)},
            headers=signed,
            expires_in=URL_SECONDS,
        )
        started = time.perf_counter()
        try:
            async with self._http.put(
                URL(url, encoded=True),
                data=body,
                headers=signed,
                expect100=True,
                proxy=self._proxies.for_url(url),
            ) as answer:
                content = await answer.read()
                status = answer.status
                headers = answer.headers
        except BaseException as error:
            metrics.s3_call(OPERATION, "no_response", time.perf_counter() - started)
            if isinstance(error, aiohttp.ClientError | OSError):
                # As botocore reported it: a BotoCoreError naming the endpoint (for the
                # operator's log), whatever aiohttp's class (a hang-up is no OSError).
                raise HTTPClientError(
                    error=f"{error or type(error).__name__} at {_origin(url)}"
                ) from error
            raise
        metrics.s3_call(OPERATION, outcome_of(status), time.perf_counter() - started)
        if status != 200:
            raise self._client_error(status, dict(headers), content)
        return headers["ETag"]

    def _client_error(self, status: int, headers: dict[str, str], body: bytes) -> ClientError:
        """What `upload_part` raised for this answer."""
        lowered = {name.lower(): value for name, value in headers.items()}
        parsed = self._parser.parse(
            {"status_code": status, "headers": lowered, "body": body},
            self._operation.output_shape,
        )
        return ClientError(parsed, OPERATION)


def _origin(url: str) -> str:
    """Scheme, host and port of `url`: not the key nor the signature."""
    return str(URL(url, encoded=True).origin())
