"""Errors are problem+json with a 4xx for bad input, never a 500."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_cannot_be_decoded_is_400_not_500(local_api, encoding):
    headers = {**local_api.headers, "Content-Encoding": encoding}
    answer = await local_api.client.post(
        "/api/v1/media/upload/initiate", data=b"not compressed at all", headers=headers
    )
    assert answer.status == 400
    assert answer.headers["Content-Type"] == "application/problem+json"
    problem = await answer.json()
    assert problem["title"] == "Malformed body"
    assert "not compressed" not in problem["detail"]
