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
import socket

import structlog
from aiohttp import web

from mediagate.config import SettingsError
from mediagate.logs import renders_json
from mediagate.web.access_log import JSON_FIELDS, TEXT_LINE, AccessLogger
from mediagate.web.keys import REQUEST_GATE, SERVED, SETTINGS
from mediagate.web.protocol import AppRunner

log = structlog.get_logger("mediagate")

# Seconds aiohttp may take, after draining, to write answers already produced
# (a file being sent) and then to let cancelled handlers unwind.
FINAL_GRACE = 2.0
# aiohttp's TCPSite default.
LISTEN_BACKLOG = 128


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    shutdown_timeout: float,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; on `sockets` bound by a supervisor if given."""
    runner = AppRunner(
        app,
        access_log_class=AccessLogger,
        access_log_format=JSON_FIELDS if renders_json(app[SETTINGS].log_format) else TEXT_LINE,
        shutdown_timeout=FINAL_GRACE,
        # aiohttp closes a connection that has not delivered a whole request
        # this long after it opened or after its last answer: the header timeout.
        keepalive_timeout=app[SETTINGS].header_timeout,
    )
    await runner.setup()
    try:
        sites: list[web.BaseSite]
        if sockets is None:
            sites = [web.TCPSite(runner, host, port)]
        else:
            sites = [web.SockSite(runner, sock) for sock in sockets]
        for site in sites:
            try:
                await site.start()
            except OSError as error:  # in use, or not an address of this machine
                raise cannot_listen(host, port, error) from None
            log.info("server.listening", url=site.name)
        log_started(app, sites[0].name)
        await _until_stop_signal()
        for site in sites:
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


def log_started(app: web.Application, listening: str) -> None:
    """`server.started`, with what is served where: only once the port is bound."""
    base = app[SETTINGS].public_url or listening
    log.info(
        "server.started",
        page=f"{base}/",
        native_api=f"{base}/api/v1/media",
        tus=f"{base}/api/v1/tus",
        docs=f"{base}/api/v1/docs",
        **app[SERVED],
    )


def bind_sockets(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Listening sockets on `host`:`port`, as aiohttp's TCPSite would open them.

    For a supervisor that binds the port for its workers; with `reuse_port`
    each worker gets sockets of its own on the same port (SO_REUSEPORT)."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:  # as asyncio does: the IPv4 address gets its own
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError as error:
        for sock in sockets:
            sock.close()
        raise cannot_listen(host, port, error) from None
    return sockets


def cannot_listen(host: str, port: int, error: OSError) -> SettingsError:
    return SettingsError(
        f"cannot listen on {host}:{port} ({error.strerror}); set MEDIAGATE_HOST and "
        "MEDIAGATE_PORT (or --host, --port) to a free port on an address of this machine"
    )


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
