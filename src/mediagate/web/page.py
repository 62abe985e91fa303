"""The web page at `/`: sign in, upload, list, play, delete, all through the native API.

Its assets are package data (`web/static/`), read once and served from memory:
a fixed set of files, so no request path ever reaches the file system.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web
from yarl import URL

from mediagate.config import Settings
from mediagate.web.keys import SETTINGS

routes = web.RouteTableDef()

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Asset names carry no version, so browsers revalidate each time (a 304 when unchanged).
ASSET_CACHE_CONTROL = "no-cache"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@functools.cache
def assets() -> dict[str, Asset]:
    found = {}
    for entry in (resources.files(__package__) / "static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in CONTENT_TYPES:
            body = entry.read_bytes()
            etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
            found[entry.name] = Asset(body, CONTENT_TYPES[suffix], etag)
    return found


def _origin(url: str) -> str:
    return str(URL(url).origin())


def media_sources(settings: Settings) -> list[str]:
    """Where the page's `<video>` may load from: this server, and wherever it redirects players.

    The signed stream URL is on this server (or `MEDIAGATE_PUBLIC_URL`); for S3
    media in redirect mode it answers 302 to the CDN or to a presigned S3 URL,
    and the browser checks the redirect's target against `media-src` too.
    """
    sources = ["'self'"]
    if settings.public_url:
        sources.append(_origin(settings.public_url))
    if not settings.use_cloud_storage or settings.stream_mode == "proxy":
        return sources
    if settings.cdn_base_url:
        sources.append(_origin(settings.cdn_base_url))
    elif settings.s3_endpoint_url:
        # S3-compatible endpoints are addressed by path (storage/s3.py).
        sources.append(_origin(settings.s3_endpoint_url))
    else:
        # botocore presigns AWS URLs virtual-host style on the global endpoint,
        # and by path for bucket names with dots (they break the TLS wildcard);
        # the regional forms are where S3 redirects outside us-east-1.
        bucket, region = settings.s3_bucket or "", settings.s3_region
        hosts = (
            ["s3.amazonaws.com", f"s3.{region}.amazonaws.com"]
            if "." in bucket
            else [f"{bucket}.s3.amazonaws.com", f"{bucket}.s3.{region}.amazonaws.com"]
        )
        sources.extend(f"https://{host}" for host in hosts)
    return list(dict.fromkeys(sources))


def content_security_policy(settings: Settings) -> str:
    directives = {
        "default-src": "'self'",
        "media-src": " ".join(media_sources(settings)),
        # Posters come from where the media do (a redirect to S3 or the CDN).
        "img-src": " ".join(media_sources(settings)),
        "object-src": "'none'",
        "base-uri": "'none'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def _asset_response(request: web.Request, asset: Asset) -> web.Response:
    headers = {
        "ETag": asset.etag,
        "Cache-Control": ASSET_CACHE_CONTROL,
        "Content-Security-Policy": content_security_policy(request.app[SETTINGS]),
        # Stream links carry their signature in the query: never hand them on as a Referer.
        "Referrer-Policy": "no-referrer",
    }
    validators = [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")]
    if asset.etag in validators:
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


@routes.get("/")
async def page(request: web.Request) -> web.Response:
    return _asset_response(request, assets()["index.html"])


@routes.get("/static/{name}")
async def static(request: web.Request) -> web.Response:
    asset = assets().get(request.match_info["name"])
    if asset is None:
        raise web.HTTPNotFound(text="no such asset")
    return _asset_response(request, asset)
