"""core/maintenance.py: the server's background loops stop when they are told to."""

from __future__ import annotations

import asyncio

import pytest

from mediagate.core.maintenance import run_periodically


async def test_a_loop_stops_even_when_its_work_swallows_the_cancellation():
    """Python 3.11's asyncio.wait_for (inside psycopg's pool) may swallow a cancellation
    that races its result; the loop must stop all the same, or shutdown waits forever."""
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass  # what the racing wait_for does: returns as if nothing happened

    loop = asyncio.create_task(run_periodically("test", work, interval=60))
    await started.wait()
    loop.cancel()

    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await loop
