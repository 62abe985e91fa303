"""The upload rules across instances: two servers on one PostgreSQL catalog (and one
data directory, the shared spool), any request to either."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import traceback
from datetime import timedelta

import aiohttp
import psycopg
import pytest
from psycopg.rows import dict_row
from yarl import URL

from mediagate import metrics
from mediagate.catalog.base import ClaimTake, LeaseRenewal, LeaseTake
from mediagate.catalog.postgres import PostgresCatalog
from mediagate.config import SettingsError
from mediagate.core import session_locks
from mediagate.core.engine import utc_now
from mediagate.models import Chunk, StorageKind
from mediagate.web.app import create_app
from mediagate.web.keys import SERVICES
from support.api import Api, MiB, chunks_of, make_settings, read_object
from support.raw_http import stall_chunk
from support.sessions import upload_session
from support.tus import TUS, create_upload, offset_of, patch, stall_patch


@pytest.fixture
def database_url(postgres_server) -> str:
    return postgres_server.new_database()


async def two_instances(aiohttp_client, settings, clock=utc_now) -> tuple[Api, Api]:
    first = await aiohttp_client(create_app(settings, clock=clock))
    second = await aiohttp_client(create_app(settings, clock=clock))
    return Api(first, settings), Api(second, settings)


async def new_session(api: Api, size: int, **extra) -> str:
    answer = await api.initiate(size=size, chunk_size=5 * MiB, **extra)
    assert answer.status == 201, await answer.text()
    return (await answer.json())["session_id"]


async def stream_of(api: Api, media: dict) -> bytes:
    answer = await api.client.get(URL(media["stream_url"]).path_qs, allow_redirects=False)
    if answer.status == 302:  # S3: presigned
        async with api.client.session.get(answer.headers["Location"]) as stored:
            return await stored.read()
    return await answer.read()


async def test_a_retry_on_another_instance_takes_over_from_a_stalled_attempt(
    aiohttp_client, s3_settings
):
    a, b = await two_instances(aiohttp_client, s3_settings)
    stalled_bytes, retried_bytes = os.urandom(1000), os.urandom(1000)
    sid = await new_session(a, 1000)
    stalled = await stall_chunk(a, sid, stalled_bytes)

    async with asyncio.timeout(5):  # the holder lets go at its next renewal, not the body timeout
        retry = await b.put_chunk(sid, 0, retried_bytes)
    assert retry.status == 200, await retry.text()
    status, problem = await stalled.answer()
    assert (status, problem["type"].rsplit("/", 1)[1]) == (409, "chunk-superseded")
    stalled.close()

    done = await a.complete(sid)
    assert done.status == 201, await done.text()
    assert await stream_of(a, await done.json()) == retried_bytes


async def test_complete_on_one_instance_waits_for_a_chunk_streaming_on_the_other(
    aiohttp_client, s3_settings
):
    a, b = await two_instances(aiohttp_client, s3_settings)
    data = os.urandom(2000)
    sid = await new_session(a, len(data))
    arriving = await stall_chunk(a, sid, data)
    complete = asyncio.create_task(b.complete(sid))
    await asyncio.sleep(0.5)
    assert not complete.done()  # not a 409 missing-chunks: it waits for the chunk

    await arriving.send(data[len(data) // 2 :])
    status, _ = await arriving.answer()
    assert status == 200
    done = await complete
    assert done.status == 201, await done.text()
    assert await stream_of(b, await done.json()) == data


async def test_two_completes_on_two_instances_make_one_media(
    aiohttp_client, s3_settings, s3_objects, bucket
):
    a, b = await two_instances(aiohttp_client, s3_settings)
    data = os.urandom(5 * MiB + 10)
    sid = await new_session(a, len(data))
    for number, piece in enumerate(chunks_of(data, 5 * MiB)):
        assert (await (a, b)[number % 2].put_chunk(sid, number, piece)).status == 200

    first, second = await asyncio.gather(a.complete(sid), b.complete(sid))
    assert (first.status, second.status) == (201, 201), (await first.text(), await second.text())
    one, two = await first.json(), await second.json()
    same = {key: value for key, value in one["info"].items() if key != "stream_url"}
    assert {key: value for key, value in two["info"].items() if key != "stream_url"} == same
    listed = await s3_objects.list_objects_v2(Bucket=bucket)
    (stored,) = [item["Key"] for item in listed["Contents"]]
    assert await read_object(s3_objects, bucket, stored) == data


async def test_abort_on_one_instance_is_refused_while_the_other_completes(
    aiohttp_client, s3_settings, monkeypatch
):
    a, b = await two_instances(aiohttp_client, s3_settings)
    sid = await new_session(a, 3)
    assert (await a.put_chunk(sid, 0, b"abc")).status == 200
    engine = a.client.app[SERVICES].engine
    reached, release = asyncio.Event(), asyncio.Event()
    assemble = engine._assemble

    async def held(session):
        reached.set()
        await release.wait()
        return await assemble(session)

    monkeypatch.setattr(engine, "_assemble", held)
    complete = asyncio.create_task(a.complete(sid))
    await reached.wait()
    aborted = await b.abort(sid)
    assert aborted.status == 409, await aborted.text()
    refused = await b.put_chunk(sid, 0, b"xyz")  # no chunk starts under a complete either
    assert refused.status == 409, await refused.text()
    release.set()
    assert (await complete).status == 201


async def test_the_running_digest_is_not_trusted_once_another_instance_rewrote_a_chunk(
    aiohttp_client, s3_settings
):
    a, b = await two_instances(aiohttp_client, s3_settings)
    data = os.urandom(5 * MiB + 10)
    pieces = chunks_of(data, 5 * MiB)
    sid = await new_session(a, len(data), sha256=hashlib.sha256(data).hexdigest())
    for number, piece in enumerate(pieces):
        assert (await a.put_chunk(sid, number, piece)).status == 200  # A hashed them all
    assert (await b.put_chunk(sid, 1, b"Z" * len(pieces[1]))).status == 200

    done = await a.complete(sid)  # A's digest says the file is right; it is not
    assert done.status == 422, await done.text()
    assert (await done.json())["type"].endswith("/file-digest-mismatch")


async def test_the_sweep_on_two_instances_expires_each_session_once(aiohttp_client, s3_settings):
    now = [utc_now()]
    a, b = await two_instances(aiohttp_client, s3_settings, clock=lambda: now[0])
    sids = [await new_session(a, 3) for _ in range(6)]
    for sid in sids:
        assert (await b.put_chunk(sid, 0, b"abc")).status == 200
    now[0] += timedelta(seconds=s3_settings.session_ttl + 1)

    counts = await asyncio.gather(
        a.client.app[SERVICES].engine.expire_sessions(),
        b.client.app[SERVICES].engine.expire_sessions(),
    )
    assert sum(counts) == len(sids)
    for sid in sids:
        assert (await a.complete(sid)).status == 410


# --- the catalog's side of it ---------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "delay"), [(0, 0.05), (1, 0.1), (2, 0.2), (4, 0.8), (5, 1.0), (60, 1.0)]
)
def test_a_waiter_backs_off_to_one_ask_per_renewal(attempt, delay):
    assert session_locks.poll_delay(attempt) == pytest.approx(delay)


async def add_session(catalog: PostgresCatalog, session_id: str = "s1") -> None:
    await catalog.add_session(
        upload_session(session_id, size=10, total_chunks=1, key="k", media_id="m1")
    )


def chunk(writer: str) -> Chunk:
    return Chunk(number=0, size=10, storage=StorageKind.S3, etag=f'"{writer}"', writer=writer)


async def test_only_the_lease_holder_records_its_chunk(catalog):
    await add_session(catalog)
    assert await catalog.take_chunk_lease("s1", 0, "old", 0.2, first=True) is LeaseTake.HELD
    assert await catalog.take_chunk_lease("s1", 0, "new", 0.2, first=True) is LeaseTake.WAITING
    assert await catalog.take_chunk_lease("s1", 0, "newest", 5, first=True) is LeaseTake.WAITING
    assert await catalog.take_chunk_lease("s1", 0, "new", 5, first=False) is (LeaseTake.SUPERSEDED)
    await asyncio.sleep(0.3)  # the old holder's lease runs out
    assert await catalog.take_chunk_lease("s1", 0, "newest", 5, first=False) is LeaseTake.HELD

    assert await catalog.record_chunk("s1", chunk("old"), "old") is None
    assert await catalog.record_chunk("s1", chunk("newest"), "newest") == 1
    assert [c.writer for c in await catalog.chunks("s1")] == ["newest"]


async def test_a_session_claim_and_a_chunk_lease_exclude_each_other(catalog):
    await add_session(catalog)
    assert await catalog.take_chunk_lease("s1", 0, "writer", 5, first=True) is LeaseTake.HELD
    claim = await catalog.claim("session", "s1", "completer", 5, idle_session=True)
    assert claim is ClaimTake.CHUNKS
    await catalog.release_chunk_lease("s1", 0, "writer")
    claim = await catalog.claim("session", "s1", "completer", 5, idle_session=True)
    assert claim is ClaimTake.CLAIMED
    assert await catalog.take_chunk_lease("s1", 0, "late", 5, first=True) is LeaseTake.CLOSED
    assert await catalog.claim("session", "s1", "aborter", 5) is ClaimTake.BUSY
    await catalog.release_claim("session", "s1", "completer")
    assert await catalog.take_chunk_lease("s1", 0, "late", 5, first=True) is LeaseTake.HELD


async def test_the_newest_request_for_a_claim_takes_it_over(catalog):
    assert await catalog.take_claim("tus", "u", "old", 5, first=True) is LeaseTake.HELD
    assert await catalog.take_claim("tus", "u", "new", 5, first=True) is LeaseTake.WAITING
    assert await catalog.renew_claim("tus", "u", "old", 5) is LeaseRenewal.WANTED
    await catalog.release_claim("tus", "u", "old")
    assert await catalog.renew_claim("tus", "u", "old", 5) is LeaseRenewal.LOST  # a late beat
    # Released, but kept for the one who wants it; a newer one still comes first.
    assert await catalog.take_claim("tus", "u", "newer", 5, first=True) is LeaseTake.WAITING
    assert await catalog.take_claim("tus", "u", "new", 5, first=False) is LeaseTake.SUPERSEDED
    assert await catalog.take_claim("tus", "u", "newer", 5, first=False) is LeaseTake.HELD
    assert await catalog.renew_claim("tus", "u", "newer", 5) is LeaseRenewal.HELD
    assert await catalog.renew_claim("tus", "u", "old", 5) is LeaseRenewal.LOST
    await catalog.release_claim("tus", "u", "newer")
    assert await catalog.take_claim("tus", "u", "next", 5, first=True) is LeaseTake.HELD


# --- the shared spool -----------------------------------------------------------------


def completed_on_s3() -> float:
    labels = {"storage": "s3"}
    return metrics.REGISTRY.get_sample_value("mediagate_uploads_completed_total", labels) or 0.0


async def eventually(check, seconds: float = 20.0):
    async with asyncio.timeout(seconds):
        while not (result := await check()):
            await asyncio.sleep(0.1)
        return result


async def test_a_chunk_spilled_on_one_instance_reaches_s3_through_the_other(
    aiohttp_client, proxy, proxied_settings, s3_objects, bucket
):
    a, b = await two_instances(aiohttp_client, proxied_settings)
    data = os.urandom(2 * 5 * MiB + 100)
    pieces = chunks_of(data, 5 * MiB)
    sid = await new_session(a, len(data))
    assert (await a.put_chunk(sid, 0, pieces[0])).status == 200
    assert (await b.put_chunk(sid, 1, pieces[1])).status == 200
    await proxy.cut()
    spilled = await a.put_chunk(sid, 2, pieces[2])
    if spilled.status == 503:  # its bytes went to the failing S3; the retry goes to disk
        spilled = await a.put_chunk(sid, 2, pieces[2])
    assert spilled.status == 200, await spilled.text()

    done = await b.complete(sid)  # B reads A's spilled chunk from the shared spool
    assert done.status == 202, await done.text()
    media_id = (await done.json())["media_id"]
    await proxy.restore()

    async def ready():
        info = await (await b.info(media_id)).json()
        return info if info["state"] == "ready" else None

    info = await eventually(ready)
    assert info["storage"] == "s3"
    listed = await s3_objects.list_objects_v2(Bucket=bucket)
    (key,) = [item["Key"] for item in listed["Contents"]]
    assert await read_object(s3_objects, bucket, key) == data


async def test_the_finalizers_of_two_instances_finish_each_upload_once(
    aiohttp_client, proxy, proxied_settings
):
    a, b = await two_instances(aiohttp_client, proxied_settings)
    head = os.urandom(5 * MiB)
    sids = [await new_session(a, len(head) + 3) for _ in range(3)]
    for number, sid in enumerate(sids):
        assert (await (a, b)[number % 2].put_chunk(sid, 0, head)).status == 200
    await proxy.cut()
    media_ids = []
    for number, sid in enumerate(sids):
        api = (a, b)[number % 2]
        answer = await api.put_chunk(sid, 1, b"abc")
        if answer.status == 503:  # its bytes went to the failing S3; the retry goes to disk
            answer = await api.put_chunk(sid, 1, b"abc")
        assert answer.status == 200, await answer.text()
        done = await (b, a)[number % 2].complete(sid)
        assert done.status == 202, await done.text()
        media_ids.append((await done.json())["media_id"])
    before = completed_on_s3()
    await proxy.restore()
    await asyncio.sleep(0.5)  # past the breakers' back-off

    engines = [api.client.app[SERVICES].engine for api in (a, b)]
    await asyncio.gather(*(engine.finish_finalizing() for engine in engines * 2))
    for media_id in media_ids:
        assert (await (await a.info(media_id)).json())["state"] == "ready"
    assert completed_on_s3() - before == len(media_ids)  # not once per instance


async def test_an_instance_with_another_data_directory_refuses_to_start(
    aiohttp_client, tmp_path, database_url
):
    await aiohttp_client(create_app(make_settings(tmp_path / "one", database_url=database_url)))
    elsewhere = make_settings(tmp_path / "two", database_url=database_url)
    with pytest.raises(SettingsError, match=r"MEDIAGATE_DATA_DIR=.*not the data directory"):
        await aiohttp_client(create_app(elsewhere))


def count_transactions(monkeypatch) -> list[int]:
    """The catalog's transactions from now on, but those of the background work (the
    finalizer's round every few seconds)."""
    transactions: list[int] = []
    opened = PostgresCatalog._connection

    def counted(self):
        if not any(frame.name == "run_periodically" for frame in traceback.extract_stack()):
            transactions.append(1)
        return opened(self)

    monkeypatch.setattr(PostgresCatalog, "_connection", counted)
    return transactions


async def test_a_chunk_costs_no_more_catalog_transactions_than_on_one_instance(
    aiohttp_client, s3_settings, monkeypatch
):
    """Taking the lease forgets the old record, recording releases the lease: the same
    three transactions as with the rules in memory (plus one renewal a second while a
    chunk takes longer)."""
    a, _ = await two_instances(aiohttp_client, s3_settings)
    sid = await new_session(a, 3)
    transactions = count_transactions(monkeypatch)
    assert (await a.put_chunk(sid, 0, b"abc")).status == 200
    # get_session, take_chunk_lease (with drop_chunk), record_chunk (with the release)
    assert len(transactions) == 3


async def test_two_tus_patches_at_one_offset_on_two_instances_take_turns(
    aiohttp_client, s3_settings
):
    a, b = await two_instances(aiohttp_client, s3_settings)
    upload = await create_upload(a, length=11)
    answers = await asyncio.gather(patch(a, upload, 0, b"AAAAAA"), patch(b, upload, 0, b"BBBBBB"))
    # The second waits for the first, then finds the offset moved on.
    assert sorted(answer.status for answer in answers) == [204, 409]
    assert await offset_of(b, upload) == 6
    assert (await patch(b, upload, 6, b"12345")).status == 204
    assert await offset_of(a, upload) == 11


async def test_a_checksummed_patch_in_flight_counts_on_no_instance(aiohttp_client, s3_settings):
    """Issue 14 item 1: its parts stay pending in the catalog until the checksum matched."""
    a, b = await two_instances(aiohttp_client, s3_settings)
    data = os.urandom(13 * MiB)
    upload = await create_upload(a, length=len(data))
    flipped = bytearray(data)
    flipped[3] ^= 0xFF
    go_on = asyncio.Event()

    async def body():
        yield bytes(flipped[: 9 * MiB])  # part 0 (8 MiB) and a little more
        await go_on.wait()
        yield bytes(flipped[9 * MiB :])

    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    checked = {"Upload-Checksum": f"sha256 {digest}", "Content-Length": str(len(data))}
    sending = asyncio.create_task(patch(a, upload, 0, body(), **checked))
    async with asyncio.timeout(20):
        url = s3_settings.database_url.get_secret_value()
        while not await chunk_rows(url, upload):  # part 0 is in S3, recorded
            assert not sending.done()
            await asyncio.sleep(0.05)
    assert await offset_of(a, upload) == 0
    assert await offset_of(b, upload) == 0
    go_on.set()
    assert (await sending).status == 460
    assert await offset_of(b, upload) == 0
    assert (
        await patch(b, upload, 0, data, **{"Upload-Checksum": f"sha256 {digest}"})
    ).status == 204
    assert await offset_of(a, upload) == len(data)


async def chunk_rows(database_url: str, upload: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as connection:
        cursor = await connection.execute(
            "SELECT count(*) FROM chunks WHERE session_id = %s", (upload,)
        )
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def test_a_newer_patch_on_another_instance_takes_over_from_a_stalled_one(
    aiohttp_client, s3_settings
):
    a, b = await two_instances(aiohttp_client, s3_settings)
    data = os.urandom(3000)
    upload = await create_upload(a, length=len(data))
    stalled = await stall_patch(a, upload, 0, data, 1000)

    async with asyncio.timeout(10):  # at its next renewal, not the 60 s body read timeout
        offset = await offset_of(b, upload)
        answer = await patch(b, upload, offset, data[offset:])
        status, problem = await stalled.answer()
    assert (status, problem["type"].rsplit("/", 1)[1]) == (409, "upload-superseded")
    stalled.close()
    if answer.status == 409:  # the stalled PATCH's bytes were kept after the HEAD
        offset = await offset_of(b, upload)
        answer = await patch(b, upload, offset, data[offset:])
    assert answer.status == 204, await answer.text()
    assert await offset_of(a, upload) == len(data)


async def test_delete_on_another_instance_takes_over_from_a_stalled_patch(
    aiohttp_client, s3_settings
):
    a, b = await two_instances(aiohttp_client, s3_settings)
    upload = await create_upload(a, length=3000)
    stalled = await stall_patch(a, upload, 0, os.urandom(3000), 1000)
    async with asyncio.timeout(10):
        answer = await b.client.delete(f"/api/v1/tus/{upload}", headers={**b.headers, **TUS})
        assert answer.status == 204, await answer.text()
        status, _ = await stalled.answer()
    assert status == 409
    stalled.close()


async def test_patches_waiting_on_one_upload_leave_another_user_half_his_throughput(
    aiohttp_client, tmp_path, database_url, monkeypatch
):
    """One user opens many connections to one tus upload while its PATCH stalls; another
    user keeps uploading. The waiting costs the catalog a few transactions per request,
    not ten a second per connection (item 8 of issue 14 measured 300 connections taking
    78-97 % of the other user's throughput). Windows alone and crowded take turns, so
    that a busy moment of a shared machine meets both."""
    settings = make_settings(tmp_path / "data", database_url=database_url)
    alice = Api(await aiohttp_client(create_app(settings)), settings)
    bob = alice.as_user("bob")
    transactions = count_transactions(monkeypatch)

    async def uploads_in(seconds: float) -> tuple[int, int]:
        """How many small uploads bob finishes in `seconds`, and the catalog's transactions."""
        before, done = len(transactions), 0
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            sid = await new_session(bob, 3)
            assert (await bob.put_chunk(sid, 0, b"abc")).status == 200
            assert (await bob.complete(sid)).status == 201
            done += 1
        return done, len(transactions) - before

    upload = await create_upload(alice, length=3000)
    stalled = await stall_patch(alice, upload, 0, os.urandom(3000), 1000)
    waiters, rounds = 100, 3
    url = alice.client.make_url(f"/api/v1/tus/{upload}")
    headers = {**alice.headers, **TUS, "Content-Type": "application/offset+octet-stream"}
    alone: list[tuple[int, int]] = []
    crowded: list[tuple[int, int]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def wait_on_the_upload() -> None:
            async with session.patch(
                url, data=b"x" * 10, headers={**headers, "Upload-Offset": "0"}
            ) as answer:
                await answer.read()

        for _ in range(rounds):
            alone.append(await uploads_in(1.5))
            waiting = [asyncio.create_task(wait_on_the_upload()) for _ in range(waiters)]
            try:
                crowded.append(await uploads_in(1.5))
            finally:
                for task in waiting:
                    task.cancel()
                await asyncio.gather(*waiting, return_exceptions=True)
    stalled.close()

    alone_uploads = sorted(done for done, _ in alone)
    crowded_uploads = sorted(done for done, _ in crowded)
    assert crowded_uploads[1] >= alone_uploads[1] / 2, (alone, crowded)  # the medians
    per_upload = sum(spent for _, spent in alone) / sum(alone_uploads)
    spent_waiting = sum(spent for _, spent in crowded) - per_upload * sum(crowded_uploads)
    assert spent_waiting <= 5 * waiters * rounds, (spent_waiting, waiters)


async def test_completes_waiting_for_a_chunk_in_flight_cost_the_catalog_little(
    aiohttp_client, s3_settings, monkeypatch
):
    a, _ = await two_instances(aiohttp_client, s3_settings)
    data = os.urandom(2000)
    sid = await new_session(a, len(data))
    arriving = await stall_chunk(a, sid, data)
    transactions = count_transactions(monkeypatch)
    waiters = 50
    completes = [asyncio.create_task(a.complete(sid)) for _ in range(waiters)]
    await asyncio.sleep(3)
    assert not any(task.done() for task in completes)  # all still wait for the chunk
    # A look at the session each, then one of them asking about once a second.
    assert len(transactions) <= 2 * waiters, len(transactions)

    await arriving.send(data[len(data) // 2 :])
    assert (await arriving.answer())[0] == 200
    answers = await asyncio.gather(*completes)
    assert {answer.status for answer in answers} == {201}
    assert len({(await answer.json())["media_id"] for answer in answers}) == 1


async def test_the_reconcilers_of_two_instances_move_each_media_once(
    aiohttp_client, proxy, proxied_settings
):
    await proxy.cut()
    settings = proxied_settings.model_copy(update={"auto_migrate": True})
    a, b = await two_instances(aiohttp_client, settings)
    for number in range(3):
        sid = await new_session(a, 3)
        assert (await (a, b)[number % 2].put_chunk(sid, 0, b"abc")).status == 200
        assert (await b.complete(sid)).status == 201  # a local media
    await proxy.restore()

    async def s3_back() -> bool:
        await asyncio.sleep(0.3)  # past the back-off: the next initiate is the probe
        answers = [await (await api.as_user("bob").initiate(size=1)).json() for api in (a, b)]
        return all(answer["storage"] == "s3" for answer in answers)

    await eventually(s3_back)
    reconcilers = [api.client.app[SERVICES].reconciler for api in (a, b)]
    summaries = await asyncio.gather(*(reconciler.run_once() for reconciler in reconcilers))
    assert sum(summary.migrated for summary in summaries) == 3
    assert sum(summary.failed + summary.skipped for summary in summaries) == 0


# --- the catalog going away while a chunk streams ---------------------------------------


async def lease_rows(database_url: str, session_id: str) -> list[dict]:
    async with await psycopg.AsyncConnection.connect(database_url, row_factory=dict_row) as db:
        cursor = await db.execute(
            "SELECT owner, expires_at, expires_at > now() AS live FROM chunk_leases "
            "WHERE session_id = %s",
            (session_id,),
        )
        return await cursor.fetchall()


async def test_postgresql_restarting_as_a_chunk_ends_is_503_and_leaves_no_lease_renewed(
    start_api, postgres_server, tmp_path, moto_endpoint, bucket
):
    url = postgres_server.new_database()
    settings = make_settings(
        tmp_path / "data",
        use_cloud_storage=True,
        s3_bucket=bucket,
        s3_endpoint_url=moto_endpoint,
        database_url=url,
        database_timeout=1.0,
    )
    api = await start_api(settings)
    data = os.urandom(2000)
    sid = await new_session(api, len(data))
    arriving = await stall_chunk(api, sid, data)
    await asyncio.sleep(1.5)  # the lease's heartbeat has run

    postgres_server.stop()
    try:
        await arriving.send(data[len(data) // 2 :])  # the body ends while the catalog is away
        status, problem = await arriving.answer(seconds=10)
        assert (status, problem["type"].rsplit("/", 1)[1]) == (503, "catalog-unavailable")
        await asyncio.sleep(3)  # the heartbeat, had it survived, tries to renew meanwhile
    finally:
        postgres_server.start()
    arriving.close()

    # Nobody renews the lease of the answered request: it was released, or runs out.
    await asyncio.sleep(2.5)  # past two renewals, had the heartbeat survived
    before = await lease_rows(url, sid)
    await asyncio.sleep(2.5)
    assert await lease_rows(url, sid) == [] or (
        [row["expires_at"] for row in await lease_rows(url, sid)]
        == [row["expires_at"] for row in before]
    )
    async with asyncio.timeout(15):  # at most the lease's life: the chunk is free again
        while any(row["owner"] and row["live"] for row in await lease_rows(url, sid)):
            await asyncio.sleep(0.5)
    async with asyncio.timeout(20):
        while (await api.client.get("/readyz")).status != 200:
            await asyncio.sleep(0.2)
    assert (await api.put_chunk(sid, 0, data)).status == 200
    done = await api.complete(sid)
    assert done.status == 201, await done.text()
    assert await stream_of(api, await done.json()) == data


async def test_a_heartbeat_whose_cancellation_is_lost_still_stops(monkeypatch):
    """A renewal waiting for the catalog may swallow the cancellation (Python 3.11's
    asyncio.wait_for, which the pool waits in, does when its wait ends at that moment):
    the block still ends at once, and nothing renews the hold after it."""
    monkeypatch.setattr(session_locks, "RENEW_INTERVAL", 0.05)
    renewals = 0
    renewing = asyncio.Event()

    async def renew() -> bool:
        nonlocal renewals
        renewals += 1
        renewing.set()
        try:
            await asyncio.sleep(0.3)  # waiting for a pooled connection
        except asyncio.CancelledError:
            if renewals > 1:
                raise
            # the first is lost on its way
        return True

    async def hold() -> None:
        async with session_locks._heartbeat(renew):
            await renewing.wait()

    holder = asyncio.create_task(hold())
    ended, _ = await asyncio.wait({holder}, timeout=2)
    assert ended, "the block's end waits for a beat that lost its cancellation"
    await asyncio.sleep(0.6)
    assert renewals == 1
