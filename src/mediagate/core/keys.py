"""Where a media's bytes live: `{prefix}{user_id}/{media_id}/{filename}`.

The same key is the S3 object key and the path below the local data directory,
so every component is sanitised here, once (the filename by `filenames.py`'s
rule): nothing a client sends can make a key leave its user's folder.
"""

from __future__ import annotations

import re
import uuid

from mediagate.filenames import sanitize_filename

MAX_USER_ID_LENGTH = 128
# Matched whole (fullmatch): with `match`, `$` also matches before a final
# newline, and `alice\n` would pass.
_USER_ID = re.compile(r"[A-Za-z0-9._@+=-]+")


def is_valid_user_id(user_id: str) -> bool:
    return (
        0 < len(user_id) <= MAX_USER_ID_LENGTH
        and _USER_ID.fullmatch(user_id) is not None
        and user_id.strip(".") != ""
    )


def new_id() -> str:
    return str(uuid.uuid4())


def object_key(prefix: str, user_id: str, media_id: str, filename: str) -> str:
    if not is_valid_user_id(user_id):
        raise ValueError(f"unsafe user id {user_id!r}")
    return f"{prefix}{user_id}/{media_id}/{sanitize_filename(filename)}"
