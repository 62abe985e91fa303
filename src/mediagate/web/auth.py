"""Who is asking: the `sub` of a bearer JWT."""

from __future__ import annotations

import structlog
from aiohttp import web

from mediagate import tokens
from mediagate.errors import Unauthorized
from mediagate.web.keys import JWT_SECRET


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticated_user(request: web.Request) -> str:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("no token: send Authorization: Bearer <token>", reason=tokens.MISSING)
    try:
        user_id = tokens.verify(request.app[JWT_SECRET], token)
    except tokens.InvalidToken as error:
        raise Unauthorized(str(error), reason=error.reason) from None
    structlog.contextvars.bind_contextvars(user_id=user_id)
    return user_id
