"""Who is asking: the user id of a bearer JWT, ours (HS256) or the identity provider's."""

from __future__ import annotations

import jwt
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from mediagate import tokens
from mediagate.config import Settings
from mediagate.errors import IdentityProviderUnavailable, Unauthorized
from mediagate.jwks import ASYMMETRIC_ALGORITHMS, IdentityKeys
from mediagate.web.keys import IDENTITY_KEYS, JWT_SECRET, SETTINGS


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticated_user(request: web.Request) -> str:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("no token: send Authorization: Bearer <token>", reason=tokens.MISSING)
    keys = request.app.get(IDENTITY_KEYS)
    provider = None if keys is None else identity_provider(request.app[SETTINGS], keys)
    try:
        user_id = tokens.verify(request.app[JWT_SECRET], token, provider)
    except tokens.InvalidToken as error:
        if error.reason == tokens.UNKNOWN_KEY and keys is not None and keys.unavailable:
            raise IdentityProviderUnavailable(
                "the identity provider's keys cannot be fetched to check this token; "
                "try again later"
            ) from None
        raise Unauthorized(str(error), reason=error.reason) from None
    structlog.contextvars.bind_contextvars(user_id=user_id)
    return user_id


def identity_provider(settings: Settings, keys: IdentityKeys) -> tokens.IdentityProvider:
    return tokens.IdentityProvider(
        keys.keys, settings.jwt_issuer, settings.jwt_audience, settings.jwt_user_claim
    )


@web.middleware
async def identity_keys_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Fetch the identity provider's keys, if the request's token needs them, before
    the handler checks the token (which it does without waiting on the network)."""
    keys = request.app.get(IDENTITY_KEYS)
    token = bearer_token(request)
    if keys is not None and token is not None and token.isascii():
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            header = {}
        kid = header.get("kid")
        if header.get("alg") in ASYMMETRIC_ALGORITHMS and isinstance(kid, str):
            await keys.ensure(kid)
    return await handler(request)
