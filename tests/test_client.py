"""mediagate.client against a real server over loopback HTTP (moto S3 or local disk)."""

from __future__ import annotations

import asyncio
import io
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import ClientSession, web
from yarl import URL

from mediagate import tokens
from mediagate.client import (
    ConnectionFailed,
    MediagateClient,
    NotFound,
    ProblemError,
    ResumeStore,
    RetryPolicy,
    Unauthorized,
    UploadProgress,
)
from mediagate.client.resume import ResumeState
from mediagate.client.retry import is_retryable_status, parse_retry_after
from mediagate.client.upload import upload_path
from mediagate.web.app import create_app
from support.api import MiB, make_settings, read_object
from support.server_process import free_port
from support.tcp_proxy import CuttableProxy

CHUNK = 5 * MiB  # the smallest chunk the server takes for a file of several


class Recorder:
    """Server-side view of the requests: chunks received, how many at once, Range headers.

    It can also answer the next chunk requests itself with a 503 and `Retry-After`.
    """

    def __init__(self) -> None:
        self.chunk_times: dict[int, list[float]] = {}
        self.in_flight = 0
        self.peak = 0
        self.ranges: list[str | None] = []
        self.unavailable_for = 0
        self.refused: set[int] = set()

    @property
    def chunk_requests(self) -> int:
        return sum(len(times) for times in self.chunk_times.values())

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        if request.path.startswith("/api/v1/media/stream/"):
            self.ranges.append(request.headers.get("Range"))
        if "/chunk/" not in request.path:
            return await handler(request)
        number = int(request.path.rsplit("/", 1)[1])
        self.chunk_times.setdefault(number, []).append(time.monotonic())
        if self.unavailable_for or number in self.refused:
            while await request.content.readany():
                pass
            if number in self.refused:
                return problem(400, "chunk-out-of-range", {})
            self.unavailable_for -= 1
            return problem(503, "busy", {"Retry-After": "1"})
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1


def problem(status: int, code: str, headers: dict[str, str]) -> web.Response:
    return web.json_response(
        {"type": f"https://mediagate.dev/problems/{code}", "status": status, "detail": code},
        status=status,
        headers=headers,
        content_type="application/problem+json",
    )


@pytest.fixture
async def serve(aiohttp_client, tmp_path):
    """Start mediagate with a Recorder; returns (client, recorder, settings)."""

    async def start(settings, user: str = "alice"):
        recorder = Recorder()
        app = create_app(settings)
        app.middlewares.append(recorder.middleware)
        server = await aiohttp_client(app)
        token = tokens.issue(tokens.load_secret(settings), user, 3600)
        client = MediagateClient(
            str(server.make_url("")).rstrip("/"),
            token,
            retry=RetryPolicy(base_delay=0.05, max_delay=0.2),
            resume_store=ResumeStore(tmp_path / "cache"),
        )
        clients.append(client)
        return client, recorder

    clients: list[MediagateClient] = []
    yield start
    for client in clients:
        await client.close()


@pytest.fixture
def local(tmp_path):
    return make_settings(tmp_path / "data")


def media_file(tmp_path: Path, size: int, name: str = "clip.mp4") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


async def test_parallel_upload_into_s3_is_byte_exact(
    serve, s3_settings, s3_objects, bucket, tmp_path
):
    client, recorder = await serve(s3_settings)
    path = media_file(tmp_path, 4 * CHUNK + 12345)
    seen: list[UploadProgress] = []

    result = await client.upload(path, chunk_size=CHUNK, file_sha256=True, on_progress=seen.append)

    data = path.read_bytes()
    key = f"media/alice/{result.media.media_id}/clip.mp4"
    assert await read_object(s3_objects, bucket, key) == data
    assert result.media.storage == "s3"
    assert result.media.checksum.startswith("sha256:")
    assert recorder.chunk_requests == 5 and result.sent_chunks == 5
    assert 1 < recorder.peak <= 4  # several chunks at once, never more than asked
    assert seen[-1].sent == seen[-1].total == len(data)
    # An S3 media downloads through the presigned redirect.
    saved = await client.download(result.media.media_id, tmp_path / "back.mp4")
    assert saved.read_bytes() == data


async def test_upload_onto_local_disk_is_byte_exact(serve, local, tmp_path):
    client, _ = await serve(local)
    path = media_file(tmp_path, 2 * CHUNK + 1)

    result = await client.upload(path, chunk_size=CHUNK, parallel=2)

    stored = next(local.data_dir.rglob(f"{result.media.media_id}/clip.mp4"))
    assert stored.read_bytes() == path.read_bytes()
    assert result.media.storage == "local"
    assert list((tmp_path / "cache").iterdir()) == []  # nothing left to resume


async def test_empty_file_and_file_object(serve, local, tmp_path):
    client, _ = await serve(local)
    empty = media_file(tmp_path, 0, "empty.bin")
    assert (await client.upload(empty)).media.size == 0
    with media_file(tmp_path, 1000, "open.bin").open("rb") as opened:
        result = await client.upload(opened)
    assert (result.media.filename, result.media.size) == ("open.bin", 1000)
    in_memory = await client.upload(io.BytesIO(b"x" * (CHUNK + 1)), filename="memory.bin")
    assert (in_memory.media.filename, in_memory.media.size) == ("memory.bin", CHUNK + 1)
    assert list((tmp_path / "cache").iterdir()) == []  # nothing to resume a BytesIO by


async def interrupted_upload(client, path: Path, after_chunks: int) -> str:
    """Start uploading one chunk at a time; cancel it as chunk `after_chunks` starts streaming."""
    started = asyncio.Event()

    def on_progress(progress: UploadProgress) -> None:
        if progress.sent > after_chunks * CHUNK:
            started.set()

    upload = asyncio.create_task(
        client.upload(path, chunk_size=CHUNK, parallel=1, on_progress=on_progress)
    )
    async with asyncio.timeout(20):
        await started.wait()
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    state = client.resume_store.load(client.server, str(path))  # tmp_path is absolute
    assert state is not None
    return state.session_id


async def test_rerun_after_interruption_sends_only_the_missing_chunks(serve, local, tmp_path):
    client, recorder = await serve(local)
    path = media_file(tmp_path, 5 * CHUNK + 7)
    session_id = await interrupted_upload(client, path, after_chunks=2)
    received = (await client.session_status(session_id)).received
    assert received == {0, 1}  # chunk 2 was cut short: the server does not count it
    recorder.chunk_times.clear()

    result = await client.upload(path, chunk_size=CHUNK, parallel=1)

    assert result.session_id == session_id
    assert sorted(recorder.chunk_times) == [2, 3, 4, 5]
    assert (result.resumed_chunks, result.sent_chunks) == (2, 4)
    saved = await client.download(result.media.media_id, tmp_path / "back.mp4")
    assert saved.read_bytes() == path.read_bytes()


async def test_a_session_completed_by_a_run_that_then_crashed_gives_its_media(
    serve, local, tmp_path
):
    client, recorder = await serve(local)
    path = media_file(tmp_path, 2 * CHUNK)
    first = await client.upload(path, chunk_size=CHUNK)
    # As if the run had crashed after `complete` and before forgetting its session.
    stat = path.stat()
    client.resume_store.save(
        ResumeState(client.server, str(path), stat.st_size, stat.st_mtime_ns, first.session_id)
    )
    recorder.chunk_times.clear()

    again = await client.upload(path, chunk_size=CHUNK)

    assert again.media.media_id == first.media.media_id
    assert (recorder.chunk_requests, again.sent_chunks) == (0, 0)


async def test_a_run_stopped_while_the_server_finalizes_is_adopted_by_the_next(
    aiohttp_client, proxy, tmp_path, impatient_settings
):
    settings = impatient_settings
    chunk_posts: list[str] = []

    @web.middleware
    async def held_complete(request, handler):
        if "/chunk/" in request.path:
            chunk_posts.append(request.path)
        if request.path.endswith("/complete"):
            proxy.hold_answers()  # S3's CompleteMultipartUpload answer does not come
        return await handler(request)

    app = create_app(settings)
    app.middlewares.append(held_complete)
    server = await aiohttp_client(app)
    token = tokens.issue(tokens.load_secret(settings), "alice", 3600)
    path = media_file(tmp_path, 2 * CHUNK + 1)
    async with MediagateClient(
        str(server.make_url("")).rstrip("/"), token, resume_store=ResumeStore(tmp_path / "cache")
    ) as client:
        # Through the server (direct=False): its complete is what S3 holds up here.
        first = asyncio.create_task(client.upload(path, chunk_size=CHUNK, direct=False))
        session_id = None
        async with asyncio.timeout(30):
            while session_id is None or (await client.session_status(session_id)).state == "open":
                await asyncio.sleep(0.05)
                state = client.resume_store.load(client.server, str(path))
                session_id = state.session_id if state else None
        first.cancel()  # stopped while the server is still at it
        with pytest.raises(asyncio.CancelledError):
            await first

        again = await client.upload(path, chunk_size=CHUNK, direct=False)
        proxy.release_answers()

        assert (again.session_id, again.sent_chunks, again.finalizing) == (session_id, 0, True)
        assert len(chunk_posts) == 3  # each chunk once, by the first run
        assert [media.media_id for media in await client.list_media()] == [again.media.media_id]


async def test_a_changed_file_gets_a_fresh_session(serve, local, tmp_path):
    client, recorder = await serve(local)
    path = media_file(tmp_path, 3 * CHUNK)
    old_session = await interrupted_upload(client, path, after_chunks=1)
    path.write_bytes(os.urandom(3 * CHUNK))  # same size, new bytes and mtime
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    recorder.chunk_times.clear()

    result = await client.upload(path, chunk_size=CHUNK)

    assert result.session_id != old_session
    assert sorted(recorder.chunk_times) == [0, 1, 2]
    with pytest.raises(NotFound):  # the stale session was aborted, not left to expire
        await client.session_status(old_session)
    saved = await client.download(result.media.media_id, tmp_path / "back.mp4")
    assert saved.read_bytes() == path.read_bytes()


async def test_retry_after_is_honoured(serve, local, tmp_path):
    client, recorder = await serve(local)
    path = media_file(tmp_path, 1000)
    recorder.unavailable_for = 2  # two 503s with Retry-After: 1

    result = await client.upload(path)

    first, second, third = recorder.chunk_times[0]
    # Retry-After: 1, plus at most 10 % jitter (and some slack for a busy machine).
    assert 1.0 <= second - first < 2.0
    assert 1.0 <= third - second < 2.0
    assert result.media.size == 1000


async def test_a_lost_connection_is_retried(serve, local, tmp_path):
    direct, recorder = await serve(local)
    target = URL(direct.server)
    proxy = CuttableProxy(target.host, target.port)
    await proxy.start()
    retries = []

    async def outage() -> None:
        await proxy.cut()
        await asyncio.sleep(0.3)
        await proxy.restore()

    proxy.call_after(CHUNK + MiB, lambda: asyncio.ensure_future(outage()))
    path = media_file(tmp_path, 3 * CHUNK)
    async with MediagateClient(
        proxy.url,
        tokens.issue(tokens.load_secret(local), "alice", 3600),
        retry=RetryPolicy(base_delay=0.2, max_delay=0.5),
        resume_store=direct.resume_store,
        on_retry=lambda error, delay: retries.append(error),
    ) as client:
        result = await client.upload(path, chunk_size=CHUNK, parallel=1)
    await proxy.cut()

    assert retries and all(isinstance(error, ConnectionFailed) for error in retries)
    assert recorder.chunk_requests > 3  # chunk 1 went twice
    saved = await direct.download(result.media.media_id, tmp_path / "back.mp4")
    assert saved.read_bytes() == path.read_bytes()


async def test_a_refused_chunk_fails_the_upload_with_its_problem(serve, local, tmp_path):
    client, recorder = await serve(local)
    recorder.refused = {1}
    with pytest.raises(ProblemError) as raised:
        await client.upload(media_file(tmp_path, 3 * CHUNK), chunk_size=CHUNK)
    assert (raised.value.status, raised.value.code) == (400, "chunk-out-of-range")
    assert len(recorder.chunk_times[1]) == 1  # a 4xx is not retried


async def test_resume_state_is_private_to_the_user(serve, local, tmp_path):
    client, recorder = await serve(local)
    recorder.refused = {1}
    old_umask = os.umask(0o022)
    try:
        with pytest.raises(ProblemError):
            await client.upload(media_file(tmp_path, 3 * CHUNK), chunk_size=CHUNK)
    finally:
        os.umask(old_umask)
    folder = tmp_path / "cache"
    (state,) = folder.iterdir()  # kept for the next run to resume
    assert (folder.stat().st_mode & 0o777, state.stat().st_mode & 0o777) == (0o700, 0o600)


def test_a_server_url_with_a_password_is_refused_without_echoing_it():
    with pytest.raises(ValueError) as raised:
        MediagateClient("https://alice:hunter2@media.example.com", "token")
    assert "hunter2" not in str(raised.value)
    assert "https://media.example.com must not carry a user name or password" in str(raised.value)


async def test_a_refused_token_is_not_retried(serve, local, tmp_path):
    good, _ = await serve(local)
    retries = []

    def on_retry(error, delay):
        retries.append(error)

    async with MediagateClient(good.server, "not-a-token", on_retry=on_retry) as client:
        with pytest.raises(Unauthorized) as raised:
            await client.list_media()
    assert (raised.value.status, raised.value.code, retries) == (401, "unauthorized", [])


async def test_list_returns_every_page_newest_first(serve, local, tmp_path):
    client, _ = await serve(local)
    ids = [
        (await client.upload(media_file(tmp_path, 10, f"{n}.txt"))).media.media_id for n in range(5)
    ]
    listed = await client.list_media(page_size=2)
    assert [media.media_id for media in listed] == ids[::-1]


async def test_download_resumes_from_a_part_file(serve, local, tmp_path):
    client, recorder = await serve(local)
    path = media_file(tmp_path, 3 * MiB + 5)
    media = (await client.upload(path)).media
    target = tmp_path / "back.mp4"
    (tmp_path / "back.mp4.part").write_bytes(path.read_bytes()[: MiB + 1])

    saved = await client.download(media.media_id, target)

    assert recorder.ranges == [f"bytes={MiB + 1}-"]
    assert saved.read_bytes() == path.read_bytes()
    assert not (tmp_path / "back.mp4.part").exists()


async def test_delete_and_problem_details(serve, local, tmp_path):
    client, _ = await serve(local)
    media = (await client.upload(media_file(tmp_path, 10))).media
    await client.delete(media.media_id)
    with pytest.raises(NotFound) as raised:
        await client.info(media.media_id)
    assert raised.value.status == 404
    assert raised.value.type.endswith("/not-found")
    assert media.media_id in raised.value.detail


@pytest.mark.parametrize(
    ("status", "code", "retry"),
    [
        (400, "", False),
        (401, "", False),
        (404, "", False),
        (409, "missing-chunks", False),
        (408, "", True),
        (429, "", True),
        (500, "internal-error", True),
        (502, "", True),
        (502, "storage-rejected", False),
        (503, "storage-unavailable", True),
        (507, "storage-full", False),
        (507, "file-too-large-for-storage", False),
        (501, "", False),
    ],
)
def test_which_answers_are_retried(status, code, retry):
    assert is_retryable_status(status, code) is retry


def test_retry_after_header_values():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = (now + timedelta(seconds=7)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(later, now) == 7.0
    assert parse_retry_after("Thu, 01 Jan 2020 00:00:00 GMT", now) == 0.0
    assert parse_retry_after("99999") == 300.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_back_off_grows_and_honours_retry_after():
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    assert [policy.delay(n, jitter=0.0) for n in (1, 2, 3, 4, 5)] == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert [policy.delay(n, jitter=1.0) for n in (1, 5)] == [0.5, 4.0]
    assert policy.delay(1, retry_after=3.0, jitter=0.0) == 3.0
    assert policy.delay(1, retry_after=3.0, jitter=1.0) == pytest.approx(3.3)


class Stopped(Exception):
    pass


async def test_direct_upload_puts_every_chunk_into_the_bucket_and_resumes(
    serve, s3_settings, s3_objects, bucket, tmp_path
):
    client, recorder = await serve(s3_settings)
    path = media_file(tmp_path, 2 * CHUNK + 99)
    real_put = client.put_part_directly
    stopped = []

    async def stop_after_one(url, body, length, md5):
        if stopped:
            raise Stopped  # the run dies after its first chunk
        stopped.append(url)
        await real_put(url, body, length, md5)

    client.put_part_directly = stop_after_one  # type: ignore[method-assign]
    with pytest.raises(Stopped):
        await client.upload(path, chunk_size=CHUNK, direct=True, parallel=1)
    client.put_part_directly = real_put  # type: ignore[method-assign]

    result = await client.upload(path, chunk_size=CHUNK, direct=True)
    assert (result.resumed_chunks, result.sent_chunks, result.direct_chunks) == (1, 2, 2)
    assert recorder.chunk_requests == 0  # not one chunk through the server
    key = f"media/alice/{result.media.media_id}/clip.mp4"
    assert await read_object(s3_objects, bucket, key) == path.read_bytes()
    assert result.media.storage == "s3"


async def test_direct_upload_goes_through_a_server_without_a_bucket(serve, local, tmp_path):
    client, recorder = await serve(local)
    path = media_file(tmp_path, CHUNK + 1)
    result = await client.upload(path, chunk_size=CHUNK, direct=True)
    assert (result.sent_chunks, result.direct_chunks) == (2, 0)
    assert recorder.chunk_requests == 2
    assert result.media.storage == "local"


async def test_by_default_chunks_go_into_the_bucket_when_the_server_offers_it(
    serve, s3_settings, s3_objects, bucket, tmp_path
):
    client, recorder = await serve(s3_settings)
    path = media_file(tmp_path, 2 * CHUNK + 99)

    result = await client.upload(path, chunk_size=CHUNK)

    assert (result.sent_chunks, result.direct_chunks, result.path) == (3, 3, "direct")
    assert result.relay_reason is None
    assert recorder.chunk_requests == 0  # not one chunk's bytes through the server
    key = f"media/alice/{result.media.media_id}/clip.mp4"
    assert await read_object(s3_objects, bucket, key) == path.read_bytes()

    relayed = await client.upload(path, chunk_size=CHUNK, direct=False)
    assert (relayed.sent_chunks, relayed.direct_chunks, relayed.path) == (3, 0, "relay")
    assert relayed.relay_reason == "direct uploads not asked for"
    assert recorder.chunk_requests == 3
    key = f"media/alice/{relayed.media.media_id}/clip.mp4"
    assert await read_object(s3_objects, bucket, key) == path.read_bytes()


async def test_by_default_a_server_without_a_bucket_takes_the_chunks_itself(serve, tmp_path):
    client, recorder = await serve(make_settings(tmp_path / "local-data"))
    path = media_file(tmp_path, CHUNK + 1)
    result = await client.upload(path, chunk_size=CHUNK)
    assert (result.sent_chunks, result.direct_chunks, result.path) == (2, 0, "relay")
    assert result.relay_reason == "the server offers no direct uploads (501)"
    assert recorder.chunk_requests == 2
    assert result.media.storage == "local"


async def test_a_session_started_through_the_server_resumes_through_it(
    serve, s3_settings, s3_objects, bucket, tmp_path
):
    client, recorder = await serve(s3_settings)
    path = media_file(tmp_path, 2 * CHUNK + 99)
    real_put = client.put_chunk

    async def stop_after_one(session_id, number, body, length, headers):
        if recorder.chunk_requests:
            raise Stopped  # the run dies after its first chunk
        return await real_put(session_id, number, body, length, headers)

    client.put_chunk = stop_after_one  # type: ignore[method-assign]
    with pytest.raises(Stopped):
        await client.upload(path, chunk_size=CHUNK, direct=False, parallel=1)
    client.put_chunk = real_put  # type: ignore[method-assign]

    result = await client.upload(path, chunk_size=CHUNK)  # direct unless the session says not
    assert (result.resumed_chunks, result.sent_chunks, result.direct_chunks) == (1, 2, 0)
    assert (result.path, result.relay_reason) == (
        "relay",
        "resumed a session started through the server",
    )
    assert recorder.chunk_requests == 3
    key = f"media/alice/{result.media.media_id}/clip.mp4"
    assert await read_object(s3_objects, bucket, key) == path.read_bytes()


@pytest.mark.parametrize(
    ("sent", "direct", "direct_session", "path"),
    [
        (3, 3, True, "direct"),
        (0, 0, True, "direct"),  # resumed with every chunk in the bucket
        (3, 1, True, "mixed"),  # the bucket stopped taking chunks
        (3, 0, True, "relay"),  # not one taken (out of reach), or --no-direct
        (3, 0, False, "relay"),
        (0, 0, False, "relay"),
    ],
)
def test_upload_path(sent, direct, direct_session, path):
    assert upload_path(sent, direct, direct_session) == path


async def test_a_direct_upload_asks_for_16_mib_chunks_unless_told(serve, s3_settings, tmp_path):
    client, recorder = await serve(s3_settings)
    path = media_file(tmp_path, 10 * MiB)  # two of the server's own 8 MiB chunks
    result = await client.upload(path)
    status = await client.session_status(result.session_id)
    assert (status.total_chunks, result.sent_chunks, result.direct_chunks) == (1, 1, 1)
    assert recorder.chunk_requests == 0


async def test_by_default_a_bucket_out_of_reach_sends_the_file_through_the_server(
    serve, s3_settings, s3_objects, bucket, tmp_path
):
    # The server reaches its bucket; the part URLs it signs lead where nothing listens.
    nowhere = f"http://127.0.0.1:{free_port()}"
    client, recorder = await serve(s3_settings.model_copy(update={"direct_endpoint_url": nowhere}))
    path = media_file(tmp_path, 2 * CHUNK + 99)

    result = await client.upload(path, chunk_size=CHUNK)

    assert (result.sent_chunks, result.direct_chunks, result.path) == (3, 0, "relay")
    assert result.relay_reason.startswith("the bucket did not take chunk ")
    assert recorder.chunk_requests == 3
    key = f"media/alice/{result.media.media_id}/clip.mp4"
    assert await read_object(s3_objects, bucket, key) == path.read_bytes()


async def test_a_bucket_that_asks_to_slow_down_is_asked_again_not_left(
    serve, s3_settings, moto_endpoint, aiohttp_server, s3_objects, bucket, tmp_path
):
    # In front of moto: S3's 503 SlowDown to the first part PUT, the others passed on as sent
    # (Host included: the signature covers it).
    answered: list[int] = []

    async def bucket_front(request: web.Request) -> web.Response:
        body = await request.read()
        if request.method == "PUT" and not answered:
            answered.append(503)
            return web.Response(status=503, text="<Error><Code>SlowDown</Code></Error>")
        async with ClientSession() as s3:
            target = URL(moto_endpoint + request.path_qs, encoded=True)
            async with s3.request(
                request.method, target, data=body, headers=request.headers
            ) as passed:
                answered.append(passed.status)
                headers = {k: v for k, v in passed.headers.items() if k.lower() == "etag"}
                return web.Response(status=passed.status, body=await passed.read(), headers=headers)

    front = web.Application(client_max_size=2 * CHUNK)
    front.router.add_route("*", "/{tail:.*}", bucket_front)
    server = await aiohttp_server(front)
    front_url = str(server.make_url("")).rstrip("/")
    client, recorder = await serve(
        s3_settings.model_copy(update={"direct_endpoint_url": front_url})
    )
    path = media_file(tmp_path, 2 * CHUNK + 99)

    result = await client.upload(path, chunk_size=CHUNK, parallel=1)

    assert (result.sent_chunks, result.direct_chunks, result.path) == (3, 3, "direct")
    assert answered == [503, 200, 200, 200]
    assert recorder.chunk_requests == 0
    key = f"media/alice/{result.media.media_id}/clip.mp4"
    assert await read_object(s3_objects, bucket, key) == path.read_bytes()
