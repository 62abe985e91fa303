"""Defects found by attacking a running server; each test failed before its fix."""

from __future__ import annotations

import base64
import json
import time

import pytest

from test_upload_errors import assert_problem


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'\xff\xfe{"filename": "a"}', "application/json"),  # not UTF-8
        (b'{"filename": "a", "size": 1}', "application/json; charset=bogus"),
        (b"[" * 50_000, "application/json"),  # nests deeper than the parser's stack
        (b'{"filename": "a", "size": ' + b"9" * 5000 + b"}", "application/json"),
    ],
    ids=["not-utf8", "unknown-charset", "deep-nesting", "5000-digit-number"],
)
async def test_initiate_body_that_cannot_be_decoded_is_400(local_api, body, content_type):
    answer = await local_api.client.post(
        "/api/v1/media/upload/initiate",
        data=body,
        headers={**local_api.headers, "Content-Type": content_type},
    )
    await assert_problem(answer, 400, "bad-request")


@pytest.mark.parametrize("field", ["size", "chunk_size"])
@pytest.mark.parametrize("value", [True, 10.0, "10"])
async def test_initiate_numbers_of_the_wrong_json_type_are_400(local_api, field, value):
    body = {"filename": "a.mp4", "size": 10, field: value}
    answer = await local_api.client.post(
        "/api/v1/media/upload/initiate", json=body, headers=local_api.headers
    )
    problem = await assert_problem(answer, 400, "bad-request")
    assert [error["field"] for error in problem["errors"]] == [field]


async def test_media_list_limit_that_is_a_digit_but_no_number_is_400(local_api):
    # "²".isdigit() is true, int("²") raises
    answer = await local_api.client.get("/api/v1/media?limit=%C2%B2", headers=local_api.headers)
    await assert_problem(answer, 400, "bad-request")


@pytest.mark.parametrize(
    "created_at", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]
)
async def test_media_list_cursor_with_a_date_out_of_range_is_400(local_api, created_at):
    cursor = base64.urlsafe_b64encode(json.dumps([created_at, "x"]).encode()).decode()
    answer = await local_api.client.get(
        "/api/v1/media", params={"cursor": cursor}, headers=local_api.headers
    )
    await assert_problem(answer, 400, "bad-request")


async def test_stream_link_with_a_non_ascii_signature_is_403(local_api):
    expires = int(time.time()) + 3600
    answer = await local_api.client.get(
        "/api/v1/media/stream/abc", params={"expires": str(expires), "signature": "é" * 64}
    )
    await assert_problem(answer, 403, "forbidden")
