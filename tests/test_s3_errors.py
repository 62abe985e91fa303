"""S3's answers, translated at the store's edge: outage (fall back) versus refusal (don't)."""

from __future__ import annotations

import asyncio
import os

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from mediagate.core.chunk_stream import ChunkStream, ExpectedDigests
from mediagate.errors import BodyReadTimeout, NotFound, StorageRejected, StorageUnavailable
from mediagate.models import StorageKind
from mediagate.storage.breaker import CircuitBreaker, guard
from mediagate.storage.local import FilePartBody
from mediagate.storage.s3 import S3Store, s3_errors
from support.api import MiB, make_settings
from support.raw_http import RawConnection, form_body, new_boundary, request_head


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "UploadPart",
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (client_error("NoSuchUpload", 404), NotFound),
        (client_error("NoSuchKey", 404), NotFound),
        (client_error("InternalError", 500), StorageUnavailable),
        (client_error("ServiceUnavailable", 503), StorageUnavailable),
        (client_error("SlowDown", 503), StorageUnavailable),
        (client_error("AccessDenied", 403), StorageUnavailable),
        (client_error("NoSuchBucket", 404), StorageUnavailable),
        (client_error("InvalidPart", 400), StorageRejected),
        (client_error("EntityTooSmall", 400), StorageRejected),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), StorageUnavailable),
        (NoCredentialsError(), StorageUnavailable),
        (ConnectionResetError(), StorageUnavailable),
    ],
)
def test_translation(error, expected):
    with pytest.raises(expected), s3_errors("UploadPart"):
        raise error


def test_breaker_fails_fast_then_probes_once_after_the_backoff():
    now = [0.0]
    breaker = CircuitBreaker(first_backoff=1.0, max_backoff=4.0, clock=lambda: now[0])
    assert breaker.allow()
    breaker.failed("down")
    assert not breaker.healthy and not breaker.allow()
    now[0] = 1.0
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time
    breaker.failed("still down")
    now[0] = 2.5
    assert not breaker.allow()  # back-off doubled to 2 s
    now[0] = 3.0
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.healthy and breaker.allow()


def test_a_probe_that_fails_for_the_clients_sake_lets_the_next_one_through():
    now = [0.0]
    breaker = CircuitBreaker(first_backoff=1.0, clock=lambda: now[0])
    breaker.failed("down")
    now[0] = 1.0
    assert breaker.allow()
    breaker.inconclusive()
    assert breaker.allow()


async def s3_still_in_use(api) -> None:
    """What other users see: /readyz says S3 is fine and a new session goes to S3."""
    ready = await (await api.client.get("/readyz")).json()
    assert ready["s3"] == "ok", ready
    other = await api.as_user("bob").initiate(size=10)
    assert (await other.json())["storage"] == "s3"


async def test_an_overlong_form_chunk_is_the_clients_fault_not_s3s(s3_api):
    data = os.urandom(1000)
    session = await (await s3_api.initiate(size=len(data))).json()
    boundary = new_boundary()
    body = form_body(boundary, ("file", data + os.urandom(200_000)))
    connection = await RawConnection.open(s3_api.client)
    head = request_head(
        "POST",
        f"/api/v1/media/upload/{session['session_id']}/chunk/0",
        {**s3_api.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content_length=len(body),
    )
    await connection.send(head, *(body[i : i + 50_000] for i in range(0, len(body), 50_000)))
    status, problem = await connection.answer()
    connection.close()
    assert (status, problem["type"].rsplit("/", 1)[1]) == (400, "chunk-length-mismatch")
    await s3_still_in_use(s3_api)


async def test_a_chunked_body_whose_client_vanishes_is_not_an_s3_failure(s3_api):
    session = await (await s3_api.initiate(size=5 * MiB)).json()
    for _ in range(2):
        connection = await RawConnection.open(s3_api.client)
        head = request_head(
            "POST",
            f"/api/v1/media/upload/{session['session_id']}/chunk/0",
            {**s3_api.headers, "Transfer-Encoding": "chunked"},
        )
        piece = os.urandom(100_000)
        await connection.send(head, b"%x\r\n%s\r\n" % (len(piece), piece), pause=0.2)
        connection.close()  # gone before the last chunk of the encoding
        await asyncio.sleep(0.3)
    await s3_still_in_use(s3_api)
    status = await (await s3_api.status(session["session_id"])).json()
    assert status["received"] == []


class FailingS3:
    """Stands in for S3Store: every call fails with `error`, after reading the part's body."""

    kind = StorageKind.S3

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def put_part(self, key, upload_id, *, number, offset, length, body) -> str:
        async for _ in body:
            pass
        raise self.error


async def test_a_part_whose_own_body_failed_is_not_counted_against_s3(tmp_path):
    # A local file that ran short (a spilled chunk on its way to S3) is no S3 failure.
    staged = tmp_path / "staged"
    staged.write_bytes(b"short")
    body = FilePartBody(staged, 0, 10)
    guarded = guard(FailingS3(StorageUnavailable("connection reset")), CircuitBreaker())
    with pytest.raises(StorageUnavailable):
        await guarded.put_part("k", "u", number=0, offset=0, length=10, body=body)
    assert body.failure is not None
    assert guarded.breaker.healthy


async def test_s3_giving_up_on_a_slow_client_is_the_clients_timeout():
    class SlowClientS3:
        async def put(self, key, upload_id, *, number, length, body):
            raise client_error("RequestTimeout", 400)

    store = S3Store(
        None,
        None,
        "bucket",
        cache_control="",
        storage_class=None,
        signer=None,
        parts=SlowClientS3(),
    )
    guarded = guard(store, CircuitBreaker())
    body = ChunkStream(lambda n: asyncio.sleep(0, b"x" * n), 10, ExpectedDigests())
    with pytest.raises(BodyReadTimeout):
        await guarded.put_part("k", "u", number=0, offset=0, length=10, body=body)
    assert guarded.breaker.healthy


@pytest.mark.parametrize("hang_up", ["close", "reset"])
async def test_s3_dropping_a_part_unanswered_is_an_outage_naming_the_endpoint(tmp_path, hang_up):
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if hang_up == "reset":
            writer.transport.abort()
        else:
            writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    endpoint = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    settings = make_settings(
        tmp_path, use_cloud_storage=True, s3_bucket="bucket", s3_endpoint_url=endpoint
    )
    body = ChunkStream(lambda n: asyncio.sleep(0, b"x" * n), 10, ExpectedDigests())
    try:
        async with S3Store.connect(settings) as store:
            with pytest.raises(StorageUnavailable, match=endpoint):
                await store.put_part("key", "upload", number=0, offset=0, length=10, body=body)
    finally:
        server.close()
        await server.wait_closed()
