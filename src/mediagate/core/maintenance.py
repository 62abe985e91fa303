"""Background work of a running server: finish finalizing uploads, expire stale sessions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog

from mediagate.core.engine import UploadEngine

log = structlog.get_logger("mediagate.maintenance")

# How often finalizing uploads are retried while S3 is away. The S3 breaker
# turns each retry against a dead S3 into one fast failure.
FINALIZE_INTERVAL = 5.0
# Expired sessions only hold storage, so a minute's delay costs nothing.
SWEEP_INTERVAL = 60.0


async def run_periodically(
    name: str, work: Callable[[], Awaitable[object]], interval: float
) -> None:
    while True:
        try:
            await work()
        except Exception:
            log.exception("maintenance.failed", task=name)
        # Python 3.11's asyncio.wait_for (psycopg's pool waits with it) can swallow a
        # cancellation that races the result (cpython gh-86296): without this check
        # the loop would go on, and the server's shutdown would wait for it forever.
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise asyncio.CancelledError
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def background_maintenance(
    engine: UploadEngine,
    *,
    finalize_interval: float = FINALIZE_INTERVAL,
    sweep_interval: float = SWEEP_INTERVAL,
) -> AsyncIterator[None]:
    tasks = [
        asyncio.create_task(
            run_periodically("finalize", engine.finish_finalizing, finalize_interval)
        ),
        asyncio.create_task(run_periodically("expire", engine.expire_sessions, sweep_interval)),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
