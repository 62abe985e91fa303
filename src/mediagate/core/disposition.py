"""Content-Disposition for media: shown inline, saved under the original filename."""

from __future__ import annotations

from urllib.parse import quote


def content_disposition(filename: str) -> str:
    """`inline` with `filename`: RFC 8187 UTF-8 form plus an ASCII fallback (RFC 6266 §4.3)."""
    # The fallback avoids `%` too: some agents percent-decode the plain parameter.
    fallback = "".join(
        char if " " <= char <= "~" and char not in '"\\%' else "_" for char in filename
    )
    encoded = quote(filename.encode("utf-8", "replace"), safe="!#$&+^`|~")
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
