"""S3's answers, translated at the store's edge: outage (fall back) versus refusal (don't)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from mediagate.core.errors import NotFound, StorageRejected, StorageUnavailable
from mediagate.storage.breaker import CircuitBreaker
from mediagate.storage.s3 import s3_errors


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
