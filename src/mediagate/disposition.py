"""How a media's bytes present themselves to a browser: type, disposition, sandbox.

Uploads come from anyone with a token and are served from the API's own origin, so
a file a browser would run (HTML, SVG, XML, a script, a stylesheet) must never be
rendered there: it would act with the origin's authority (stored XSS). Media that
browsers only display or play (video, audio, raster images) are shown inline under
their own type; everything else is sent as an `application/octet-stream` attachment,
which no browser renders, runs as a script or applies as a stylesheet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

# Sent instead of a type a browser could render or run. Scripts and stylesheets are
# refused under `nosniff` unless their type says script or CSS, so this blocks
# `<script src>` and `<link rel=stylesheet>` of an upload too, which an attachment
# alone would not.
DOWNLOAD_TYPE = "application/octet-stream"

_SAFE_TOP_LEVEL_TYPES = frozenset({"video", "audio", "image"})
_TOKEN = re.compile(r"[a-z0-9!#$&^_.+-]+")  # RFC 6838 §4.2 restricted-name characters


@dataclass(frozen=True)
class Presentation:
    content_type: str
    content_disposition: str
    # The bytes are something a browser runs: add `Content-Security-Policy: sandbox`
    # where the response's headers are ours to set.
    sandbox: bool


def presentation(filename: str, content_type: str) -> Presentation:
    """The headers under which a media's bytes are served, wherever they come from."""
    if is_passive(content_type):
        return Presentation(content_type, content_disposition(filename), sandbox=False)
    return Presentation(DOWNLOAD_TYPE, content_disposition(filename, attachment=True), sandbox=True)


def is_passive(content_type: str) -> bool:
    """A type that browsers display or play but never run: video, audio, raster images.

    SVG is an image that runs scripts, and any `+xml` type is rendered as an XML
    document, which runs XHTML scripts; PDF viewers run scripts of their own.
    """
    if not (content_type.isascii() and content_type.isprintable()):
        return False  # it could not go into a header as it is
    essence = content_type.split(";", 1)[0].strip().lower()
    top_level, _, subtype = essence.partition("/")
    if essence == DOWNLOAD_TYPE:
        return True
    return (
        top_level in _SAFE_TOP_LEVEL_TYPES
        and _TOKEN.fullmatch(subtype) is not None
        and not subtype.startswith("svg")
        and not (subtype == "xml" or subtype.endswith("+xml"))
    )


def content_disposition(filename: str, *, attachment: bool = False) -> str:
    """`inline` (or `attachment`) with `filename`: RFC 8187 UTF-8 form plus an ASCII
    fallback (RFC 6266 §4.3)."""
    # The fallback avoids `%` too: some agents percent-decode the plain parameter.
    fallback = "".join(
        char if " " <= char <= "~" and char not in '"\\%' else "_" for char in filename
    )
    encoded = quote(filename.encode("utf-8", "replace"), safe="!#$&+^`|~")
    kind = "attachment" if attachment else "inline"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
