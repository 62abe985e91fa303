"""The digests a client sends with a chunk (`Content-MD5`, `X-Chunk-SHA256`), decoded
(pure: table-tested in tests/test_chunk_digests.py)."""

from __future__ import annotations

import base64

from mediagate.core.chunk_stream import ExpectedDigests
from mediagate.errors import BadRequest


def chunk_digests(content_md5: str | None, sha256_hex: str | None) -> ExpectedDigests:
    """What the chunk's bytes must hash to; an empty or absent header checks nothing."""
    md5 = sha256 = None
    if content_md5:
        try:
            md5 = base64.b64decode(content_md5, validate=True)
        except ValueError:
            md5 = b""
        if len(md5) != 16:
            raise BadRequest("Content-MD5 must be the base64 of a 16-byte MD5 digest")
    if sha256_hex:
        try:
            sha256 = bytes.fromhex(sha256_hex)
        except ValueError:
            sha256 = b""
        if len(sha256) != 32:
            raise BadRequest("X-Chunk-SHA256 must be 64 hexadecimal digits")
    return ExpectedDigests(md5=md5, sha256=sha256)
