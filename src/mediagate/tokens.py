"""Bearer tokens: HS256 JWTs whose `sub` is the user id.

With no MEDIAGATE_JWT_SECRET set, a random secret is made on first start and
kept in the data directory (mode 0600), so tokens survive restarts and
`mediagate token` run on the same data directory signs tokens the server takes.
`mediagate token` never makes that secret unless asked (`--create-secret`):
one no server uses would only sign tokens that every server refuses.
A secret file shorter than MIN_JWT_SECRET_BYTES (truncated, hand-edited) is
refused like a short MEDIAGATE_JWT_SECRET, never used.

With MEDIAGATE_JWT_JWKS_URL set, tokens from the app's identity provider are
taken too: a token's header picks the path, HS256 to our secret, RS256, ES256
and EdDSA to the provider's key of the header's `kid` (jwks.py).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import jwt

from mediagate.config import MIN_JWT_SECRET_BYTES, Settings, SettingsError
from mediagate.core.keys import is_valid_user_id
from mediagate.jwks import ASYMMETRIC_ALGORITHMS

ALGORITHM = "HS256"
SECRET_FILE = "jwt-secret"


class InvalidToken(Exception):
    """A refused token: `reason` for programs (one of those below), the message for people."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# Why a token is refused: the server's 401 problem carries one of these as `reason`.
MISSING, MALFORMED, BAD_SIGNATURE, EXPIRED = "missing", "malformed", "bad-signature", "expired"
NOT_YET_VALID, WRONG_ALGORITHM, UNKNOWN_KEY = "not-yet-valid", "algorithm", "unknown-key"
WRONG_ISSUER, WRONG_AUDIENCE, USER_ID = "wrong-issuer", "wrong-audience", "user-id"
NOT_OURS = "not a mediagate token"
USER_ID_RULE = "1-128 letters, digits and ._@+=-"
# Seconds an identity provider's clock may be ahead of or behind ours (`exp`, `nbf`, `iat`).
CLOCK_SKEW = 60


@dataclass(frozen=True)
class IdentityProvider:
    """What an identity provider's token is checked against."""

    keys: Mapping[str, jwt.PyJWK]  # by `kid`
    issuer: str | None = None
    audience: str | None = None
    user_claim: str = "sub"


class Secret(NamedTuple):
    value: bytes
    generated: bool  # made just now, in the data directory


def load_secret(settings: Settings, *, create: bool = True) -> bytes:
    return obtain_secret(settings, create=create).value


def obtain_secret(settings: Settings, *, create: bool = True) -> Secret:
    """The configured secret, else the data directory's, made on first use if `create`.

    Raises SettingsError if the data directory's secret is too short, or
    missing and not to be created: a token signed with a secret no server
    uses would only be refused."""
    if settings.jwt_secret is not None:
        return Secret(settings.jwt_secret.get_secret_value().encode(), generated=False)
    path = settings.data_dir / SECRET_FILE
    generated = False
    if not path.exists() and not create:
        raise SettingsError(
            f"no JWT secret: MEDIAGATE_JWT_SECRET is not set and {path.resolve()} does not exist "
            "(no server has started on this data directory); run this where the server runs, "
            "with its MEDIAGATE_DATA_DIR (or in the directory holding its ./data), or pass "
            "--create-secret to make the secret a server started here will use"
        )
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        generated = _write_private(path, secrets.token_urlsafe(48).encode())
    try:
        secret = path.read_bytes().strip()
    except OSError as error:  # not ours to read (another user's service), a directory
        raise SettingsError(
            f"cannot read the JWT secret file {path} ({error.strerror}); run as the user the "
            "server runs as, or set MEDIAGATE_JWT_SECRET"
        ) from None
    if len(secret) < MIN_JWT_SECRET_BYTES:
        raise SettingsError(
            f"invalid JWT secret file {path}: {len(secret)} bytes, at least "
            f"{MIN_JWT_SECRET_BYTES} are needed; delete it to have a new one generated "
            "(tokens signed with the old one stop working) or set MEDIAGATE_JWT_SECRET"
        )
    return Secret(secret, generated)


def _write_private(path: Path, content: bytes) -> bool:
    """Create the file, readable by its owner only, whole or not at all.

    Written aside and linked into place, so a racing reader never sees it
    half-written; False if a racing creator won (its file is kept)."""
    aside = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.link(aside, path)
    except FileExistsError:
        return False
    finally:
        aside.unlink()
    return True


def issue(secret: bytes, user_id: str, ttl: int, now: float | None = None) -> str:
    if not is_valid_user_id(user_id):
        raise ValueError(
            f"user id {user_id!r} must be 1-128 characters of letters, digits and ._@+=-"
        )
    issued = int(now if now is not None else time.time())
    claims = {"sub": user_id, "iat": issued, "exp": issued + ttl}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: bytes, token: str, provider: IdentityProvider | None = None) -> str:
    """The user id a valid token names; else InvalidToken saying why in a person's words.

    HS256 is checked with `secret` only, the provider's algorithms with its keys only:
    a token cannot choose to be checked with a public key taken as an HS256 secret."""
    if not token.isascii():  # PyJWT would raise UnicodeEncodeError on a lone surrogate
        raise InvalidToken(MALFORMED, NOT_OURS)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken(MALFORMED, NOT_OURS) from None
    algorithm, kid = header.get("alg"), header.get("kid")
    if algorithm == ALGORITHM:
        if provider is not None and kid is not None:  # our own tokens name no key
            raise InvalidToken(
                WRONG_ALGORITHM,
                f"the token is HS256 and names key {_name(kid)}: the identity provider's "
                "keys sign with RS256, ES256 or EdDSA, HS256 is for this server's own tokens",
            )
        return _verify_own(secret, token)
    if provider is None:
        raise InvalidToken(
            WRONG_ALGORITHM,
            f"the token is signed with {_name(algorithm)}: this server takes HS256 tokens "
            "signed with its own secret (no identity provider is set up)",
        )
    return _verify_provider(provider, token, algorithm, kid)


def _verify_provider(provider: IdentityProvider, token: str, algorithm: Any, kid: Any) -> str:
    if algorithm not in ASYMMETRIC_ALGORITHMS:
        raise InvalidToken(
            WRONG_ALGORITHM,
            f"the token is signed with {_name(algorithm)}: the identity provider's tokens "
            "must be RS256, ES256 or EdDSA",
        )
    if not isinstance(kid, str):
        raise InvalidToken(UNKNOWN_KEY, "the token names no key (no kid in its header)")
    key = provider.keys.get(kid)
    if key is None:
        raise InvalidToken(UNKNOWN_KEY, f"the identity provider has no key {_name(kid)}")
    if key.algorithm_name != algorithm:
        raise InvalidToken(
            WRONG_ALGORITHM,
            f"the token says {algorithm} but key {kid!r} is a {key.algorithm_name} key",
        )
    required = ["exp", provider.user_claim]
    required += ["iss"] if provider.issuer is not None else []
    required += ["aud"] if provider.audience is not None else []
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=provider.issuer,
            audience=provider.audience,
            leeway=CLOCK_SKEW,
            # `sub` is checked below as any user claim, refused with reason user-id.
            options={
                "require": required,
                "verify_aud": provider.audience is not None,
                "verify_sub": False,
            },
        )
    except jwt.ExpiredSignatureError:  # PyJWT checks the signature first: it is theirs
        raise InvalidToken(EXPIRED, f"the token expired {_expiry(token)}") from None
    except jwt.ImmatureSignatureError:
        raise InvalidToken(NOT_YET_VALID, "the token is not valid yet (nbf or iat)") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken(
            BAD_SIGNATURE, f"the token's signature does not match the provider's key {kid!r}"
        ) from None
    except (jwt.InvalidIssuerError, jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as e:
        raise _claim_refusal(provider, token, e) from None
    except jwt.PyJWTError:
        raise InvalidToken(MALFORMED, "the token's claims are malformed") from None
    user_id = claims[provider.user_claim]
    if not isinstance(user_id, str) or not is_valid_user_id(user_id):
        raise InvalidToken(
            USER_ID,
            f"the token's {provider.user_claim} claim {_name(user_id)} is not a user id this "
            f"server can store ({USER_ID_RULE})",
        )
    return user_id


def _claim_refusal(provider: IdentityProvider, token: str, error: jwt.PyJWTError) -> InvalidToken:
    """Why a validly signed token's `iss`, `aud` or required claims were refused."""
    claims = jwt.decode(token, options={"verify_signature": False})
    missing = error.claim if isinstance(error, jwt.MissingRequiredClaimError) else None
    if isinstance(error, jwt.InvalidIssuerError) or missing == "iss":
        return InvalidToken(
            WRONG_ISSUER,
            f"the token was issued by {_name(claims.get('iss'))}, not {provider.issuer!r}",
        )
    if isinstance(error, jwt.InvalidAudienceError) or missing == "aud":
        return InvalidToken(
            WRONG_AUDIENCE,
            f"the token is meant for {_name(claims.get('aud'))}, not {provider.audience!r}",
        )
    if missing == provider.user_claim:
        return InvalidToken(USER_ID, f"the token has no {provider.user_claim} claim (user id)")
    return InvalidToken(MALFORMED, f"the token has no {missing} claim")


def _name(value: object) -> str:
    """A value from a token, quoted for a message, cut short if long; `none` if absent."""
    if value is None:
        return "none"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _verify_own(secret: bytes, token: str) -> str:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError:  # PyJWT checks the signature first: it is ours
        raise InvalidToken(EXPIRED, f"the token expired {_expiry(token)}") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken(
            BAD_SIGNATURE, "the token is signed for another server (not with this server's secret)"
        ) from None
    except jwt.PyJWTError:  # not a JWT, another algorithm, no `sub` or `exp`
        raise InvalidToken(MALFORMED, NOT_OURS) from None
    user_id = claims["sub"]
    if not isinstance(user_id, str) or not is_valid_user_id(user_id):
        raise InvalidToken(MALFORMED, f"{NOT_OURS} (its subject is not a user id)")
    return user_id


def _expiry(token: str) -> str:
    """When a token whose signature was verified expired, in words."""
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    when = datetime.fromtimestamp(int(expires), UTC)
    return f"at {when:%Y-%m-%d %H:%M} UTC"
