"""Request latency by route pattern, never by raw path, so series stay bounded."""

from __future__ import annotations

import time

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from mediagate import metrics

# Requests that matched no route (404, 405) share one label value.
UNMATCHED_ROUTE = "unmatched"
# The request ended without an answer: the client went away, or shutdown cancelled it.
NO_ANSWER = "aborted"


def route_pattern(request: web.Request) -> str:
    """`/api/v1/media/upload/{session_id}`, not the path the client sent."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


def _method(request: web.Request) -> str:
    # Any token is a valid method on the wire; an unknown one must not add series.
    return request.method if request.method in hdrs.METH_ALL else "OTHER"


@web.middleware
async def request_metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status_class = NO_ANSWER
    try:
        response = await handler(request)
        status_class = f"{response.status // 100}xx"
        return response
    except web.HTTPException as error:
        status_class = f"{error.status // 100}xx"
        raise
    finally:
        metrics.http_request(
            _method(request), route_pattern(request), status_class, time.perf_counter() - started
        )
