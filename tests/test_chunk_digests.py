"""A chunk's digest headers, decoded (web/chunk_digests.py)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from mediagate.core.chunk_stream import ExpectedDigests
from mediagate.errors import BadRequest
from mediagate.web.chunk_digests import chunk_digests

MD5 = hashlib.md5(b"chunk").digest()
SHA256 = hashlib.sha256(b"chunk").digest()


@pytest.mark.parametrize(
    ("content_md5", "sha256_hex", "expected"),
    [
        (None, None, ExpectedDigests()),
        ("", "", ExpectedDigests()),
        (base64.b64encode(MD5).decode(), None, ExpectedDigests(md5=MD5)),
        (None, SHA256.hex(), ExpectedDigests(sha256=SHA256)),
        (None, SHA256.hex().upper(), ExpectedDigests(sha256=SHA256)),
        (base64.b64encode(MD5).decode(), SHA256.hex(), ExpectedDigests(MD5, SHA256)),
    ],
)
def test_digest_headers_are_decoded(
    content_md5: str | None, sha256_hex: str | None, expected: ExpectedDigests
) -> None:
    assert chunk_digests(content_md5, sha256_hex) == expected


@pytest.mark.parametrize(
    ("content_md5", "sha256_hex", "named"),
    [
        ("not base64!", None, "Content-MD5"),
        (base64.b64encode(MD5[:15]).decode(), None, "Content-MD5"),  # 15 bytes
        (MD5.hex(), None, "Content-MD5"),  # hex where base64 belongs
        (None, "zz" * 32, "X-Chunk-SHA256"),
        (None, SHA256.hex()[:-2], "X-Chunk-SHA256"),  # 31 bytes
        (None, base64.b64encode(SHA256).decode(), "X-Chunk-SHA256"),
    ],
)
def test_a_malformed_digest_header_is_a_bad_request_naming_it(
    content_md5: str | None, sha256_hex: str | None, named: str
) -> None:
    with pytest.raises(BadRequest, match=named):
        chunk_digests(content_md5, sha256_hex)
