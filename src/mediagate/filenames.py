"""A file name safe to put in a key, a header, a log line or a download folder.

A leaf: it imports nothing of mediagate, so the client (which imports nothing
of the server) names a downloaded file by the very rule the server applies.
"""

from __future__ import annotations

import re
import unicodedata

MAX_FILENAME_BYTES = 200
# Longer suffixes are not kept whole when a name is capped (a dot in a long title).
MAX_EXTENSION_BYTES = 16
# Lone surrogates stand for bytes that are not UTF-8 (os.fsdecode of a legacy
# file name); they cannot be encoded, so they go with the control characters.
# Bidirectional controls (RLO and friends) make `\u202egnp.exe` display as
# `exe.png`: a spoofed type in a download bar, so they go too. So do C1
# controls, line and paragraph separators (they break a header or a log line)
# and zero-width characters (two names that look the same but differ).
_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f/\\\ud800-\udfff\u061c\u200b-\u200f\u2028\u2029"
    r"\u202a-\u202e\u2060\u2066-\u2069\ufeff]"
)


def sanitize_filename(name: str) -> str:
    """Last path component, no control characters, no dot-only names, capped length."""
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("", name).strip().lstrip(".")
    return _capped(name).strip() or "file"


def _capped(name: str) -> str:
    """At most MAX_FILENAME_BYTES of UTF-8, cut on a character boundary, the extension kept."""
    if len(name.encode("utf-8")) <= MAX_FILENAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not (stem and dot and len(extension.encode("utf-8")) <= MAX_EXTENSION_BYTES):
        stem, extension = name, ""
    suffix = f".{extension}" if extension else ""
    room = MAX_FILENAME_BYTES - len(suffix.encode("utf-8"))
    return stem.encode("utf-8")[:room].decode("utf-8", errors="ignore").rstrip() + suffix
