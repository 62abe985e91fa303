"""tus-js-client and Uppy (@uppy/tus), unmodified, in headless Debian Chromium.

The clients are bundled once from npm into tests/browser/tus-clients.js
(`cd tests/browser && npm ci && npm run bundle`). Playwright drives Debian's
/usr/bin/chromium (no browser download). Each upload is fetched back through
the media API and compared byte for byte, into moto and onto local disk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from mediagate.config import Settings
from mediagate.web.app import create_app
from support.api import Api, MiB
from support.browser import browser_tests
from support.client_bundle import MAKE_FILE, Browsing, bundle_page, file_bytes, page_app
from support.tus import TUS, fetch_media

pytest.importorskip("playwright.async_api")

pytestmark = browser_tests

TUS_JS_UPLOAD = (
    "async ({ endpoint, token, name, size, chunkSize, stopAt, terminate, parallel, protocol }) => {"
    + MAKE_FILE
    + """
  const file = makeFile(name, size);
  const options = {
    endpoint,
    ...(protocol ? { protocol } : {}),
    ...(chunkSize ? { chunkSize } : {}),
    ...(parallel ? { parallelUploads: parallel } : {}),
    headers: { Authorization: `Bearer ${token}` },
    metadata: { filename: name, filetype: file.type },
    retryDelays: [0, 250, 500],
  };
  return await new Promise((resolve, reject) => {
    const upload = new tus.Upload(file, {
      ...options,
      onError: (error) => reject(String(error)),
      onSuccess: () => resolve({ url: upload.url, finished: true }),
      onProgress: (sent) => {
        if (stopAt && sent >= stopAt) {
          stopAt = 0;
          upload.abort(terminate).then(() => resolve({ url: upload.url, finished: false }));
        }
      },
    });
    upload.findPreviousUploads().then((previous) => {
      if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
      upload.start();
    });
  });
}
"""
)

UPPY_UPLOAD = (
    "async ({ endpoint, token, name, size, chunkSize, stopAt, cancel }) => {"
    + MAKE_FILE
    + """
  const file = makeFile(name, size);
  const uppy = new Uppy({ autoProceed: false }).use(UppyTus, {
    endpoint,
    ...(chunkSize ? { chunkSize } : {}),
    headers: { Authorization: `Bearer ${token}` },
    retryDelays: [0, 250, 500],
  });
  const id = uppy.addFile({ name, type: file.type, data: file });
  return await new Promise((resolve, reject) => {
    uppy.on("upload-progress", (f, progress) => {
      if (stopAt && progress.bytesUploaded >= stopAt) {
        stopAt = 0;
        const url = uppy.getFile(id).tus?.uploadUrl;
        // Paused, the upload stays in the browser's storage (destroying Uppy would cancel it).
        if (cancel) uppy.removeFile(id);
        else uppy.pauseResume(id);
        setTimeout(() => resolve({ url, finished: false }), 500);
      }
    });
    uppy.upload().then((result) => {
      if (result && result.successful && result.successful.length) {
        resolve({ url: result.successful[0].uploadURL, finished: true });
      } else if (result && result.failed && result.failed.length) {
        reject(String(result.failed[0].error));
      }
    }, (error) => reject(String(error)));
  });
}
"""
)


@pytest.fixture(
    params=[("local", "same"), ("s3", "same"), ("local", "cross"), ("s3", "cross")],
    ids=lambda param: f"{param[0]}-{param[1]}-origin",
)
async def browsing(
    aiohttp_client: Any, aiohttp_server: Any, request: pytest.FixtureRequest
) -> Browsing:
    """mediagate, and the test page: beside the API (same origin) or on another port."""
    store, origin = request.param
    settings: Settings = request.getfixturevalue(f"{store}_settings")
    if origin == "same":
        app = create_app(settings)
        app.add_subapp("/_test/", page_app())
        api = Api(await aiohttp_client(app), settings)
        return Browsing(api, str(api.client.make_url("/_test/index.html")))
    page_server = await aiohttp_server(page_app())
    page_origin = str(page_server.make_url("")).rstrip("/")
    settings = settings.model_copy(update={"cors_origins": [page_origin]})
    api = Api(await aiohttp_client(create_app(settings)), settings)
    preflight = await api.client.options(
        "/api/v1/tus",
        headers={"Origin": page_origin, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 204
    assert "PATCH" in preflight.headers["Access-Control-Allow-Methods"]
    return Browsing(api, str(page_server.make_url("/index.html")))


@pytest.fixture
async def page(browsing: Browsing) -> AsyncIterator[Any]:
    async with bundle_page(browsing.page_url) as tab:
        yield tab


def arguments(
    api: Api, name: str, size: int, path: str = "/api/v1/tus", **more: Any
) -> dict[str, Any]:
    token = api.headers["Authorization"].removeprefix("Bearer ")
    endpoint = str(api.client.make_url(path))
    return {"endpoint": endpoint, "token": token, "name": name, "size": size, **more}


# What a page does with Uppy's `uploadURL` once done: HEAD names the media (a header a
# page on another origin may read), GET with the token gets the file back.
UPLOAD_URL_LEADS_TO_MEDIA = """
async ({ url, token }) => {
  const auth = { Authorization: `Bearer ${token}` };
  const head = await fetch(url, { method: "HEAD", headers: { ...auth, "Tus-Resumable": "1.0.0" } });
  const got = await fetch(url, { headers: auth });
  const bytes = new Uint8Array(await got.arrayBuffer());
  let same = true;
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== i % 251) { same = false; break; }
  return {
    mediaId: head.headers.get("Upload-Media-Id"),
    link: head.headers.get("Link"),
    status: got.status,
    size: bytes.length,
    same,
  };
}
"""


async def upload_state(api: Api, url: str, protocol: dict[str, str] = TUS) -> int:
    answer = await api.client.head(
        url.split(str(api.client.make_url("")))[-1], headers={**api.headers, **protocol}
    )
    return answer.status


async def test_tus_js_client_uploads_resumes_and_cancels(browsing: Browsing, page: Any) -> None:
    api = browsing.api
    size = 10 * MiB + 17
    # A fresh upload, the whole file in one PATCH (tus-js-client's default).
    done = await page.evaluate(TUS_JS_UPLOAD, arguments(api, "fresh.mp4", size, chunkSize=None))
    assert done["finished"]
    assert (await fetch_media(api, "fresh.mp4"))[1] == file_bytes(size)

    # Aborted after 3 MiB, then a new Upload finds it in localStorage and resumes it.
    first = await page.evaluate(
        TUS_JS_UPLOAD, arguments(api, "resumed.mp4", size, chunkSize=MiB, stopAt=3 * MiB)
    )
    assert not first["finished"]
    second = await page.evaluate(TUS_JS_UPLOAD, arguments(api, "resumed.mp4", size, chunkSize=MiB))
    assert second == {"url": first["url"], "finished": True}
    assert (await fetch_media(api, "resumed.mp4"))[1] == file_bytes(size)

    # parallelUploads: partial uploads sent at once, then joined by a final one (concatenation).
    done = await page.evaluate(
        TUS_JS_UPLOAD, arguments(api, "parallel.mp4", 2 * size, chunkSize=None, parallel=2)
    )
    assert done["finished"]
    info, body = await fetch_media(api, "parallel.mp4")
    assert body == file_bytes(2 * size)
    if api.settings.use_cloud_storage:
        assert info["checksum"].endswith("-2")  # each partial one part, copied inside S3

    # Cancelled: abort(true) terminates the upload with DELETE.
    cancelled = await page.evaluate(
        TUS_JS_UPLOAD,
        arguments(api, "cancelled.mp4", size, chunkSize=MiB, stopAt=2 * MiB, terminate=True),
    )
    assert await upload_state(api, cancelled["url"]) == 404


async def test_uppy_uploads_resumes_and_cancels(browsing: Browsing, page: Any) -> None:
    api = browsing.api
    size = 9 * MiB + 5
    done = await page.evaluate(UPPY_UPLOAD, arguments(api, "uppy.mp4", size, chunkSize=None))
    assert done["finished"]
    info, body = await fetch_media(api, "uppy.mp4")
    assert body == file_bytes(size)
    assert info["content_type"] == "video/mp4"  # from Uppy's name/type metadata
    token = api.headers["Authorization"].removeprefix("Bearer ")
    found = await page.evaluate(UPLOAD_URL_LEADS_TO_MEDIA, {"url": done["url"], "token": token})
    assert found["mediaId"] == info["media_id"]
    assert found["link"].endswith(f'/api/v1/media/info/{info["media_id"]}>; rel="describedby"')
    assert (found["status"], found["size"], found["same"]) == (200, size, True)

    first = await page.evaluate(
        UPPY_UPLOAD, arguments(api, "uppy-resumed.mp4", size, chunkSize=MiB, stopAt=3 * MiB)
    )
    assert not first["finished"]
    second = await page.evaluate(
        UPPY_UPLOAD, arguments(api, "uppy-resumed.mp4", size, chunkSize=MiB)
    )
    assert second["finished"]
    assert second["url"] == first["url"]
    assert (await fetch_media(api, "uppy-resumed.mp4"))[1] == file_bytes(size)

    cancelled = await page.evaluate(
        UPPY_UPLOAD,
        arguments(api, "uppy-cancelled.mp4", size, chunkSize=MiB, stopAt=2 * MiB, cancel=True),
    )
    assert await upload_state(api, cancelled["url"]) == 404


IETF_DRAFT_05 = {"protocol": "ietf-draft-05", "path": "/api/v1/uploads"}


async def test_tus_js_client_speaks_the_ietf_draft(browsing: Browsing, page: Any) -> None:
    """tus-js-client's `protocol: 'ietf-draft-05'` (interop version 6) at /api/v1/uploads:
    an upload in one PATCH, one aborted and resumed through its stored URL, one cancelled."""
    api = browsing.api
    size = 6 * MiB + 17
    done = await page.evaluate(
        TUS_JS_UPLOAD, arguments(api, "ietf.mp4", size, chunkSize=None, **IETF_DRAFT_05)
    )
    assert done["finished"]
    assert "/api/v1/uploads/" in done["url"]
    info, body = await fetch_media(api, "ietf.mp4")
    assert body == file_bytes(size)
    assert info["content_type"] == "video/mp4"  # from its Upload-Metadata

    first = await page.evaluate(
        TUS_JS_UPLOAD,
        arguments(api, "ietf-resumed.mp4", size, chunkSize=MiB, stopAt=2 * MiB, **IETF_DRAFT_05),
    )
    assert not first["finished"]
    second = await page.evaluate(
        TUS_JS_UPLOAD, arguments(api, "ietf-resumed.mp4", size, chunkSize=MiB, **IETF_DRAFT_05)
    )
    assert second == {"url": first["url"], "finished": True}
    assert (await fetch_media(api, "ietf-resumed.mp4"))[1] == file_bytes(size)

    cancelled = await page.evaluate(
        TUS_JS_UPLOAD,
        arguments(
            api,
            "ietf-cancelled.mp4",
            size,
            chunkSize=MiB,
            stopAt=MiB,
            terminate=True,
            **IETF_DRAFT_05,
        ),
    )
    interop = {"Upload-Draft-Interop-Version": "6"}
    assert await upload_state(api, cancelled["url"], interop) == 404
