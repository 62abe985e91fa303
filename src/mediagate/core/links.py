"""Signed stream links: `?expires=…&signature=…` for players that cannot send headers.

A `<video src>` or ffmpeg has no way to add an Authorization header, so the
stream URL the API hands out carries an HMAC over the media id and an expiry
time; whoever holds the link may play the media until then.
"""

from __future__ import annotations

import hashlib
import hmac
import time


class StreamLinks:
    def __init__(self, secret: bytes, lifetime: int) -> None:
        # A key of its own, so that a stream signature can never pass as a JWT one.
        self._key = hmac.new(secret, b"mediagate stream links", hashlib.sha256).digest()
        self._lifetime = lifetime

    def _signature(self, media_id: str, expires: int) -> str:
        message = f"{media_id}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, media_id: str, now: float | None = None) -> tuple[int, str]:
        expires = int(now if now is not None else time.time()) + self._lifetime
        return expires, self._signature(media_id, expires)

    def is_valid(
        self, media_id: str, expires: str, signature: str, now: float | None = None
    ) -> bool:
        try:
            expires_at = int(expires)
        except ValueError:
            return False
        if expires_at < (now if now is not None else time.time()):
            return False
        if not signature.isascii():
            return False  # compare_digest raises TypeError on non-ASCII text
        return hmac.compare_digest(self._signature(media_id, expires_at), signature)
