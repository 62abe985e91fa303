"""`mediagate serve`: listen until SIGTERM or SIGINT, then stop without losing a chunk.

Why not `web.run_app`: aiohttp's own graceful shutdown first closes every
connection, and a closing connection drops the bytes that still arrive
(`RequestHandler.data_received` returns early), so a chunk whose body is on
its way could never finish: its handler would wait for discarded bytes until
the shutdown timeout cancelled it. The order here is:

1. stop listening: new connections are refused;
2. let requests in flight finish, for up to MEDIAGATE_SHUTDOWN_TIMEOUT seconds,
   while new requests on kept-alive connections get a 503 problem;
3. aiohttp's cleanup: the last answers are written (for up to FINAL_GRACE
   seconds), whatever still runs is cancelled, then the application's cleanup
   closes the S3 clients and, last, the catalog.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog
from aiohttp import web

from mediagate.config import SettingsError
from mediagate.web.keys import REQUEST_GATE, SETTINGS
from mediagate.web.protocol import AppRunner

log = structlog.get_logger("mediagate")

ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'
# Seconds aiohttp may take, after draining, to write answers already produced
# (a file being sent) and then to let cancelled handlers unwind.
FINAL_GRACE = 2.0


async def serve(app: web.Application, *, host: str, port: int, shutdown_timeout: float) -> None:
    runner = AppRunner(
        app,
        access_log_format=ACCESS_LOG_FORMAT,
        shutdown_timeout=FINAL_GRACE,
        # aiohttp closes a connection that has not delivered a whole request
        # this long after it opened or after its last answer: the header timeout.
        keepalive_timeout=app[SETTINGS].header_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as error:  # in use, or not an address of this machine
            raise SettingsError(
                f"cannot listen on {host}:{port} ({error.strerror}); set MEDIAGATE_HOST and "
                "MEDIAGATE_PORT (or --host, --port) to a free port on an address of this machine"
            ) from None
        log.info("server.listening", url=site.name)
        await _until_stop_signal()
        await site.stop()
        # Requests whose headers arrived just before start in the next loop turn.
        await asyncio.sleep(0)
        gate = app[REQUEST_GATE]
        log.info("server.stopping", in_flight=gate.in_flight, grace_seconds=shutdown_timeout)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(shutdown_timeout):
                await gate.drain()
        if gate.in_flight:
            log.warning("server.requests_cancelled", count=gate.in_flight)
    finally:
        await runner.cleanup()


async def _until_stop_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
