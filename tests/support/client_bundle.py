"""The page that loads tests/browser/tus-clients.js (tus-js-client, Uppy and its plugins,
bundled once from npm: `cd tests/browser && npm ci && npm run bundle`) and its stylesheet
tus-clients.css (Uppy's, for the Dashboard) into Chromium."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from support.api import Api
from support.browser import launched_chromium

BUNDLE = Path(__file__).parent.parent / "browser" / "tus-clients.js"
STYLES = BUNDLE.with_suffix(".css")
PAGE = (
    "<!doctype html><meta charset=utf-8><title>tus</title>"
    "<link rel=stylesheet href=tus-clients.css><script src=tus-clients.js></script>"
)

# The file a page makes: byte i is i mod 251, so no part boundary lines up with the pattern.
MAKE_FILE = """
  const makeFile = (name, size) => {
    const data = new Uint8Array(size);
    for (let i = 0; i < size; i++) data[i] = i % 251;
    return new File([data], name, { type: "video/mp4", lastModified: 1700000000000 });
  };
"""


def file_bytes(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def page_app() -> web.Application:
    page = web.Application()

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def bundle(_: web.Request) -> web.FileResponse:
        return web.FileResponse(BUNDLE)

    async def styles(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STYLES)

    page.router.add_get("/index.html", index)
    page.router.add_get("/tus-clients.js", bundle)
    page.router.add_get("/tus-clients.css", styles)
    return page


@dataclass
class Browsing:
    api: Api
    page_url: str


@contextlib.asynccontextmanager
async def bundle_page(url: str) -> AsyncIterator[Any]:
    """A Chromium tab at the page, its console printed into the test's output."""
    async with launched_chromium() as browser:
        tab = await browser.new_page()
        tab.on("console", lambda message: print("browser:", message.text))
        await tab.goto(url)
        yield tab
