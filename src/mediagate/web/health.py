"""Operations endpoints, open without a token: liveness, readiness, metrics.

`/readyz` answers 200 whenever the catalog answers and the data directory's
disk (when anything may be written to it) has more than MEDIAGATE_MIN_FREE_DISK
free, S3 or not: without S3 new uploads go to local disk (or, with the fallback
off, are told to retry), so the server still serves. The S3 state is in the
body for dashboards and humans.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from mediagate import metrics
from mediagate.catalog.base import Catalog
from mediagate.config import format_size
from mediagate.errors import NotReady, Problem
from mediagate.models import SessionState
from mediagate.web.keys import SERVICES
from mediagate.web.problems import from_problem

log = structlog.get_logger("mediagate.web")

routes = web.RouteTableDef()

# A catalog that takes longer than this to answer `SELECT 1` is as good as down
# for a load balancer, and the probe must answer before the balancer gives up.
CATALOG_PING_TIMEOUT = 2.0


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    s3 = request.app[SERVICES].s3_status
    body: dict[str, str | int] = {"s3": s3.state.value}
    if s3.problem:
        body["s3_problem"] = s3.problem
    disk_problem = await _disk_problem(request, body)
    try:
        async with asyncio.timeout(CATALOG_PING_TIMEOUT):
            await request.app[SERVICES].catalog.ping()
    # Whatever the reason (closed, disk error, stuck), the answer is "not ready".
    except Exception as error:
        detail = str(error) or type(error).__name__
        log.warning("readyz.catalog_unusable", detail=detail)
        return from_problem(
            NotReady(f"the catalog does not answer: {detail}", catalog="unavailable", **body)
        )
    if disk_problem is not None:
        return from_problem(NotReady(disk_problem, catalog="ok", **body))
    return web.json_response({"catalog": "ok", **body})


async def _disk_problem(request: web.Request, body: dict[str, str | int]) -> str | None:
    """The data disk's state into `body`; why it makes the server unready, if it does."""
    disk = request.app[SERVICES].data_disk
    if disk is None:  # S3 without fallback, PostgreSQL: nothing is written there
        return None
    try:
        free = await disk.free_space()
    except Problem as error:
        body["disk"] = "unavailable"
        log.warning("readyz.disk_unusable", path=str(disk.root), detail=error.detail)
        return "the data disk cannot be read"
    body["disk_free_bytes"] = free
    if free > 0 and free >= disk.min_free:
        body["disk"] = "ok"
        return None
    body["disk"] = "full" if free == 0 else "low"
    log.warning("readyz.disk_low", path=str(disk.root), free=free, floor=disk.min_free)
    return (
        f"the data disk (MEDIAGATE_DATA_DIR) has {format_size(free)} free, below "
        f"MEDIAGATE_MIN_FREE_DISK={format_size(disk.min_free)}"
    )


@routes.get("/metrics")
async def prometheus_metrics(request: web.Request) -> web.Response:
    await _count_open_sessions(request.app[SERVICES].catalog)
    await _count_events(request.app[SERVICES].catalog)
    body, content_type = metrics.exposition(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _count_open_sessions(catalog: Catalog) -> None:
    """Open sessions are counted in the catalog at each scrape: they open and close
    on every worker and instance, so no one process could keep the count."""
    try:
        async with asyncio.timeout(CATALOG_PING_TIMEOUT):
            sessions = await catalog.sessions_in_state(SessionState.OPEN)
    # The scrape still answers, with the last count: metrics matter most in an outage.
    except Exception as error:
        log.warning("metrics.sessions_not_counted", detail=str(error) or type(error).__name__)
        return
    metrics.sessions_open(len(sessions))


async def _count_events(catalog: Catalog) -> None:
    """The outbox's deliveries by state, counted in the catalog (any instance sends them)."""
    try:
        async with asyncio.timeout(CATALOG_PING_TIMEOUT):
            counts = await catalog.count_events()
    except Exception as error:
        log.warning("metrics.events_not_counted", detail=str(error) or type(error).__name__)
        return
    metrics.events_counted(counts)
