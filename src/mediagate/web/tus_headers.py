"""tus request headers, parsed (pure: table-tested in tests/test_tus.py)."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re

from mediagate.core.tus import CHECKSUM_ALGORITHMS, Checksum, final_partial_ids
from mediagate.errors import BadRequest, ChecksumAlgorithmUnsupported, ChecksumMismatch
from mediagate.web.schemas import CONTENT_TYPE_PATTERN

# At most 10,000 × 5 GiB fits in S3; 20 digits reach far past it.
_NUMBER = re.compile(r"[0-9]{1,20}")
# Upload-Concat: its URLs are RFC 3986 URLs (ASCII), and HEAD echoes it as received.
_CONCAT = re.compile(r"[\t -~]*")
# Upload-Metadata's grammar, written once: the parser below and the OpenAPI
# document (web/tus.py) both use it. Spaces around items are stripped.
METADATA_KEY = r"[!-+\--~]+"  # visible ASCII but the comma
BASE64 = r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
METADATA_PAIR = rf"\s*{METADATA_KEY}(?: \s*{BASE64})?\s*"
METADATA = rf"(?:{METADATA_PAIR}(?:,{METADATA_PAIR})*|\s*)"
# The keys tus clients use for a file's name and type: tus-js-client's and
# tuspy's examples send filename/filetype, Uppy sends name/type.
FILENAME_KEYS = ("filename", "name")
FILETYPE_KEYS = ("filetype", "type")


def parse_number(name: str, value: str | None) -> int | None:
    """A non-negative integer header (Upload-Length, Upload-Offset), or None if absent."""
    if value is None:
        return None
    if not _NUMBER.fullmatch(value.strip()):
        raise BadRequest(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def parse_metadata(value: str | None) -> dict[str, str]:
    """Upload-Metadata: comma-separated `key base64(value)` pairs, a value may be absent."""
    if not value or not value.strip():
        return {}
    metadata: dict[str, str] = {}
    for pair in value.split(","):
        key, _, encoded = pair.strip().partition(" ")
        if not re.fullmatch(METADATA_KEY, key) or key in metadata:
            raise BadRequest(f"Upload-Metadata has a bad or repeated key {key!r}")
        if not re.fullmatch(METADATA_PAIR, pair):
            raise BadRequest(f"Upload-Metadata's value of {key!r} is not base64")
        raw = base64.b64decode(encoded.strip())
        metadata[key] = raw.decode("utf-8", errors="replace")
    return metadata


def parse_checksum(value: str | None) -> Checksum | None:
    """Upload-Checksum: `algorithm base64(digest)`. A digest of the wrong length is
    one no body can match: a mismatch (460) at once, rather than a malformed header."""
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise ChecksumAlgorithmUnsupported(
            f"Upload-Checksum algorithm {algorithm!r} is not one of "
            f"{', '.join(CHECKSUM_ALGORITHMS)}"
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("Upload-Checksum's digest is not base64") from None
    if not digest:
        raise BadRequest("Upload-Checksum has no digest")
    if len(digest) != CHECKSUM_ALGORITHMS[algorithm]().digest_size:
        raise ChecksumMismatch(
            f"Upload-Checksum's digest has {len(digest)} bytes; no body's {algorithm} has that"
        )
    return Checksum(algorithm, digest)


def refuse_checksum_trailer(trailer: str | None) -> None:
    """A body whose `Trailer` header announces Upload-Checksum is refused before it is
    read: aiohttp's HTTP parsers (C and Python) drop a chunked body's trailers, so the
    checksum would never be seen and unverified bytes would count (docs/api.md)."""
    names = {name.strip().lower() for name in (trailer or "").split(",")}
    if "upload-checksum" in names:
        raise BadRequest(
            "Upload-Checksum as a trailer is not supported (checksum-trailer is not "
            "offered): send it as a header"
        )


def media_name(metadata: dict[str, str]) -> tuple[str, str]:
    """The media's filename ("" if the metadata has none) and content type (guessed, as
    for initiate)."""
    filename = next((metadata[k] for k in FILENAME_KEYS if metadata.get(k)), "")
    declared = next((metadata[k] for k in FILETYPE_KEYS if metadata.get(k)), "")
    if re.fullmatch(CONTENT_TYPE_PATTERN, declared.split(";")[0].strip()):
        return filename, declared.split(";")[0].strip().lower()
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return filename, guessed or "application/octet-stream"


def parse_concat(value: str | None) -> tuple[str, list[str]] | None:
    """Upload-Concat: ("partial", []) or ("final", [upload ids from the URLs]), or None."""
    if value is None:
        return None
    value = value.strip()
    if not _CONCAT.fullmatch(value):
        raise BadRequest("Upload-Concat must be ASCII: its URLs are RFC 3986 URLs")
    if value == "partial":
        return "partial", []
    kind = value.partition(";")[0]
    if kind != "final":
        raise BadRequest("Upload-Concat must be partial or final;<url> <url> …")
    return "final", final_partial_ids(value)
