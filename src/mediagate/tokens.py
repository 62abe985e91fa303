"""Bearer tokens: HS256 JWTs whose `sub` is the user id.

With no MEDIAGATE_JWT_SECRET set, a random secret is made on first start and
kept in the data directory (mode 0600), so tokens survive restarts and
`mediagate token` run on the same data directory signs tokens the server takes.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import jwt

from mediagate.config import Settings
from mediagate.core.keys import is_valid_user_id

ALGORITHM = "HS256"
SECRET_FILE = "jwt-secret"


class InvalidToken(Exception):
    pass


def load_secret(settings: Settings) -> bytes:
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value().encode()
    path = settings.data_dir / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48).encode()
    _write_private(path, secret)
    return path.read_bytes().strip()


def _write_private(path: Path, content: bytes) -> None:
    """Create the file readable by its owner only; a racing creator wins and is kept."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as file:
        file.write(content)


def issue(secret: bytes, user_id: str, ttl: int, now: float | None = None) -> str:
    if not is_valid_user_id(user_id):
        raise ValueError(
            f"user id {user_id!r} must be 1-128 characters of letters, digits and ._@+=-"
        )
    issued = int(now if now is not None else time.time())
    claims = {"sub": user_id, "iat": issued, "exp": issued + ttl}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: bytes, token: str) -> str:
    """The user id a valid token names."""
    if not token.isascii():  # PyJWT would raise UnicodeEncodeError on a lone surrogate
        raise InvalidToken("a JWT is ASCII")
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.PyJWTError as error:
        raise InvalidToken(str(error)) from error
    user_id = claims["sub"]
    if not isinstance(user_id, str) or not is_valid_user_id(user_id):
        raise InvalidToken("the token's subject is not a valid user id")
    return user_id
