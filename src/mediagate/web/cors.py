"""CORS, so that a browser app on another origin can call the API.

For the origins in MEDIAGATE_CORS_ORIGINS (`*` for any), preflights (`OPTIONS` with
`Access-Control-Request-Method`) are answered 204 before routing, and every answer
under a governed path prefix, errors included, carries `Access-Control-Allow-Origin`
and `Access-Control-Expose-Headers`. Credentials are never allowed: the API takes
bearer tokens in a header, not cookies, so no answer needs them, and `*` stays safe.

A small middleware rather than aiohttp-cors: that library is barely maintained and
wants every route registered with it one by one, while the rule here is one per path
prefix. Other route families (tus) extend the native API's rule with `extended()`
and pass it to `Cors` next to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from mediagate.errors import CorsOriginNotAllowed
from mediagate.web.problems import from_problem

# Browsers cache a preflight this long (Chromium caps it at 7200 s): one per two
# hours per URL and method instead of one before every chunk.
PREFLIGHT_MAX_AGE = 7200


@dataclass(frozen=True)
class CorsPaths:
    """What a browser may send to, and read from, the routes under `prefix`."""

    prefix: str
    methods: frozenset[str]
    request_headers: frozenset[str]
    exposed_headers: frozenset[str]

    def extended(
        self,
        prefix: str,
        *,
        methods: Iterable[str] = (),
        request_headers: Iterable[str] = (),
        exposed_headers: Iterable[str] = (),
    ) -> CorsPaths:
        """This rule for another prefix, with more methods and headers."""
        return CorsPaths(
            prefix,
            self.methods | frozenset(methods),
            self.request_headers | frozenset(request_headers),
            self.exposed_headers | frozenset(exposed_headers),
        )


NATIVE_API = CorsPaths(
    prefix="/api/",
    methods=frozenset({"GET", "HEAD", "POST", "DELETE"}),
    request_headers=frozenset(
        {
            "Authorization",
            "Content-Type",
            "Content-MD5",
            "X-Chunk-SHA256",
            "X-Request-ID",
            "Range",
            "If-Match",
            "If-None-Match",
            "If-Modified-Since",
            "If-Unmodified-Since",
            "If-Range",
        }
    ),
    exposed_headers=frozenset(
        {
            "ETag",
            "Content-Range",
            "Content-Length",
            "Content-Disposition",
            "Retry-After",
            "X-Request-ID",
            "Location",
            "Accept-Ranges",
            "WWW-Authenticate",
        }
    ),
)


class Cors:
    def __init__(self, origins: Sequence[str], paths: Sequence[CorsPaths] = (NATIVE_API,)) -> None:
        # Browsers send the origin serialised: lower-case scheme and host.
        self._origins = frozenset(origin.lower() for origin in origins)
        self._any_origin = "*" in self._origins
        self._paths = sorted(paths, key=lambda rule: len(rule.prefix), reverse=True)

    def _rule(self, path: str) -> CorsPaths | None:
        if not self._origins:
            return None
        return next((rule for rule in self._paths if path.startswith(rule.prefix)), None)

    def _allow_origin(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin value for `origin`, or None if it is not allowed."""
        if origin is None:
            return None
        if self._any_origin:
            return "*"
        return origin if origin.lower() in self._origins else None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer preflights here: no route has OPTIONS, and no token comes with them."""
        rule = self._rule(request.path)
        if (
            rule is None
            or request.method != hdrs.METH_OPTIONS
            or hdrs.ACCESS_CONTROL_REQUEST_METHOD not in request.headers
        ):
            return await handler(request)
        allowed = self._allow_origin(request.headers.get(hdrs.ORIGIN))
        if allowed is None:
            return from_problem(
                CorsOriginNotAllowed("this origin is not in MEDIAGATE_CORS_ORIGINS")
            )
        return web.Response(
            status=204,
            headers={
                hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: allowed,
                hdrs.ACCESS_CONTROL_ALLOW_METHODS: ", ".join(sorted(rule.methods)),
                hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ", ".join(sorted(rule.request_headers)),
                hdrs.ACCESS_CONTROL_MAX_AGE: str(PREFLIGHT_MAX_AGE),
            },
        )

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Mark every answer under a governed prefix, errors and prepared files included."""
        rule = self._rule(request.path)
        if rule is None:
            return
        if not self._any_origin:
            # Answers differ by Origin: a shared cache must not hand one origin's to another.
            vary = response.headers.get(hdrs.VARY)
            response.headers[hdrs.VARY] = f"{vary}, Origin" if vary else "Origin"
        allowed = self._allow_origin(request.headers.get(hdrs.ORIGIN))
        if allowed is None or hdrs.ACCESS_CONTROL_ALLOW_ORIGIN in response.headers:
            return
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = allowed
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = ", ".join(
            sorted(rule.exposed_headers)
        )
