"""Upload grants: a short-lived, signed stand-in for a token in the Companion endpoint's path.

Uppy's `@uppy/aws-s3` (v5 on) calls `{companionEndpoint}/s3/...` with `fetch` and no
headers of the page's choosing, so a bearer token cannot reach the server; a cookie
would, but only on the same origin, and cookies bring CSRF with them. A grant lives
in the endpoint URL instead: `/api/v1/companion/grant/{grant}`. It says who the user
is until when, signed with a key of its own (it can never pass as a JWT or a stream
link), and it opens the direct-upload routes only: it cannot read, list or delete
media. Where it may be seen (the browser's history is not: the page never navigates
to it; a proxy's access log may), it starts no upload after its expiry.

Uppy keeps the endpoint it was made with for the whole upload, which may outlast the
grant on a slow link. So an expired grant still opens the uploads it could have
started, those of its user created while it was valid, until they end or expire
(MEDIAGATE_SESSION_TTL): never a new upload, nor one made after it expired.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import datetime

# How far apart the clocks of two instances (the one that issued a grant, the one that
# created a session with it) may be.
CLOCK_SKEW = 60


@dataclass(frozen=True)
class Grant:
    user_id: str
    issued_at: int
    expires_at: int

    def fresh(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) <= self.expires_at

    def could_have_started(self, created_at: datetime) -> bool:
        """Whether an upload created then was created while this grant was valid."""
        created = created_at.timestamp()
        return self.issued_at - CLOCK_SKEW <= created <= self.expires_at + CLOCK_SKEW


class UploadGrants:
    def __init__(self, secret: bytes, lifetime: int) -> None:
        self._key = hmac.new(secret, b"mediagate upload grants", hashlib.sha256).digest()
        self.lifetime = lifetime

    def _signature(self, user_id: str, expires: int) -> str:
        message = f"{user_id}\n{expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, user_id: str, now: float | None = None) -> tuple[str, int]:
        """A grant for `user_id`, and when it expires (Unix time)."""
        expires = int(now if now is not None else time.time()) + self.lifetime
        user = base64.urlsafe_b64encode(user_id.encode()).decode().rstrip("=")
        return f"{user}.{expires}.{self._signature(user_id, expires)}", expires

    def read(self, grant: str) -> Grant | None:
        """The grant, if this server issued it (expired or not); None otherwise."""
        user, _, rest = grant.partition(".")
        expires_text, _, signature = rest.partition(".")
        if not (grant.isascii() and expires_text.isdigit() and signature):
            return None
        try:
            user_id = base64.urlsafe_b64decode(user + "=" * (-len(user) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        expires = int(expires_text)
        if not hmac.compare_digest(self._signature(user_id, expires), signature):
            return None
        return Grant(user_id, issued_at=expires - self.lifetime, expires_at=expires)
