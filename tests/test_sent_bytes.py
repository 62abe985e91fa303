"""The body bytes the access log gives an answer, by kind of answer."""

from __future__ import annotations

import pytest
from aiohttp import web

from mediagate.web.sent_bytes import CountedResponse, body_bytes_sent


def counted(sent: int) -> CountedResponse:
    """A streamed answer cut short: it announced 100 bytes and sent `sent`."""
    response = CountedResponse(status=200, headers={"Content-Length": "100"})
    response.sent_with_sendfile(sent)
    return response


@pytest.mark.parametrize(
    ("method", "response", "expected"),
    [
        ("GET", web.Response(body=b"x" * 10), 10),
        ("HEAD", web.Response(body=b"x" * 10), 0),
        ("GET", web.Response(status=304), 0),
        ("GET", web.Response(status=204), 0),
        ("GET", web.json_response({"a": 1}, status=401), len(b'{"a": 1}')),
        ("GET", counted(7), 7),
        ("GET", web.StreamResponse(), 0),
    ],
    ids=["fixed", "head", "304", "204", "problem", "counted", "stream-without-length"],
)
def test_body_bytes(method, response, expected):
    assert body_bytes_sent(method, response) == expected
