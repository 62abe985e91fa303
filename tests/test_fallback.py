"""S3 failing at start, at initiate and mid-session: acknowledged chunks are never lost."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import random
import sqlite3
from datetime import timedelta

import psycopg
import pytest
from yarl import URL

from mediagate import metrics
from mediagate.catalog.base import CATALOG_FILE
from mediagate.core.engine import utc_now
from mediagate.storage.local import STAGING_DIR
from mediagate.web.app import create_app
from mediagate.web.keys import SERVICES
from support.api import CATALOGS, Api, MiB, chunks_of, database_url_for, read_object

# A floor no disk reaches: MEDIAGATE_MIN_FREE_DISK as if the disk had filled up.
FLOOR_ABOVE_ANY_DISK = 2**60

pytestmark = pytest.mark.store


@pytest.fixture(params=CATALOGS)
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Every test here runs on the SQLite catalog and on the PostgreSQL one."""
    return database_url_for(request)


async def eventually(check, seconds: float = 20.0):
    async with asyncio.timeout(seconds):
        while not (result := await check()):
            await asyncio.sleep(0.1)
        return result


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def test_s3_unreachable_at_start_serves_from_local_disk(start_api, proxy, proxied_settings):
    await proxy.cut()
    api = await start_api(proxied_settings)
    created = await api.initiate(filename="a.mp4", size=5)
    assert created.status == 201
    session = await created.json()
    assert session["storage"] == "local"
    assert (await api.put_chunk(session["session_id"], 0, b"hello")).status == 200
    done = await api.complete(session["session_id"])
    assert done.status == 201
    media = await done.json()
    assert media["info"]["storage"] == "local"
    stream = await api.client.get(f"/api/v1/media/stream/{media['media_id']}", headers=api.headers)
    assert await stream.read() == b"hello"


async def test_s3_down_at_initiate_falls_back_to_local(start_api, proxy, proxied_settings):
    api = await start_api(proxied_settings)
    assert (await (await api.initiate(size=1)).json())["storage"] == "s3"
    await proxy.cut()
    assert (await (await api.initiate(size=1)).json())["storage"] == "local"


async def test_s3_cut_mid_session_spills_then_finishes_the_move(
    start_api, proxy, proxied_settings, s3_objects, bucket
):
    api = await start_api(proxied_settings)
    spilled_before = sample("mediagate_chunks_spilled_total")
    finalizing_before = sample("mediagate_fallbacks_total", reason="finalizing")
    completed_before = sample("mediagate_uploads_completed_total", storage="s3")
    data = payload(3 * 5 * MiB + 100, seed=3)
    pieces = chunks_of(data, 5 * MiB)
    session = await (await api.initiate(size=len(data), chunk_size=5 * MiB)).json()
    sid = session["session_id"]
    assert (await api.put_chunk(sid, 0, pieces[0])).status == 200

    await proxy.cut()
    for n in (1, 3):
        answer = await api.put_chunk(sid, n, pieces[n])
        assert answer.status == 200, await answer.text()
    await proxy.restore()
    await asyncio.sleep(0.3)  # past the breaker's back-off: chunk 2 is its probe, to S3
    assert (await api.put_chunk(sid, 2, pieces[2])).status == 200
    await proxy.cut()

    done = await api.complete(sid)
    assert done.status == 202
    body = await done.json()
    assert body["state"] == "finalizing"
    media_id = body["media_id"]
    info = await (await api.info(media_id)).json()
    assert info["state"] == "finalizing"
    stream = await api.client.get(f"/api/v1/media/stream/{media_id}", headers=api.headers)
    assert stream.status == 503 and "Retry-After" in stream.headers
    assert sample("mediagate_chunks_spilled_total") == spilled_before + 2
    assert sample("mediagate_fallbacks_total", reason="finalizing") == finalizing_before + 1

    await proxy.restore()
    engine = api.client.app[SERVICES].engine

    async def finished():
        await engine.finish_finalizing()
        info = await (await api.info(media_id)).json()
        return info if info["state"] == "ready" else None

    info = await eventually(finished)
    assert info["storage"] == "s3" and info["size"] == len(data)
    key = f"media/alice/{media_id}/video.mp4"
    assert await read_object(s3_objects, bucket, key) == data
    staging = proxied_settings.data_dir / ".staging"
    assert list(staging.iterdir()) == []  # spilled chunks cleaned up
    assert sample("mediagate_uploads_completed_total", storage="s3") == completed_before + 1


async def test_every_chunk_spilled_completes_as_local_media(start_api, proxy, proxied_settings):
    api = await start_api(proxied_settings)
    data = payload(5 * MiB + 7, seed=4)
    session = await (await api.initiate(size=len(data), chunk_size=5 * MiB)).json()
    await proxy.cut()
    for n, piece in enumerate(chunks_of(data, 5 * MiB)):
        assert (await api.put_chunk(session["session_id"], n, piece)).status == 200
    done = await api.complete(session["session_id"])
    assert done.status == 201
    media = await done.json()
    assert media["info"]["storage"] == "local"
    stream = await api.client.get(f"/api/v1/media/stream/{media['media_id']}", headers=api.headers)
    assert await stream.read() == data


async def test_s3_failing_mid_chunk_is_503_and_the_retry_spills(start_api, proxy, proxied_settings):
    api = await start_api(proxied_settings)
    data = payload(2 * 5 * MiB, seed=5)
    pieces = chunks_of(data, 5 * MiB)
    session = await (await api.initiate(size=len(data), chunk_size=5 * MiB)).json()
    sid = session["session_id"]
    proxy.cut_after(1 * MiB)
    failed = await api.put_chunk(sid, 0, pieces[0])
    assert failed.status == 503
    assert failed.headers["Retry-After"]
    assert (await (await api.status(sid)).json())["received"] == []

    retried = await api.put_chunk(sid, 0, pieces[0])
    assert retried.status == 200
    assert (await api.put_chunk(sid, 1, pieces[1])).status == 200
    done = await api.complete(sid)
    assert done.status == 201  # every chunk spilled: a local media
    stream = await api.client.get(
        f"/api/v1/media/stream/{(await done.json())['media_id']}", headers=api.headers
    )
    assert await stream.read() == data


async def test_finalizing_survives_a_restart(
    start_api, proxy, proxied_settings, s3_objects, bucket
):
    first_life = await start_api(proxied_settings)
    data = payload(2 * 5 * MiB + 1, seed=6)
    pieces = chunks_of(data, 5 * MiB)
    session = await (await first_life.initiate(size=len(data), chunk_size=5 * MiB)).json()
    sid = session["session_id"]
    assert (await first_life.put_chunk(sid, 0, pieces[0])).status == 200
    await proxy.cut()
    for n in (1, 2):
        assert (await first_life.put_chunk(sid, n, pieces[n])).status == 200
    assert (await first_life.complete(sid)).status == 202
    await first_life.client.close()

    await proxy.restore()
    second_life = await start_api(proxied_settings)
    status = await (await second_life.status(sid)).json()
    assert status["state"] == "finalizing"
    engine = second_life.client.app[SERVICES].engine

    async def completed() -> bool:
        await engine.finish_finalizing()  # the server's own background round may win
        return (await (await second_life.status(sid)).json())["state"] == "completed"

    await eventually(completed)
    listed = await (
        await second_life.client.get("/api/v1/media", headers=second_life.headers)
    ).json()
    (media,) = listed["items"]
    assert media["storage"] == "s3" and media["state"] == "ready"
    key = f"media/alice/{media['media_id']}/video.mp4"
    assert await read_object(s3_objects, bucket, key) == data


async def test_expired_sessions_are_swept_and_answer_410(
    aiohttp_client, s3_settings, s3_objects, bucket
):
    now = [utc_now()]
    client = await aiohttp_client(create_app(s3_settings, clock=lambda: now[0]))
    api = Api(client, s3_settings)
    session = await (await api.initiate(size=5 * MiB + 1, chunk_size=5 * MiB)).json()
    sid = session["session_id"]
    assert (await api.put_chunk(sid, 0, b"\0" * 5 * MiB)).status == 200

    now[0] += timedelta(seconds=s3_settings.session_ttl + 1)
    late = await api.put_chunk(sid, 1, b"\0")
    assert late.status == 410
    assert await client.app[SERVICES].engine.expire_sessions() == 1
    assert (await api.complete(sid)).status == 410
    assert (await (await api.status(sid)).json())["state"] == "expired"
    uploads = await s3_objects.list_multipart_uploads(Bucket=bucket)
    assert uploads.get("Uploads", []) == []  # the parts no longer cost anything


async def test_disk_full_is_507_and_leaves_the_session_usable(local_api, monkeypatch):
    from mediagate.storage import local

    session = await (await local_api.initiate(size=6)).json()
    sid = session["session_id"]

    def full_disk(fd, data, position):
        raise OSError(errno.ENOSPC, "No space left on device")

    real_write = local._write_at
    monkeypatch.setattr(local, "_write_at", full_disk)
    answer = await local_api.put_chunk(sid, 0, b"abcdef")
    assert answer.status == 507
    assert (await answer.json())["type"].endswith("/storage-full")
    assert (await (await local_api.status(sid)).json())["received"] == []

    monkeypatch.setattr(local, "_write_at", real_write)
    assert (await local_api.put_chunk(sid, 0, b"abcdef")).status == 200
    media = await (await local_api.complete(sid)).json()
    stream = await local_api.client.get(
        f"/api/v1/media/stream/{media['media_id']}", headers=local_api.headers
    )
    assert await stream.read() == b"abcdef"


async def test_auto_migrate_moves_fallback_media_to_s3_once_it_is_back(
    start_api, proxy, proxied_settings, s3_objects, bucket
):
    await proxy.cut()
    settings = proxied_settings.model_copy(update={"auto_migrate": True})
    api = await start_api(settings)
    data = payload(5 * MiB + 3, seed=9)
    session = await (await api.initiate(size=len(data), chunk_size=5 * MiB)).json()
    for n, piece in enumerate(chunks_of(data, 5 * MiB)):
        assert (await api.put_chunk(session["session_id"], n, piece)).status == 200
    media = await (await api.complete(session["session_id"])).json()
    assert media["info"]["storage"] == "local"
    reconciler = api.client.app[SERVICES].reconciler
    assert (await reconciler.run_once()).migrated == 0  # S3 still away: nothing tried

    await proxy.restore()

    async def moved():
        await reconciler.run_once()
        info = await (await api.info(media["media_id"])).json()
        return info["storage"] == "s3"

    await eventually(moved)
    key = f"media/alice/{media['media_id']}/video.mp4"
    assert await read_object(s3_objects, bucket, key) == data
    assert list(settings.data_dir.rglob("video.mp4")) == []  # the local copy is gone
    stream = await api.client.get(URL(media["stream_url"]).path_qs, allow_redirects=False)
    assert stream.status == 302


async def test_the_reconcilers_s3_failures_open_the_breaker_for_everyone(
    start_api, proxy, proxied_settings
):
    await proxy.cut()
    api = await start_api(proxied_settings.model_copy(update={"auto_migrate": True}))
    session = await (await api.initiate(size=3)).json()
    assert (await api.put_chunk(session["session_id"], 0, b"abc")).status == 200
    assert (await api.complete(session["session_id"])).status == 201  # a local media
    await proxy.restore()

    async def s3_back():
        await asyncio.sleep(0.3)  # past the back-off: the next initiate is the probe
        return (await (await api.as_user("bob").initiate(size=1)).json())["storage"] == "s3"

    await eventually(s3_back)
    await proxy.cut()
    summary = await api.client.app[SERVICES].reconciler.run_once()
    assert summary.failed == 1
    ready = await (await api.client.get("/readyz")).json()
    assert ready["s3"] == "unavailable"  # uploads go to local disk at once, no one waits on S3


async def finalizing_with_a_spilled_chunk(api: Api, proxy, data: bytes, **initiate) -> dict:
    """Chunks 0 and 2 to S3, chunk 1 spilled while S3 is cut, then complete: 202."""
    pieces = chunks_of(data, 5 * MiB)
    session = await (await api.initiate(size=len(data), chunk_size=5 * MiB, **initiate)).json()
    sid = session["session_id"]
    for n in (2, 0):  # out of order: the file's SHA-256 can only be checked on read-back
        assert (await api.put_chunk(sid, n, pieces[n])).status == 200
    await proxy.cut()
    assert (await api.put_chunk(sid, 1, pieces[1])).status == 200
    done = await api.complete(sid)
    assert done.status == 202
    return {**await done.json(), "session_id": sid}


async def test_finalizing_sessions_count_against_the_per_user_cap(
    start_api, proxy, proxied_settings
):
    """A session waiting for S3 still holds an upload (and spilled bytes on the disk)."""
    api = await start_api(proxied_settings.model_copy(update={"max_open_sessions_per_user": 1}))
    done = await finalizing_with_a_spilled_chunk(api, proxy, payload(2 * 5 * MiB + 10, seed=14))
    refused = await api.initiate(size=1)
    assert refused.status == 429
    assert (await refused.json())["type"].endswith("/too-many-sessions")

    await proxy.restore()
    engine = api.client.app[SERVICES].engine

    async def finished():
        await engine.finish_finalizing()
        return (await (await api.info(done["media_id"])).json())["state"] == "ready"

    await eventually(finished)
    assert (await api.initiate(size=1)).status == 201


async def test_a_finalizing_media_can_be_deleted_while_s3_is_away(
    start_api, proxy, proxied_settings, s3_objects, bucket
):
    api = await start_api(proxied_settings)
    done = await finalizing_with_a_spilled_chunk(api, proxy, payload(2 * 5 * MiB + 10, seed=15))
    staging = proxied_settings.data_dir / ".staging"
    assert [path for path in staging.iterdir() if path.is_file()]

    assert (await api.delete(done["media_id"])).status == 204
    assert (await api.info(done["media_id"])).status == 404
    assert (await api.status(done["session_id"])).status == 404
    assert not [path for path in staging.iterdir() if path.is_file()]  # the spilled chunk

    await proxy.restore()
    await api.client.app[SERVICES].engine.finish_finalizing()
    assert (await api.info(done["media_id"])).status == 404  # nothing finished it meanwhile
    listed = await s3_objects.list_objects_v2(Bucket=bucket, Prefix="media/alice/")
    assert listed.get("KeyCount", 0) == 0
    media = await (await api.client.get("/api/v1/media", headers=api.headers)).json()
    assert media["items"] == []


async def test_a_delete_racing_the_finalizer_leaves_neither_media_nor_object(
    start_api, proxy, proxied_settings, s3_objects, bucket
):
    api = await start_api(proxied_settings)
    done = await finalizing_with_a_spilled_chunk(api, proxy, payload(2 * 5 * MiB + 10, seed=16))
    await proxy.restore()
    await asyncio.sleep(0.3)  # past the breaker's back-off: the finalizer can reach S3

    _, deleted = await asyncio.gather(
        api.client.app[SERVICES].engine.finish_finalizing(), api.delete(done["media_id"])
    )
    assert deleted.status == 204, await deleted.text()
    assert (await api.info(done["media_id"])).status == 404
    await api.client.app[SERVICES].engine.finish_finalizing()
    listed = await s3_objects.list_objects_v2(Bucket=bucket, Prefix="media/alice/")
    assert listed.get("KeyCount", 0) == 0
    assert (await s3_objects.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []
    staging = proxied_settings.data_dir / ".staging"
    assert not [path for path in staging.iterdir() if path.is_file()]


async def test_a_wrong_sha256_found_by_the_finalizer_is_reported_on_session_and_media(
    aiohttp_client, proxy, proxied_settings, s3_objects, bucket
):
    now = [utc_now()]
    api = Api(
        await aiohttp_client(create_app(proxied_settings, clock=lambda: now[0])), proxied_settings
    )
    data = payload(2 * 5 * MiB + 10, seed=10)
    wrong = hashlib.sha256(b"not the file").hexdigest()
    done = await finalizing_with_a_spilled_chunk(api, proxy, data, sha256=wrong)
    sid, media_id = done["session_id"], done["media_id"]

    await proxy.restore()
    engine = api.client.app[SERVICES].engine

    async def reopened():
        await engine.finish_finalizing()
        status = await (await api.status(sid)).json()
        return status if status["state"] == "open" else None

    status = await eventually(reopened)
    assert status["received"] == []
    assert wrong in status["last_error"] and "sent again" in status["last_error"]
    info = await (await api.info(media_id)).json()
    assert info["state"] == "failed"
    assert info["error"] == status["last_error"]
    stream = await api.client.get(f"/api/v1/media/stream/{media_id}", headers=api.headers)
    assert stream.status == 409
    assert (await stream.json())["type"].endswith("/media-failed")
    listed = await s3_objects.list_objects_v2(Bucket=bucket, Prefix=f"media/alice/{media_id}/")
    assert listed.get("KeyCount", 0) == 0  # the wrong file was not kept

    now[0] += timedelta(seconds=proxied_settings.session_ttl + 1)
    assert await engine.expire_sessions() == 1
    assert (await api.info(media_id)).status == 404  # never to be made: its record goes too


async def test_a_finalizing_upload_whose_spilled_chunk_is_gone_fails_with_the_reason(
    start_api, proxy, proxied_settings, s3_objects, bucket
):
    """Retrying cannot bring a lost file back: the session is open again and says why."""
    api = await start_api(proxied_settings)
    done = await finalizing_with_a_spilled_chunk(api, proxy, payload(2 * 5 * MiB + 10, seed=11))
    for staged in (proxied_settings.data_dir / ".staging").iterdir():
        staged.unlink()  # the spilled chunk lost (an operator's clean-up, a disk swap)

    await proxy.restore()
    status = await given_up(api, done["session_id"])
    assert status["received"] == []
    assert "not-found" in status["last_error"] and "sent again" in status["last_error"]
    info = await (await api.info(done["media_id"])).json()
    assert info["state"] == "failed" and info["error"] == status["last_error"]
    assert (await api.client.get("/readyz")).status == 200  # not counted against S3
    uploads = await s3_objects.list_multipart_uploads(Bucket=bucket)
    assert len(uploads.get("Uploads", [])) == 1  # the old one aborted, a fresh one to fill

    pieces = chunks_of(payload(2 * 5 * MiB + 10, seed=11), 5 * MiB)
    for number, piece in enumerate(pieces):
        assert (await api.put_chunk(done["session_id"], number, piece)).status == 200
    again = await api.complete(done["session_id"])
    assert again.status == 201 and (await again.json())["media_id"] == done["media_id"]
    assert (await (await api.info(done["media_id"])).json())["state"] == "ready"


async def given_up(api: Api, session_id: str) -> dict:
    """The session's status once the finalizer gave it up (it retries nothing twice)."""
    engine = api.client.app[SERVICES].engine

    async def reopened():
        await engine.finish_finalizing()
        status = await (await api.status(session_id)).json()
        return status if status["state"] == "open" else None

    status = await eventually(reopened)
    await engine.finish_finalizing()
    assert (await (await api.status(session_id)).json())["state"] == "open"
    return status


async def test_the_finalizer_never_publishes_a_file_with_a_chunk_missing(
    start_api, proxy, proxied_settings, s3_objects, bucket
):
    """A chunk row gone from a finalizing session (another server dropped it to
    replace the chunk) must not become a shorter file: S3 completes a multipart
    upload whose part numbers skip one without complaint."""
    api = await start_api(proxied_settings)
    done = await finalizing_with_a_spilled_chunk(api, proxy, payload(2 * 5 * MiB + 10, seed=12))
    forget_chunk_behind_the_catalogs_back(proxied_settings, done["session_id"], 2)

    await proxy.restore()
    status = await given_up(api, done["session_id"])
    assert "missing-chunks" in status["last_error"]
    listed = await s3_objects.list_objects_v2(Bucket=bucket, Prefix="media/alice/")
    assert listed.get("KeyCount", 0) == 0
    info = await (await api.info(done["media_id"])).json()
    assert info["state"] == "failed"
    assert (await api.delete(done["media_id"])).status == 204  # a failed media can go
    assert (await api.info(done["media_id"])).status == 404
    assert (await (await api.status(done["session_id"])).json())["state"] == "open"


def forget_chunk_behind_the_catalogs_back(settings, session_id: str, number: int) -> None:
    """Delete a chunk row as another server's stray write could, bypassing the catalog's rules."""
    if settings.database_url is None:
        with sqlite3.connect(settings.data_dir / CATALOG_FILE) as db:
            db.execute(
                "DELETE FROM chunks WHERE number = ? AND session_id = ?", (number, session_id)
            )
        return
    with psycopg.connect(settings.database_url.get_secret_value()) as db:
        db.execute("DELETE FROM chunks WHERE number = %s AND session_id = %s", (number, session_id))


def staged_files(settings) -> list[str]:
    staging = settings.data_dir / STAGING_DIR
    return [path.name for path in staging.iterdir() if path.is_file()]


async def test_with_the_fallback_off_an_s3_outage_is_a_503_and_no_byte_goes_to_disk(
    start_api, proxy, proxied_settings
):
    settings = proxied_settings.model_copy(update={"fallback": False})
    api = await start_api(settings)
    session = await (await api.initiate(size=6)).json()
    assert session["storage"] == "s3"
    sid = session["session_id"]

    await proxy.cut()
    for _ in range(2):  # the retry finds the breaker open: still S3's 503, no spill
        answer = await api.put_chunk(sid, 0, b"abcdef")
        assert answer.status == 503 and "Retry-After" in answer.headers
        assert (await answer.json())["type"].endswith("/storage-unavailable")
    refused = await api.initiate(size=6)
    assert refused.status == 503 and "Retry-After" in refused.headers
    assert (await refused.json())["type"].endswith("/storage-unavailable")
    assert staged_files(settings) == []
    assert (await (await api.status(sid)).json())["received"] == []

    await proxy.restore()

    async def chunk_taken() -> bool:
        return (await api.put_chunk(sid, 0, b"abcdef")).status == 200

    await eventually(chunk_taken)
    done = await api.complete(sid)
    assert done.status == 201
    assert (await done.json())["info"]["storage"] == "s3"


async def test_a_spill_that_would_go_below_the_disk_floor_is_a_503_to_retry(
    start_api, proxy, proxied_settings
):
    settings = proxied_settings.model_copy(update={"min_free_disk": FLOOR_ABOVE_ANY_DISK})
    api = await start_api(settings)
    session = await (await api.initiate(size=6)).json()
    assert session["storage"] == "s3"  # an S3 session needs no room on disk
    await proxy.cut()
    answer = await api.put_chunk(session["session_id"], 0, b"abcdef")
    assert answer.status == 503 and "Retry-After" in answer.headers  # S3 may take it later
    assert staged_files(settings) == []
    refused = await api.initiate(size=6)  # nor can a session start on local disk
    assert refused.status == 503 and "Retry-After" in refused.headers


async def test_local_writes_stop_at_the_disk_floor_with_a_507(local_api):
    session = await (await local_api.initiate(size=6)).json()
    sid = session["session_id"]
    disk = local_api.client.app[SERVICES].data_disk
    assert disk is not None
    floor = disk.min_free
    disk.min_free = FLOOR_ABOVE_ANY_DISK  # the disk filled up meanwhile

    answer = await local_api.put_chunk(sid, 0, b"abcdef")
    assert answer.status == 507 and "Retry-After" not in answer.headers
    assert (await answer.json())["type"].endswith("/storage-full")
    assert (await (await local_api.status(sid)).json())["received"] == []
    refused = await local_api.initiate(size=6)
    assert refused.status == 507
    assert (await refused.json())["type"].endswith("/storage-full")

    disk.min_free = floor  # room again: the same session goes on
    assert (await local_api.put_chunk(sid, 0, b"abcdef")).status == 200
    assert (await local_api.complete(sid)).status == 201
