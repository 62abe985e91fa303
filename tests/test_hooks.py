"""Hooks that decide (core/hooks.py): a real application on loopback, verifying each call's
signature, answers the pre-create hook of real `mediagate serve` processes; its decision
reaches the native API, tuspy and `mediagate upload`."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import sys
from pathlib import Path

import aiohttp
import psycopg
import pytest

from mediagate import tokens
from mediagate.catalog.base import CATALOG_FILE
from mediagate.core.hooks import Allowed, decide
from mediagate.errors import HookUnavailable, UploadRefused
from support.receiver import Receiver
from support.server_process import ServerProcess, free_port
from support.tier import tier_s3_env

SECRET = "hooks-test-secret-long-enough-for-hs256"
WHSEC = "whsec_" + base64.b64encode(b"h" * 32).decode()
TOKEN = tokens.issue(SECRET.encode(), "alice", 3600)
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def app():
    hook = Receiver(WHSEC)
    await hook.start()
    yield hook
    await hook.stop()


@pytest.fixture
async def server(tmp_path, app):
    process = ServerProcess(tmp_path / "data", server_env(app.pre_create_url))
    await process.start()
    yield process
    await process.stop()


def server_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "MEDIAGATE_JWT_SECRET": SECRET,
        "MEDIAGATE_WEBHOOK_SECRET": WHSEC,
        "MEDIAGATE_HOOK_PRE_CREATE_URL": url,
        **extra,
    }


async def initiate(base: str, name: str = "clip.mp4", size: int = 12) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession(base, headers=HEADERS) as client:
        answer = await client.post(
            "/api/v1/media/upload/initiate",
            json={"filename": name, "size": size, "content_type": "video/mp4"},
        )
        await answer.read()
        return answer


def catalog_rows(tmp_path: Path, table: str, database: str | None = None) -> int:
    """Rows of a catalog table: the SQLite catalog's, or the PostgreSQL `database`'s."""
    if database is not None:
        with psycopg.connect(database) as db:
            row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert row is not None
            return int(row[0])
    with sqlite3.connect(tmp_path / "data" / CATALOG_FILE) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def test_pre_create_is_asked_signed_with_the_upload_and_the_caller(server, app):
    answer = await initiate(server.base)
    assert answer.status == 201, await answer.text()
    [asked] = app.asked
    assert asked["type"] == "upload.pre_create"
    assert asked["data"] == {
        "user_id": "alice",
        "filename": "clip.mp4",
        "size": 12,
        "content_type": "video/mp4",
        "metadata": {},
        "caller": "127.0.0.1",
        "protocol": "native",
    }


async def test_an_allow_may_rename_the_file_and_cap_its_size(server, app):
    app.decision = {"allow": True, "filename": "renamed.mp4", "max_size": 100}
    answer = await initiate(server.base)
    assert answer.status == 201
    session_id = (await answer.json())["session_id"]
    async with aiohttp.ClientSession(server.base, headers=HEADERS) as client:
        upload = f"/api/v1/media/upload/{session_id}"
        async with client.post(f"{upload}/chunk/0", data=b"hello hooks!") as chunk:
            assert chunk.status == 200, await chunk.text()
        async with client.post(f"{upload}/complete") as complete:
            assert complete.status == 201, await complete.text()
            assert (await complete.json())["info"]["filename"] == "renamed.mp4"
    answer = await initiate(server.base, size=101)
    assert answer.status == 413
    problem = await answer.json()
    assert problem["type"].endswith("/file-too-large")
    assert "at most 100 bytes" in problem["detail"]


async def test_a_refusal_reaches_the_native_client_as_the_apps_status_and_message(
    server, app, tmp_path
):
    app.decision = {"allow": False, "status": 451, "message": "your plan has no room left"}
    answer = await initiate(server.base)
    assert answer.status == 451
    assert answer.content_type == "application/problem+json"
    problem = await answer.json()
    assert problem["type"] == "https://mediagate.dev/problems/upload-refused"
    assert problem["detail"] == "your plan has no room left"
    assert catalog_rows(tmp_path, "sessions") == catalog_rows(tmp_path, "media") == 0


async def test_the_servers_own_refusals_come_first_and_do_not_ask_the_app(tmp_path, app):
    env = server_env(app.pre_create_url, MEDIAGATE_MAX_OPEN_SESSIONS_PER_USER="1")
    process = ServerProcess(tmp_path / "data", env)
    await process.start()
    try:
        assert (await initiate(process.base)).status == 201
        assert (await initiate(process.base)).status == 429
        assert (await initiate(process.base, size=2**60)).status == 413
    finally:
        await process.stop()
    assert len(app.asked) == 1


async def test_a_status_outside_4xx_is_clamped_to_403(server, app):
    app.decision = {"allow": False, "status": 200, "message": "no"}
    answer = await initiate(server.base)
    assert answer.status == 403


async def test_tuspy_gets_the_apps_message(server, app, tmp_path):
    from tusclient.client import TusClient
    from tusclient.exceptions import TusCommunicationError

    app.decision = {"allow": False, "status": 403, "message": "videos only, please"}
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not a video")
    client = TusClient(f"{server.base}/api/v1/tus", headers=HEADERS)
    uploader = client.uploader(str(path), metadata={"filename": "notes.txt", "project": "p1"})
    with pytest.raises(TusCommunicationError) as refused:
        await asyncio.to_thread(uploader.upload)
    assert refused.value.status_code == 403
    assert "videos only, please" in str(refused.value.response_content)
    [asked] = app.asked
    assert asked["data"]["protocol"] == "tus"
    assert asked["data"]["metadata"] == {"filename": "notes.txt", "project": "p1"}


async def mediagate_upload(base: str, tmp_path: Path) -> tuple[int, str]:
    """`mediagate upload` of a new file as a real process: its exit code and stderr."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(os.urandom(1000))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mediagate",
        "upload",
        str(path),
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "MEDIAGATE_URL": base,
            "MEDIAGATE_TOKEN": TOKEN,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_mediagate_upload_prints_the_apps_message(server, app, tmp_path):
    app.decision = {"allow": False, "status": 403, "message": "quota exceeded: 0 bytes left"}
    code, err = await mediagate_upload(server.base, tmp_path)
    assert code != 0
    assert "quota exceeded: 0 bytes left" in err
    assert "Traceback" not in err


async def test_mediagate_upload_prints_the_apps_pre_finish_message(tmp_path, app):
    env = server_env(app.pre_create_url, MEDIAGATE_HOOK_PRE_FINISH_URL=app.pre_finish_url)
    app.finish_decision = {"allow": False, "status": 403, "message": "duplicate of clip 7"}
    process = ServerProcess(tmp_path / "data", env)
    await process.start()
    try:
        code, err = await mediagate_upload(process.base, tmp_path)
    finally:
        await process.stop()
    assert code != 0
    assert "duplicate of clip 7" in err
    assert "Traceback" not in err


async def test_an_app_down_refuses_with_503_and_retry_after(tmp_path):
    process = ServerProcess(tmp_path / "data", server_env(f"http://127.0.0.1:{free_port()}/x"))
    await process.start()
    try:
        answer = await initiate(process.base)
    finally:
        await process.stop()
    assert answer.status == 503
    assert answer.headers["Retry-After"]
    assert (await answer.json())["type"].endswith("/hook-unavailable")


async def test_an_app_down_with_failure_allow_goes_on(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/x"
    process = ServerProcess(tmp_path / "data", server_env(url, MEDIAGATE_HOOK_FAILURE="allow"))
    await process.start()
    try:
        answer = await initiate(process.base)
    finally:
        await process.stop()
    assert answer.status == 201


async def test_an_app_slower_than_the_timeout_is_no_decision(tmp_path, app):
    app.delay = 30
    env = server_env(app.pre_create_url, MEDIAGATE_HOOK_TIMEOUT="1")
    process = ServerProcess(tmp_path / "data", env)
    await process.start()
    try:
        started = asyncio.get_running_loop().time()
        answer = await initiate(process.base)
        waited = asyncio.get_running_loop().time() - started
    finally:
        await process.stop()
    assert answer.status == 503
    assert waited < 20


@pytest.mark.parametrize(
    ("where", "catalog"), [("local", "sqlite"), ("s3", "sqlite"), ("s3", "postgres")]
)
async def test_a_pre_finish_refusal_deletes_the_bytes_and_reaches_complete(
    tmp_path, app, where, catalog, moto_endpoint, bucket, s3_objects, request
):
    env = server_env(app.pre_create_url, MEDIAGATE_HOOK_PRE_FINISH_URL=app.pre_finish_url)
    database = None
    if catalog == "postgres":
        database = request.getfixturevalue("postgres_server").new_database()
        env["MEDIAGATE_DATABASE_URL"] = database
    if where == "s3":
        env |= {
            "USE_CLOUD_STORAGE": "true",
            "AWS_S3_BUCKET_NAME": bucket,
            **tier_s3_env(moto_endpoint),
        }
    app.finish_decision = {"allow": False, "status": 422, "message": "not a video we can play"}
    process = ServerProcess(tmp_path / "data", env)
    await process.start()
    try:
        answer = await initiate(process.base)
        assert answer.status == 201, await answer.text()
        session = await answer.json()
        assert session["storage"] == where
        upload = f"/api/v1/media/upload/{session['session_id']}"
        async with aiohttp.ClientSession(process.base, headers=HEADERS) as client:
            async with client.post(f"{upload}/chunk/0", data=b"hello hooks!") as chunk:
                assert chunk.status == 200, await chunk.text()
            async with client.post(f"{upload}/complete") as complete:
                assert complete.status == 422
                problem = await complete.json()
            async with client.get(upload) as status:
                assert status.status == 404
    finally:
        await process.stop()
    assert problem["type"].endswith("/upload-refused")
    assert problem["detail"] == "not a video we can play"
    finished = next(m for m in app.asked if m["type"] == "upload.pre_finish")["data"]
    assert (finished["size"], finished["storage"], finished["filename"]) == (12, where, "clip.mp4")
    assert catalog_rows(tmp_path, "sessions", database) == 0
    assert catalog_rows(tmp_path, "media", database) == 0
    assert [p for p in (tmp_path / "data").rglob("*") if p.is_file() and "clip" in p.name] == []
    if where == "s3":
        listed = await s3_objects.list_objects_v2(Bucket=bucket)
        assert listed.get("KeyCount", 0) == 0
        assert not (await s3_objects.list_multipart_uploads(Bucket=bucket)).get("Uploads")


async def test_pre_finish_allowed_makes_the_media_ready(tmp_path, app):
    env = server_env(app.pre_create_url, MEDIAGATE_HOOK_PRE_FINISH_URL=app.pre_finish_url)
    process = ServerProcess(tmp_path / "data", env)
    await process.start()
    try:
        answer = await initiate(process.base)
        upload = f"/api/v1/media/upload/{(await answer.json())['session_id']}"
        async with aiohttp.ClientSession(process.base, headers=HEADERS) as client:
            async with client.post(f"{upload}/chunk/0", data=b"hello hooks!") as chunk:
                assert chunk.status == 200
            async with client.post(f"{upload}/complete") as complete:
                assert complete.status == 201, await complete.text()
                assert (await complete.json())["info"]["app_metadata"] is None
    finally:
        await process.stop()


async def test_pre_finish_without_a_decision_answers_503_then_the_finalizer_asks_again(
    tmp_path, app
):
    env = server_env(app.pre_create_url, MEDIAGATE_HOOK_PRE_FINISH_URL=app.pre_finish_url)
    app.finish_status = 500
    process = ServerProcess(tmp_path / "data", env)
    await process.start()
    try:
        answer = await initiate(process.base)
        upload = f"/api/v1/media/upload/{(await answer.json())['session_id']}"
        async with aiohttp.ClientSession(process.base, headers=HEADERS) as client:
            async with client.post(f"{upload}/chunk/0", data=b"hello hooks!") as chunk:
                assert chunk.status == 200
            async with client.post(f"{upload}/complete") as complete:
                assert complete.status == 503
                assert complete.headers["Retry-After"]
                assert (await complete.json())["type"].endswith("/hook-unavailable")
            app.finish_status = 200
            async with asyncio.timeout(60):
                while True:
                    async with client.post(f"{upload}/complete") as complete:
                        if complete.status == 201:
                            media = await complete.json()
                            break
                        assert complete.status == 202, await complete.text()
                    await asyncio.sleep(0.5)
            async with client.get(media["stream_url"]) as stream:
                assert await stream.read() == b"hello hooks!"
    finally:
        await process.stop()


@pytest.mark.parametrize("catalog", ["sqlite", "postgres"])
async def test_tuspy_gets_the_pre_finish_refusal_on_its_last_patch(tmp_path, app, catalog, request):
    from tusclient.client import TusClient
    from tusclient.exceptions import TusCommunicationError

    env = server_env(app.pre_create_url, MEDIAGATE_HOOK_PRE_FINISH_URL=app.pre_finish_url)
    database = None
    if catalog == "postgres":
        database = request.getfixturevalue("postgres_server").new_database()
        env["MEDIAGATE_DATABASE_URL"] = database
    app.finish_decision = {"allow": False, "status": 403, "message": "malware found"}
    process = ServerProcess(tmp_path / "data", env)
    await process.start()
    try:
        path = tmp_path / "clip.mp4"
        path.write_bytes(os.urandom(3000))
        client = TusClient(f"{process.base}/api/v1/tus", headers=HEADERS)
        uploader = client.uploader(str(path), metadata={"filename": "clip.mp4"}, chunk_size=1000)
        with pytest.raises(TusCommunicationError) as refused:
            await asyncio.to_thread(uploader.upload)
    finally:
        await process.stop()
    assert refused.value.status_code == 403
    assert "malware found" in str(refused.value.response_content)
    for table in ("sessions", "media", "tus_uploads"):
        assert catalog_rows(tmp_path, table, database) == 0, table
    assert [p for p in (tmp_path / "data").rglob("*") if p.is_file() and "clip" in p.name] == []


@pytest.mark.parametrize("catalog", ["sqlite", "postgres"])
async def test_app_metadata_of_an_allow_is_kept_and_in_every_event(tmp_path, app, catalog, request):
    env = server_env(app.pre_create_url, MEDIAGATE_WEBHOOK_URL=app.events_url)
    if catalog == "postgres":
        env["MEDIAGATE_DATABASE_URL"] = request.getfixturevalue("postgres_server").new_database()
    kept = {"project": 7, "tags": ["a", "b"]}
    app.decision = {"allow": True, "app_metadata": kept}
    process = ServerProcess(tmp_path / "data", env)
    await process.start()
    try:
        answer = await initiate(process.base)
        upload = f"/api/v1/media/upload/{(await answer.json())['session_id']}"
        async with aiohttp.ClientSession(process.base, headers=HEADERS) as client:
            async with client.post(f"{upload}/chunk/0", data=b"hello hooks!") as chunk:
                assert chunk.status == 200
            async with client.post(f"{upload}/complete") as complete:
                assert complete.status == 201, await complete.text()
                media_id = (await complete.json())["media_id"]
            async with client.get(f"/api/v1/media/info/{media_id}") as info:
                shown = (await info.json())["app_metadata"]
            async with client.get("/api/v1/media") as listed:
                [item] = (await listed.json())["items"]
        async with asyncio.timeout(30):
            while len(app.received) < 2:
                await asyncio.sleep(0.1)
    finally:
        await process.stop()
    assert [event["type"] for event in app.received] == ["upload.created", "media.ready"]
    assert [event["data"]["app_metadata"] for event in app.received] == [kept, kept]
    assert shown == item["app_metadata"] == kept


@pytest.mark.parametrize(
    ("status", "body", "failure", "outcome"),
    [
        (200, {"allow": True}, "refuse", Allowed()),
        (204, {"allow": True, "filename": "a.mp4", "max_size": 5}, "refuse", Allowed("a.mp4", 5)),
        (
            200,
            {"allow": True, "app_metadata": {"a": [1]}},
            "refuse",
            Allowed(None, None, '{"a":[1]}'),
        ),
        (200, {"allow": True, "filename": "", "max_size": -1}, "refuse", Allowed()),
        (200, {"allow": True, "max_size": True}, "refuse", Allowed()),
        (200, {"allow": False, "status": 402, "message": "pay"}, "allow", (402, "pay")),
        (200, {"allow": False, "status": 500, "message": "no"}, "refuse", (403, "no")),
        (200, {"allow": False, "status": "404"}, "refuse", (403, UploadRefused.title)),
        (200, {"allow": False}, "allow", (403, UploadRefused.title)),
        (200, {"allow": "yes"}, "refuse", HookUnavailable),
        (200, "not json", "refuse", HookUnavailable),
        (200, "not json", "allow", Allowed()),
        (403, {"allow": False, "status": 403}, "refuse", HookUnavailable),
        (500, {"allow": True}, "allow", Allowed()),
        (None, None, "refuse", HookUnavailable),
        (None, None, "allow", Allowed()),
    ],
)
def test_decide(status, body, failure, outcome):
    raw = b"{" if body == "not json" else json.dumps(body).encode()
    result = decide("pre-create", status, raw, failure, None if status else "refused")
    if isinstance(outcome, tuple):
        assert isinstance(result, UploadRefused)
        assert (result.status, result.detail) == outcome
    elif outcome is HookUnavailable:
        assert isinstance(result, HookUnavailable)
    else:
        assert result == outcome
