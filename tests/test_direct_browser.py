"""Uppy with its Dashboard and `@uppy/aws-s3`, unmodified, in headless Debian Chromium: its
parts go straight into the bucket (moto) at URLs mediagate signs through the
Companion-compatible routes.

The page is served from another origin than mediagate; that origin is in
MEDIAGATE_CORS_ORIGINS, so both mediagate's CORS and the bucket's CORS rule (set at
start-up, with PUT allowed and ETag exposed) let the browser through. moto's S3 server
answers preflights and exposes headers from the bucket's CORS configuration, so the
browser meets the same CORS checks as against S3. The bundle is tests/browser/tus-clients.js
and its stylesheet (`cd tests/browser && npm ci && npm run bundle`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from yarl import URL

from mediagate.config import Settings
from mediagate.core import upload_grants
from mediagate.web.app import create_app
from support.api import Api, MiB
from support.browser import browser_tests
from support.client_bundle import MAKE_FILE, Browsing, bundle_page, file_bytes, page_app
from support.tus import fetch_media

playwright = pytest.importorskip("playwright.async_api")

pytestmark = browser_tests

# An Uppy with @uppy/aws-s3 on mediagate's Companion routes, and one file added to it.
UPPY_WITH_FILE = (
    MAKE_FILE
    + """
  const uppyWithFile = (endpoint, name, size) => {
    const uppy = new Uppy().use(UppyAwsS3, {
      companionEndpoint: endpoint,
      shouldUseMultipart: true,
    });
    const file = makeFile(name, size);
    return { uppy, id: uppy.addFile({ name, type: file.type, data: file }) };
  };
"""
)

# Resolves with the upload's result once done, or once the first part is in and
# `cancelAfterFirstPart` removed the file (which aborts the upload).
UPPY_S3_UPLOAD = (
    "async ({ endpoint, name, size, cancelAfterFirstPart }) => {"
    + UPPY_WITH_FILE
    + """
  const { uppy, id } = uppyWithFile(endpoint, name, size);
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

# The Dashboard on the page, as an application sets it up; `window.completed` resolves
# with Uppy's `complete` event, `window.progress` has the bytes each progress event said.
DASHBOARD = """
({ endpoint }) => {
  const uppy = new Uppy({ autoProceed: false })
    .use(UppyDashboard, { inline: true, target: "body" })
    .use(UppyAwsS3, { companionEndpoint: endpoint, shouldUseMultipart: true });
  window.progress = [];
  uppy.on("upload-progress", (_, progress) => window.progress.push(progress.bytesUploaded));
  window.completed = new Promise((resolve) => uppy.on("complete", (result) => resolve({
    successful: result.successful.map((file) =>
      ({ name: file.name, url: file.uploadURL, key: file.response.body.key })),
    failed: result.failed.map((file) => String(file.error)),
  })));
}
"""

# An upload paused once its first part is in S3: the ids Uppy keeps to resume it.
# `window.resumePaused()` resumes it; `window.pausedDone` resolves with Uppy's `complete`.
PAUSED_AFTER_ONE_PART = (
    "async ({ endpoint, name, size }) => {"
    + UPPY_WITH_FILE
    + """
  const { uppy, id } = uppyWithFile(endpoint, name, size);
  window.resumePaused = () => uppy.pauseResume(id);
  window.pausedDone = new Promise((resolve) => uppy.on("complete", (result) => resolve({
    successful: result.successful.map((file) => file.name),
    failed: result.failed.map((file) => file.error),
  })));
  await new Promise((resolve, reject) => {
    uppy.once("s3-multipart:part-uploaded", () => { uppy.pauseResume(id); resolve(); });
    uppy.once("upload-error", (_, error) => reject(String(error)));
    uppy.upload();
  });
  return uppy.getFile(id).s3Multipart;
}
"""
)

# A new Uppy given an upload's ids as the state it resumes from (what Golden Retriever
# restores after a reload): it lists the parts, sends the missing ones, then completes.
RESUMES = (
    "async ({ endpoint, name, size, upload }) => {"
    + UPPY_WITH_FILE
    + """
  const { uppy, id } = uppyWithFile(endpoint, name, size);
  uppy.setFileState(id, { s3Multipart: upload });
  const errors = [];
  uppy.on("upload-error", (_, error) => errors.push(String(error)));
  const result = await uppy.upload();
  return { errors, successful: result.successful.length, failed: result.failed.length };
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


# 13 parts of Uppy's 5 MiB, on RGW too (its upload and read-back take ~6 s there).
DASHBOARD_SIZE = 64 * MiB


@pytest.mark.store
async def test_uppy_dashboard_uploads_a_chosen_file_into_the_bucket(
    browsing: Browsing, page: Any, tmp_path: Path
) -> None:
    api = browsing.api
    data = os.urandom(DASHBOARD_SIZE)
    chosen = tmp_path / "holiday.mp4"
    chosen.write_bytes(data)
    await page.evaluate(DASHBOARD, {"endpoint": await companion_endpoint(api)})

    # As a user does: "browse files", pick the file, press the upload button.
    async with page.expect_file_chooser() as choosing:
        await page.get_by_role("button", name="browse files").click()
    await (await choosing.value).set_files(chosen)
    await page.get_by_role("button", name=re.compile(r"^Upload 1 file")).click()
    done = await page.evaluate("window.completed")

    info, body = await fetch_media(api, "holiday.mp4")
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    parts = -(-DASHBOARD_SIZE // (5 * MiB))
    assert (info["size"], info["storage"], info["content_type"]) == (
        DASHBOARD_SIZE,
        "s3",
        "video/mp4",
    )
    assert info["checksum"].endswith(f"-{parts}")  # S3's ETag of an upload in parts
    assert done["failed"] == []
    # The Dashboard's progress moved part by part (each part's end is reported).
    ends = {min(n * 5 * MiB, DASHBOARD_SIZE) for n in range(1, parts + 1)}
    assert ends <= set(await page.evaluate("window.progress"))
    [uploaded] = done["successful"]
    assert uploaded["name"] == "holiday.mp4"
    assert uploaded["key"] == f"media/alice/{info['media_id']}/holiday.mp4"
    assert uploaded["url"].startswith(
        str(api.client.make_url(f"/api/v1/media/stream/{info['media_id']}"))
    )
    # What the user sees: the file, done.
    await page.get_by_text("holiday.mp4").first.wait_for()
    await page.get_by_text("Complete", exact=True).wait_for()


async def s3_parts(s3_objects: Any, bucket: str, key: str) -> list[tuple[int, str, int]]:
    uploads = (await s3_objects.list_multipart_uploads(Bucket=bucket)).get("Uploads", [])
    [upload_id] = [upload["UploadId"] for upload in uploads if upload["Key"] == key]
    listed = await s3_objects.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
    return [(part["PartNumber"], part["ETag"], part["Size"]) for part in listed["Parts"]]


async def test_another_users_uppy_cannot_sign_or_complete_parts_of_an_upload(
    browsing: Browsing, page: Any, s3_objects: Any, bucket: str
) -> None:
    alice = browsing.api
    bob = alice.as_user("bob")
    size = 11 * MiB + 7  # three parts of Uppy's 5 MiB
    file = {"name": "alice.mp4", "size": size}
    upload = await page.evaluate(
        PAUSED_AFTER_ONE_PART, {"endpoint": await companion_endpoint(alice), **file}
    )
    session = f"/api/v1/media/upload/{upload['uploadId']}"

    async def alices_upload() -> tuple[Any, list[tuple[int, str, int]]]:
        status = await alice.client.get(session, headers=alice.headers)
        return await status.json(), await s3_parts(s3_objects, bucket, upload["key"])

    before = await alices_upload()
    assert before[0]["state"] == "open"
    assert [part[0] for part in before[1]] == [1]

    calls: list[tuple[str, str, int]] = []  # Bob's page's calls about Alice's upload

    def record(response: Any) -> None:
        _, found, rest = URL(response.url).path.partition(upload["uploadId"])
        if found:
            calls.append((response.request.method, rest, response.status))

    page.on("response", record)
    bob_endpoint = await companion_endpoint(bob)
    refused = ["Error: Companion request failed: Not Found"]

    # Resumed as Uppy resumes: its first call, the list of parts, is refused.
    bobs = await page.evaluate(RESUMES, {"endpoint": bob_endpoint, "upload": upload, **file})
    assert bobs == {"errors": refused, "successful": 0, "failed": 1}
    assert calls == [("GET", "", 404)]

    # Bob's page answers the list itself: with none, Uppy asks to sign part 1; with all
    # three, it asks to complete. Both refused.
    listed: list[dict[str, Any]] = []

    async def answer_list(route: Any) -> None:
        if route.request.method != "GET":
            await route.continue_()
            return
        await route.fulfill(json=listed, headers={"Access-Control-Allow-Origin": "*"})

    the_list = re.compile(re.escape(upload["uploadId"]) + r"\?key=")
    await page.route(the_list, answer_list)
    every_part = [{"PartNumber": n, "ETag": f'"{n}"', "Size": 5 * MiB} for n in (1, 2, 3)]
    for parts, expected in [([], ("GET", "/1", 404)), (every_part, ("POST", "/complete", 404))]:
        calls.clear()
        listed[:] = parts
        bobs = await page.evaluate(RESUMES, {"endpoint": bob_endpoint, "upload": upload, **file})
        assert bobs == {"errors": refused, "successful": 0, "failed": 1}
        assert calls == [("GET", "", 200), expected]
    await page.unroute(the_list)

    # Nothing of Alice's upload changed, Bob has nothing, and Alice finishes hers.
    assert await alices_upload() == before
    bobs_media = await (await bob.client.get("/api/v1/media", headers=bob.headers)).json()
    assert bobs_media["items"] == []
    await page.evaluate("window.resumePaused()")
    assert await page.evaluate("window.pausedDone") == {"successful": ["alice.mp4"], "failed": []}
    info, body = await fetch_media(alice, "alice.mp4")
    assert info["size"] == size
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(file_bytes(size)).hexdigest()


async def test_an_uppy_upload_outlasting_its_grant_finishes(
    browsing: Browsing, page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grant lasts SIGNED_URL_EXPIRY seconds and Uppy keeps the endpoint it was made with
    to the end of an upload: the upload the grant started goes on after it expired (a new
    one it cannot start: tests/test_direct.py)."""
    api = browsing.api
    now = [time.time()]
    monkeypatch.setattr(upload_grants, "time", SimpleNamespace(time=lambda: now[0]))
    size = 11 * MiB + 7
    file = {"name": "long.mp4", "size": size}
    upload = await page.evaluate(
        PAUSED_AFTER_ONE_PART, {"endpoint": await companion_endpoint(api), **file}
    )
    now[0] += api.settings.signed_url_expiry + upload_grants.CLOCK_SKEW + 1

    await page.evaluate("window.resumePaused()")
    assert await page.evaluate("window.pausedDone") == {"successful": ["long.mp4"], "failed": []}
    info, body = await fetch_media(api, "long.mp4")
    assert info["media_id"] in upload["key"]
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(file_bytes(size)).hexdigest()


@pytest.mark.store  # the browser against the store tier's CORS too
async def test_uppy_aborts_and_needs_the_buckets_cors(
    browsing: Browsing, page: Any, s3_objects: Any, bucket: str
) -> None:
    api = browsing.api
    endpoint = await companion_endpoint(api)
    size = 11 * MiB + 7
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
    assert media["items"] == []

    # Without the bucket's CORS rule (PUT allowed, ETag exposed) the same upload fails:
    # moto answers any origin but exposes ETag only as the rule says (Uppy: "Missing
    # ETag"), RGW refuses the preflight.
    await s3_objects.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(playwright.Error):
        await page.evaluate(
            UPPY_S3_UPLOAD, {"endpoint": endpoint, "name": "no-cors.mp4", "size": 5 * MiB + 1}
        )
