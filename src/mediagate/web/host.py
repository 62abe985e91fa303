"""The Host a client sent, checked before any link is built from it.

Without MEDIAGATE_PUBLIC_URL the links the API hands out (`stream_url`) carry the
origin of the request, that is the client's Host header. A Host that is no
`host[:port]` (`:80`, `x:99999`, `a:b:c`, `h/../x`, `ex@mple.com`) either makes yarl
raise deep inside a handler or yields a link to somewhere else, so it is refused with
400 before any handler runs, as RFC 9112 §3.2 asks of a server.
"""

from __future__ import annotations

import ipaddress
import re

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from yarl import URL

from mediagate.errors import BadRequest
from mediagate.web.keys import SETTINGS

log = structlog.get_logger("mediagate")

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST = re.compile(
    rf"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>{_LABEL}(?:\.{_LABEL})*\.?))"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_MAX_NAME_LENGTH = 253  # RFC 1035 §2.3.4, without the trailing dot


def is_valid_host(value: str) -> bool:
    """`value` is a Host header field value: a DNS name, IPv4 or [IPv6], optional port."""
    match = _HOST.fullmatch(value)
    if match is None:
        return False
    if (port := match["port"]) is not None and not 0 < int(port) <= 65535:
        return False
    if (ipv6 := match["ipv6"]) is not None:
        try:
            ipaddress.IPv6Address(ipv6)
        except ValueError:
            return False
        return True
    return len(match["name"].rstrip(".")) <= _MAX_NAME_LENGTH


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    hosts = request.headers.getall(hdrs.HOST, [])
    if len(hosts) > 1:
        raise BadRequest("the request has more than one Host header")
    if hosts and not is_valid_host(hosts[0]):
        raise BadRequest("the Host header is not a valid host[:port]")
    return await handler(request)


def link_origin(request: web.Request) -> URL:
    """The origin of links handed out: MEDIAGATE_PUBLIC_URL, else the request's own.

    Call it before doing anything a failure could leave half done: it raises
    BadRequest for a Host that no link can be built on (host_middleware refuses
    those earlier; this keeps a handler safe wherever it runs).
    """
    public_url = request.app[SETTINGS].public_url
    if public_url:
        return URL(public_url)
    if not is_valid_host(request.host):
        raise BadRequest("the Host header is not a valid host[:port]")
    return request.url.origin()


async def warn_without_public_url(app: web.Application) -> None:
    """An `on_startup` hook: links built from clients' Host headers deserve a warning."""
    if not app[SETTINGS].public_url:
        log.warning(
            "server.no_public_url",
            detail="stream_url links carry the Host header each client sent",
            fix="set MEDIAGATE_PUBLIC_URL to the public origin, e.g. https://media.example.com",
        )
