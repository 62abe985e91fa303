"""The floor of a relay, for bench/upload.py --bare-relay: an aiohttp server that streams
each request body into a plain PUT to the presigned S3 URL it is given, and nothing else
(no botocore, no token, no catalog, no checks). Run: python bench/_bare_relay.py PORT."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from yarl import URL

SESSION = web.AppKey("session", aiohttp.ClientSession)


async def relay(request: web.Request) -> web.Response:
    length = request.headers["Content-Length"]
    target = URL(request.query["url"], encoded=True)
    # The body's pieces as they arrive (aiohttp's StreamReader payload: iter_any).
    headers = {"Content-Length": length}
    async with request.app[SESSION].put(target, data=request.content, headers=headers) as answer:
        text = await answer.text()
        if answer.status != 200:
            return web.Response(status=502, text=text)
        return web.json_response({"etag": answer.headers["ETag"]})


async def client(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        app[SESSION] = session
        yield


def main() -> None:
    app = web.Application()
    app.cleanup_ctx.append(client)
    app.router.add_put("/relay", relay)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
