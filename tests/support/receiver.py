"""An application on loopback, the other side of mediagate's webhooks and hooks: every call's
Standard Webhooks signature is verified with the application's secret (`whsec_…`)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook


class Receiver:
    """Events (`events_url`): the first copy of each webhook-id is kept in `received`, each
    acknowledged id in `ids` and when it first was in `arrived` (the event loop's clock);
    every call counts in `attempts`; the answer is `status`, or none while `hang`; nothing
    listens while stopped.

    Hooks (`pre_create_url`, `pre_finish_url`): each call is kept in `asked` and answered,
    after `delay` seconds, `decision` (pre-create) or `finish_decision` with
    `finish_status` (pre-finish), as JSON.
    """

    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(secret)
        self.port = 0  # chosen by the kernel at the first start, kept for the next ones
        self.status = 204
        self.received: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.arrived: dict[str, float] = {}
        self.attempts = 0
        self.hang = False
        self.decision: Any = {"allow": True}
        self.finish_decision: Any = {"allow": True}
        self.finish_status = 200
        self.delay = 0.0
        self.asked: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None

    async def _event(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        while self.hang:
            await asyncio.sleep(0.05)
        message = self._webhook.verify(body, dict(request.headers))
        if 200 <= self.status < 300:
            webhook_id = request.headers["webhook-id"]
            self.ids.append(webhook_id)
            self.arrived.setdefault(webhook_id, asyncio.get_running_loop().time())
            if webhook_id not in {m["id"] for m in self.received}:
                self.received.append({"id": webhook_id, **message})
        return web.Response(status=self.status)

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.asked.append(self._webhook.verify(body, dict(request.headers)))
        await asyncio.sleep(self.delay)
        if request.path == "/pre-finish":
            return web.json_response(self.finish_decision, status=self.finish_status)
        return web.json_response(self.decision)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/events", self._event)
        app.router.add_post("/pre-create", self._hook)
        app.router.add_post("/pre-finish", self._hook)
        # A call still held (`delay`, `hang`) is cut at stop rather than waited for.
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()
        self.port = self._runner.addresses[0][1]

    @property
    def events_url(self) -> str:
        return f"{self._base}/events"

    @property
    def pre_create_url(self) -> str:
        return f"{self._base}/pre-create"

    @property
    def pre_finish_url(self) -> str:
        return f"{self._base}/pre-finish"

    @property
    def _base(self) -> str:
        assert self.port, "start it first: its port is the kernel's choice"
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def types(self, media_id: str) -> list[str]:
        """The types of the events received about this media, in order."""
        return [m["type"] for m in self.received if m["data"]["media_id"] == media_id]
