"""The web page at `/`: its assets, its Content-Security-Policy, and a real browser using it."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from mediagate import tokens
from mediagate.web.page import content_security_policy, media_sources
from support.api import make_settings
from support.browser import browser_tests, launched_chromium, open_page
from support.identity_provider import AUDIENCE, IdentityServer, Key


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, ["'self'"]),
        ({"public_url": "https://media.example.com/base"}, ["'self'", "https://media.example.com"]),
        (
            {
                "use_cloud_storage": True,
                "s3_bucket": "clips",
                "s3_endpoint_url": "http://minio:9000",
            },
            ["'self'", "http://minio:9000"],
        ),
        (
            {"use_cloud_storage": True, "s3_bucket": "clips", "s3_region": "eu-west-1"},
            [
                "'self'",
                "https://clips.s3.amazonaws.com",
                "https://clips.s3.eu-west-1.amazonaws.com",
            ],
        ),
        (
            {"use_cloud_storage": True, "s3_bucket": "my.clips"},
            ["'self'", "https://s3.amazonaws.com", "https://s3.us-east-1.amazonaws.com"],
        ),
        (
            {
                "use_cloud_storage": True,
                "s3_bucket": "clips",
                "cdn_base_url": "https://cdn.example.com/media",
            },
            ["'self'", "https://cdn.example.com"],
        ),
        (
            {"use_cloud_storage": True, "s3_bucket": "clips", "stream_mode": "proxy"},
            ["'self'"],
        ),
    ],
)
def test_media_may_come_from_where_stream_links_lead(tmp_path, overrides, expected):
    assert media_sources(make_settings(tmp_path, **overrides)) == expected


def test_the_assets_are_package_data():
    static = resources.files("mediagate.web") / "static"
    names = {entry.name for entry in static.iterdir()}
    assert {"index.html", "app.js", "api.js", "uploader.js", "style.css", "icon.svg"} <= names
    page = (static / "index.html").read_text()
    referenced = set(re.findall(r'(?:src|href)="/static/([^"]+)"', page))
    assert referenced and referenced <= names
    # No request leaves the server: nothing is loaded from another origin.
    elsewhere = re.compile(r"(?:src|href|import|url)\W+(?:https?:)?//")
    assert [name for name in names if elsewhere.search((static / name).read_text())] == []


async def test_page_and_assets_are_served_with_a_policy(local_api):
    page = await local_api.client.get("/")
    assert page.status == 200
    assert page.content_type == "text/html"
    assert '<script type="module" src="/static/app.js">' in await page.text()
    policy = page.headers["Content-Security-Policy"]
    assert policy == content_security_policy(local_api.settings)
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["Referrer-Policy"] == "no-referrer"

    script = await local_api.client.get("/static/app.js")
    assert script.status == 200
    assert script.content_type == "text/javascript"  # ES modules need a JavaScript type
    again = await local_api.client.get(
        "/static/app.js", headers={"If-None-Match": script.headers["ETag"]}
    )
    assert again.status == 304

    for path in ("/static/missing.js", "/static/..%2Fpage.py", "/static/"):
        missing = await local_api.client.get(path)
        assert missing.status == 404
        assert missing.content_type == "application/problem+json"


# ----- in a real browser: Debian's chromium driven by playwright -----


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with launched_chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 5-second H.264 MP4 (Debian's chromium decodes H.264 through its system ffmpeg)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg (CI installs it)")
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    command = (
        "ffmpeg -v error -f lavfi -i testsrc=duration=5:size=320x240:rate=10 -c:v libx264 "
        "-preset ultrafast -g 5 -pix_fmt yuv420p -movflags +faststart"
    ).split()
    subprocess.run(
        [*command, str(path)],
        check=True,
        timeout=60,
    )
    return path


def token_of(api: Any) -> str:
    return api.headers["Authorization"].removeprefix("Bearer ")


async def current_time(page: Any) -> float:
    return await page.evaluate("document.getElementById('video').currentTime")


@browser_tests
async def test_upload_list_play_seek_and_delete_in_the_browser(s3_api, browser, clip):
    page, problems = await open_page(browser, str(s3_api.client.make_url("/")))
    await page.get_by_label("Access token").fill(token_of(s3_api))
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_text("Signed in as alice").wait_for()

    # Choosing the file is all it takes: no upload button.
    await page.get_by_label("Drop files here, or choose files").set_input_files(clip)
    await page.locator(".upload-item.done").get_by_text("Uploaded").wait_for()
    listed = page.locator(".media-open", has_text="clip.mp4")
    await listed.wait_for()
    assert "video/mp4" in await listed.inner_text()

    # The media's signed link redirects to a presigned URL on S3 (moto), which the
    # page's policy lets the <video> follow; playing needs the browser's H.264.
    await listed.click()
    await page.wait_for_function("() => document.getElementById('video').currentTime > 1")
    assert await page.locator("#playing-type").inner_text() == "video/mp4"
    await page.evaluate("document.getElementById('video').currentTime = 3.5")
    await page.wait_for_function("() => document.getElementById('video').currentTime > 3.7")
    assert not await page.evaluate("document.getElementById('video').paused")

    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete clip.mp4").click()
    await page.get_by_text("Deleted clip.mp4. No media yet").wait_for()
    listing = await s3_api.client.get("/api/v1/media", headers=s3_api.headers)
    assert (await listing.json())["items"] == []
    assert problems == []


@browser_tests
async def test_a_reload_resumes_with_the_missing_chunks_only(local_api, browser, tmp_path):
    big = tmp_path / "big.bin"  # two chunks of the default 8 MiB
    big.write_bytes(bytes(range(256)) * (9 * 4096))
    page, _ = await open_page(
        browser, f"{local_api.client.make_url('/')}#token={token_of(local_api)}"
    )
    await page.get_by_text("Signed in as alice").wait_for()

    # The second chunk never gets through (chromium blocks it: playwright's own
    # routing would carry every body through the test); then the page is reloaded.
    devtools = await page.context.new_cdp_session(page)
    await devtools.send("Network.enable")
    await devtools.send("Network.setBlockedURLs", {"urls": ["*/chunk/1"]})
    async with page.expect_response(lambda answer: "/chunk/0" in answer.url) as first:
        await page.get_by_label("Drop files here, or choose files").set_input_files(big)
    assert (await first.value).status == 200
    await page.reload()
    await devtools.send("Network.setBlockedURLs", {"urls": []})
    await page.get_by_text("Interrupted at 88 %").wait_for()
    await page.locator(".upload-size", has_text="9 MiB").wait_for()  # IEC, as the CLI prints

    sent: list[str] = []
    page.on("request", lambda request: "/chunk/" in request.url and sent.append(request.url))
    await page.get_by_label("Drop files here, or choose files").set_input_files(big)
    await page.get_by_text("Resumed: 1 of 2 parts were already on the server.").wait_for()
    await page.locator(".media-open", has_text="big.bin").wait_for()
    assert [url.rsplit("/", 1)[1] for url in sent] == ["1"]


@browser_tests
async def test_a_token_link_signs_in_and_leaves_the_address_bar(local_api, browser):
    base = str(local_api.client.make_url("/"))
    link = f"{base}#token={token_of(local_api)}"
    page, problems = await open_page(browser, link)
    await page.get_by_text("Signed in as alice").wait_for()
    assert page.url == base

    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_label("Access token").fill("not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_text("Could not sign in: not a mediagate token").wait_for()
    await page.reload()
    await page.get_by_label("Access token").wait_for()  # signed out stays signed out

    # The link opened on the page already there changes only the fragment.
    await page.goto(link)
    await page.get_by_text("Signed in as alice").wait_for()
    assert page.url == base
    # The addresses with the token were replaced in the history, not pushed.
    await page.go_back()
    assert page.url == base
    await page.go_back()
    assert page.url == "about:blank"
    # The refused sign-in's 401 is the only error the browser reported.
    assert [problem for problem in problems if "401" not in problem] == []


@browser_tests
async def test_the_list_is_newest_first_with_more_on_request_and_drops_upload(local_api, browser):
    for number in range(51):  # one more than a page
        session = await (await local_api.initiate(filename=f"note-{number}.txt", size=0)).json()
        assert (await local_api.complete(session["session_id"])).status == 201
    page, problems = await open_page(
        browser, f"{local_api.client.make_url('/')}#token={token_of(local_api)}"
    )
    names = page.locator(".media-name")
    await page.get_by_role("button", name="Show more").click()
    await page.get_by_role("button", name="Show more").wait_for(state="hidden")
    assert await names.all_inner_texts() == [f"note-{number}.txt" for number in range(50, -1, -1)]

    # A file dropped on the zone is uploaded at once and heads the refreshed list.
    await page.locator("#drop-zone").evaluate(
        """zone => {
            const files = new DataTransfer();
            files.items.add(new File(["dropped"], "dropped.txt", { type: "text/plain" }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: files, bubbles: true }));
        }"""
    )
    await page.locator(".upload-item.done", has_text="dropped.txt").wait_for()
    await page.locator(".media-name").first.filter(has_text="dropped.txt").wait_for()
    assert await names.count() == 50  # the first page again, from the newest

    # Deleted elsewhere meanwhile: the server's problem detail is shown in words.
    listing = await (await local_api.client.get("/api/v1/media", headers=local_api.headers)).json()
    dropped = listing["items"][0]
    assert (await local_api.delete(dropped["media_id"])).status == 204
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete dropped.txt").click()
    await page.get_by_text(
        f"Could not delete dropped.txt: no media {dropped['media_id']}"
    ).wait_for()
    assert [problem for problem in problems if "404" not in problem] == []


@browser_tests
async def test_a_link_for_another_user_asks_before_switching(local_api, browser, tmp_path):
    base = str(local_api.client.make_url("/"))
    alice, bob = token_of(local_api), token_of(local_api.as_user("bob"))
    context = await browser.new_context()  # two tabs sharing localStorage
    page, problems = await open_page(context, f"{base}#token={alice}")
    await page.get_by_text("Signed in as alice", exact=True).wait_for()

    # bob's link opened in the same tab (only the fragment changes): asked, kept.
    await page.goto(f"{base}#token={bob}")
    dialog = page.get_by_role("dialog", name="Switch account?")
    await dialog.wait_for()
    assert page.url == base
    text = await dialog.inner_text()
    assert "You are signed in as alice. The link you opened signs in as bob" in text
    await page.screenshot(path=tmp_path / "switch.png")
    await dialog.get_by_role("button", name="Stay signed in as alice").click()
    await page.get_by_text(
        "The link for bob was not used: you are still signed in as alice."
    ).wait_for()
    await page.get_by_text("Signed in as alice", exact=True).wait_for()
    assert await page.evaluate("localStorage.getItem('mediagate.token')") == alice

    # In a new tab (a whole page load): Escape keeps alice too; the next upload is hers.
    tab, more_problems = await open_page(context, f"{base}#token={bob}")
    await tab.get_by_role("dialog", name="Switch account?").wait_for()
    await tab.keyboard.press("Escape")
    await tab.get_by_text("Signed in as alice", exact=True).wait_for()
    await tab.locator("#drop-zone").evaluate(
        """zone => {
            const files = new DataTransfer();
            files.items.add(new File(["hers"], "hers.txt", { type: "text/plain" }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: files, bubbles: true }));
        }"""
    )
    await tab.locator(".upload-item.done", has_text="hers.txt").wait_for()
    listing = await local_api.client.get("/api/v1/media", headers=local_api.headers)
    assert [item["filename"] for item in (await listing.json())["items"]] == ["hers.txt"]

    # Agreeing switches.
    await tab.goto(f"{base}#token={bob}")
    await tab.get_by_role("button", name="Switch to bob").click()
    await tab.get_by_text("Signed in as bob", exact=True).wait_for()
    assert await tab.evaluate("localStorage.getItem('mediagate.token')") == bob
    assert problems == more_problems == []


@browser_tests
async def test_a_refused_identity_provider_token_is_explained_on_the_page(
    start_api, aiohttp_server, tmp_path, browser
):
    key = Key.ec("ec-1")
    identity = await IdentityServer.start(aiohttp_server, [key])
    settings = make_settings(tmp_path / "data", jwt_jwks_url=identity.url, jwt_audience=AUDIENCE)
    api = await start_api(settings)
    page, _ = await open_page(browser, str(api.client.make_url("/")))
    await page.get_by_label("Access token").fill(key.sign(aud="another-app"))
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_text(
        "Could not sign in: the token is meant for 'another-app', not 'mediagate'. "
        "Use a token made for this server."
    ).wait_for()

    await page.get_by_label("Access token").fill(key.sign(sub="dana"))
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_text("Signed in as dana", exact=True).wait_for()


@browser_tests
async def test_a_refused_token_is_explained_on_the_page(local_api, browser):
    base = str(local_api.client.make_url("/"))
    page, _ = await open_page(browser, base)
    foreign = tokens.issue(b"another-server-s-secret-long-enough", "alice", 60)
    await page.get_by_label("Access token").fill(foreign)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_text(
        "Could not sign in: the token is signed for another server (not with this server's "
        "secret). Ask for a token made by this server."
    ).wait_for()


@browser_tests
async def test_the_list_shows_posters_duration_and_size_and_the_player_its_poster(
    start_api, s3_settings, browser, clip
):
    api = await start_api(s3_settings.model_copy(update={"probe": True}))
    data = clip.read_bytes()
    started = await (await api.initiate(filename="clip.mp4", size=len(data))).json()
    assert (await api.put_chunk(started["session_id"], 0, data)).status == 200
    assert (await api.complete(started["session_id"])).status == 201

    page, problems = await open_page(browser, str(api.client.make_url("/")))
    await page.get_by_label("Access token").fill(token_of(api))
    await page.get_by_role("button", name="Sign in").click()
    listed = page.locator(".media-open", has_text="clip.mp4")
    await listed.wait_for()
    assert "0:05 · 320×240" in await listed.inner_text()
    # The poster's signed link redirects to S3 (moto), which the page's img-src allows.
    poster = listed.locator("img.media-poster")
    await page.wait_for_function(
        "() => document.querySelector('img.media-poster')?.naturalWidth === 320"
    )
    assert await poster.get_attribute("alt") == ""
    await listed.click()
    await page.wait_for_function("() => document.getElementById('video').poster !== ''")
    assert "/api/v1/media/poster/" in await page.evaluate("document.getElementById('video').poster")
    assert problems == []
