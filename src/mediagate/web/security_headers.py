"""Headers every answer carries, whatever produced it: handler, error, redirect, file."""

from __future__ import annotations

from aiohttp import web

# Browsers must take Content-Type as it is: never sniff an upload into HTML or a script.
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff"}


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An `on_response_prepare` signal: runs for file responses prepared in handlers too,
    which a middleware would see only after their headers are sent."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
