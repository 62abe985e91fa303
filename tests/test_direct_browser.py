"""Uppy with `@uppy/aws-s3`, unmodified, in headless Debian Chromium: its parts go straight
into the bucket (moto) at URLs mediagate signs through the Companion-compatible routes.

The page is served from another origin than mediagate; that origin is in
MEDIAGATE_CORS_ORIGINS, so both mediagate's CORS and the bucket's CORS rule (set at
start-up, with PUT allowed and ETag exposed) let the browser through. moto's S3 server
answers preflights and exposes headers from the bucket's CORS configuration, so the
browser meets the same CORS checks as against S3. The bundle is tests/browser/tus-clients.js
(`cd tests/browser && npm ci && npm run bundle`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mediagate.config import Settings
from mediagate.web.app import create_app
from support.api import Api, MiB
from support.browser import browser_tests
from support.client_bundle import MAKE_FILE, Browsing, bundle_page, file_bytes, page_app
from support.tus import fetch_media

playwright = pytest.importorskip("playwright.async_api")

pytestmark = browser_tests

# Resolves with the upload's result once done, or once the first part is in and
# `cancelAfterFirstPart` removed the file (which aborts the upload).
UPPY_S3_UPLOAD = (
    "async ({ endpoint, name, size, cancelAfterFirstPart }) => {"
    + MAKE_FILE
    + """
  const file = makeFile(name, size);
  const uppy = new Uppy({ autoProceed: false }).use(UppyAwsS3, {
    companionEndpoint: endpoint,
    shouldUseMultipart: true,
  });
  const id = uppy.addFile({ name, type: file.type, data: file });
  return await new Promise((resolve, reject) => {
    if (cancelAfterFirstPart) {
      uppy.on("s3-multipart:part-uploaded", () => {
        uppy.removeFile(id);
        setTimeout(() => resolve({ finished: false }), 500);
      });
    }
    uppy.upload().then((result) => {
      if (result && result.successful && result.successful.length) {
        const done = result.successful[0];
        resolve({ finished: true, url: done.uploadURL, key: done.response.body.key });
      } else if (result && result.failed && result.failed.length) {
        reject(String(result.failed[0].error));
      }
    }, (error) => reject(String(error)));
  });
}
"""
)


@pytest.fixture
async def browsing(aiohttp_client: Any, aiohttp_server: Any, s3_settings: Settings) -> Browsing:
    page_server = await aiohttp_server(page_app())
    origin = str(page_server.make_url("")).rstrip("/")
    settings = s3_settings.model_copy(update={"cors_origins": [origin]})
    api = Api(await aiohttp_client(create_app(settings)), settings)
    return Browsing(api, str(page_server.make_url("/index.html")))


@pytest.fixture
async def page(browsing: Browsing) -> AsyncIterator[Any]:
    async with bundle_page(browsing.page_url) as tab:
        yield tab


async def companion_endpoint(api: Api) -> str:
    granted = await api.client.post("/api/v1/companion/grant", headers=api.headers)
    assert granted.status == 201
    return (await granted.json())["companion_endpoint"]


@pytest.mark.store  # the browser against the store tier's CORS too
async def test_uppy_aws_s3_uploads_into_the_bucket_and_aborts(
    browsing: Browsing, page: Any, s3_objects: Any, bucket: str
) -> None:
    api = browsing.api
    endpoint = await companion_endpoint(api)
    size = 11 * MiB + 7  # three parts of Uppy's 5 MiB
    done = await page.evaluate(
        UPPY_S3_UPLOAD, {"endpoint": endpoint, "name": "uppy-s3.mp4", "size": size}
    )
    assert done["finished"]
    info, body = await fetch_media(api, "uppy-s3.mp4")
    assert body == file_bytes(size)
    assert (info["size"], info["storage"], info["content_type"]) == (size, "s3", "video/mp4")
    assert info["checksum"].endswith("-3")  # S3's ETag of an upload of three parts
    assert done["url"].startswith(
        str(api.client.make_url(f"/api/v1/media/stream/{info['media_id']}"))
    )
    assert done["key"] == f"media/alice/{info['media_id']}/uppy-s3.mp4"

    cancelled = await page.evaluate(
        UPPY_S3_UPLOAD,
        {"endpoint": endpoint, "name": "cancelled.mp4", "size": size, "cancelAfterFirstPart": True},
    )
    assert not cancelled["finished"]
    for _ in range(50):  # the abort is Uppy's, sent as the file is removed
        listed = await s3_objects.list_multipart_uploads(Bucket=bucket)
        if not listed.get("Uploads"):
            break
        await asyncio.sleep(0.1)
    assert listed.get("Uploads", []) == []
    media = await (await api.client.get("/api/v1/media", headers=api.headers)).json()
    assert [item["filename"] for item in media["items"]] == ["uppy-s3.mp4"]

    # Without the bucket's CORS rule (PUT allowed, ETag exposed) the same upload fails:
    # moto answers any origin but exposes ETag only as the rule says (Uppy: "Missing
    # ETag"), RGW refuses the preflight.
    await s3_objects.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(playwright.Error):
        await page.evaluate(
            UPPY_S3_UPLOAD, {"endpoint": endpoint, "name": "no-cors.mp4", "size": 5 * MiB + 1}
        )
