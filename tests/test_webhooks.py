"""Events delivered as Standard Webhooks (core/webhooks.py) to a real receiver on loopback,
from real `mediagate serve` processes: signed, in order per media, at least once across
a receiver outage and a SIGKILL, retried until dead, stopped by 410, and claimed once
by two instances on one PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from mediagate import tokens
from mediagate.catalog.base import CATALOG_FILE
from mediagate.core.webhooks import MAX_BACKOFF, settle
from mediagate.events import Delivery, DeliveryState
from support.receiver import Receiver
from support.server_process import ServerProcess

SECRET = "webhook-test-secret-long-enough-for-hs256"
WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()
HEADERS = {"Authorization": f"Bearer {tokens.issue(SECRET.encode(), 'alice', 3600)}"}


@pytest.fixture
async def receiver():
    hook = Receiver(WHSEC)
    await hook.start()
    yield hook
    await hook.stop()


def server_env(receiver: Receiver, **extra: str) -> dict[str, str]:
    return {
        "MEDIAGATE_JWT_SECRET": SECRET,
        "MEDIAGATE_WEBHOOK_URL": receiver.events_url,
        "MEDIAGATE_WEBHOOK_SECRET": WHSEC,
        # Short, so that what a killed process held is sent again soon (its hold is
        # ten timeouts and 10 s).
        "MEDIAGATE_WEBHOOK_TIMEOUT": "2",
        **extra,
    }


async def upload(base: str, data: bytes, name: str = "clip.mp4") -> str:
    """A whole upload through the native API; the media id."""
    async with aiohttp.ClientSession(base, headers=HEADERS) as client:
        async with client.post(
            "/api/v1/media/upload/initiate", json={"filename": name, "size": len(data)}
        ) as answer:
            assert answer.status == 201, await answer.text()
            session = await answer.json()
        sid = session["session_id"]
        async with client.post(f"/api/v1/media/upload/{sid}/chunk/0", data=data) as answer:
            assert answer.status == 200
        async with client.post(f"/api/v1/media/upload/{sid}/complete") as answer:
            assert answer.status == 201, await answer.text()
            return (await answer.json())["media_id"]


async def delete(base: str, media_id: str) -> None:
    async with aiohttp.ClientSession(base, headers=HEADERS) as client:
        async with client.delete(f"/api/v1/media/delete/{media_id}") as answer:
            assert answer.status in (200, 204)


async def until(check, seconds: float = 30.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.1)


def outbox(data_dir: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(data_dir / CATALOG_FILE) as db:
        return db.execute("SELECT type, state, attempts FROM events ORDER BY seq").fetchall()


async def test_every_event_of_an_upload_arrives_signed_and_in_order(tmp_path, receiver):
    server = ServerProcess(tmp_path / "data", server_env(receiver))
    await server.start()
    try:
        media_id = await upload(server.base, b"hello events")
        await delete(server.base, media_id)
        await until(lambda: len(receiver.types(media_id)) == 3)
    finally:
        await server.stop()
    assert receiver.types(media_id) == ["upload.created", "media.ready", "media.deleted"]
    ready = next(m for m in receiver.received if m["type"] == "media.ready")
    assert ready["data"]["media_id"] == media_id
    assert ready["data"]["user_id"] == "alice"
    assert ready["data"]["filename"] == "clip.mp4"
    assert ready["data"]["size"] == len(b"hello events")
    assert ready["data"]["storage"] == "local"
    assert ready["data"]["protocol"] == "native"
    assert ready["data"]["app_metadata"] is None
    assert ready["data"]["upload_id"]
    assert datetime.fromisoformat(ready["timestamp"]) <= datetime.now(UTC)
    assert len(receiver.ids) == len(set(receiver.ids))  # no duplicate in a normal run


async def test_an_ietf_upload_reports_its_protocol(tmp_path, receiver):
    server = ServerProcess(tmp_path / "data", server_env(receiver))
    await server.start()
    try:
        async with aiohttp.ClientSession(server.base, headers=HEADERS) as client:
            async with client.post(
                "/api/v1/uploads",
                headers={"Upload-Complete": "?1", "Upload-Draft-Interop-Version": "8"},
                data=b"hello ietf",
            ) as answer:
                assert answer.status == 201, await answer.text()
                media_id = (await answer.json())["media_id"]
        await until(lambda: len(receiver.types(media_id)) == 2)
    finally:
        await server.stop()
    assert receiver.types(media_id) == ["upload.created", "media.ready"]
    assert {m["data"]["protocol"] for m in receiver.received} == {"ietf"}


async def test_a_tus_upload_left_to_expire_reports_its_creation_and_its_expiry(tmp_path, receiver):
    server = ServerProcess(tmp_path / "data", server_env(receiver, MEDIAGATE_SESSION_TTL="1"))
    await server.start()
    try:
        async with aiohttp.ClientSession(server.base, headers=HEADERS) as client:
            async with client.post(
                "/api/v1/tus", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "100"}
            ) as answer:
                assert answer.status == 201, await answer.text()
        await until(lambda: len(receiver.received) == 1)
        # Recorded as delivered before the restart (else it is sent again once the
        # killed process's hold on it has passed: at least once, but later).
        await until(lambda: outbox(tmp_path / "data")[0][1] == "delivered")
        created = receiver.received[0]
        assert (created["type"], created["data"]["protocol"]) == ("upload.created", "tus")
        # The expiry sweep runs at start-up: a restart after the TTL expires it.
        await server.stop()
        await asyncio.sleep(1.5)
        await server.start()
        await until(lambda: len(receiver.received) == 2)
    finally:
        await server.stop()
    expired = receiver.received[1]
    assert expired["type"] == "upload.expired"
    assert expired["data"]["upload_id"] == created["data"]["upload_id"]
    assert expired["data"]["media_id"] == created["data"]["media_id"]


async def test_an_event_is_sent_right_after_its_commit_even_when_the_sender_is_idle(
    tmp_path, receiver
):
    loop = asyncio.get_running_loop()
    server = ServerProcess(tmp_path / "data", server_env(receiver))
    await server.start()
    delays = []
    try:
        async with aiohttp.ClientSession(server.base, headers=HEADERS) as client:
            for _ in range(6):
                await asyncio.sleep(2.5)  # idle: the sender polls at its slowest
                async with client.post(
                    "/api/v1/media/upload/initiate", json={"filename": "a.mp4", "size": 5}
                ) as answer:
                    assert answer.status == 201
                    answered = loop.time()
                count = len(receiver.arrived)
                await until(lambda: len(receiver.arrived) == count + 1)  # noqa: B023
                delays.append(max(receiver.arrived.values()) - answered)
    finally:
        await server.stop()
    # Polling alone would wait up to a second, half a second on average.
    assert max(delays) < 0.5, delays


async def test_a_receiver_down_then_a_sigkill_loses_no_event_and_keeps_the_order(
    tmp_path, receiver
):
    await receiver.stop()  # the application is down: connections are refused
    server = ServerProcess(tmp_path / "data", server_env(receiver))
    await server.start()
    try:
        first = await upload(server.base, b"first")
        second = await upload(server.base, b"second")
        await delete(server.base, first)
        # Committed, not delivered: the server dies with every event still pending.
        await until(lambda: any(attempts > 0 for _, _, attempts in outbox(tmp_path / "data")))
        server.signal(signal.SIGKILL)
        assert await server.wait() == -signal.SIGKILL
        assert {state for _, state, _ in outbox(tmp_path / "data")} == {"pending"}

        await server.start()
        await asyncio.sleep(1)
        await receiver.start()  # back: every event arrives, each media's in order
        await until(lambda: len(receiver.received) == 5, seconds=60)
    finally:
        await server.stop()
    assert receiver.types(first) == ["upload.created", "media.ready", "media.deleted"]
    assert receiver.types(second) == ["upload.created", "media.ready"]


async def test_an_event_never_acknowledged_is_kept_as_dead_and_can_be_sent_again(
    tmp_path, receiver
):
    receiver.status = 503
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir, server_env(receiver, MEDIAGATE_WEBHOOK_RETRY_FOR="2"))
    await server.start()
    try:
        media_id = await upload(server.base, b"never acknowledged")
        await until(lambda: [state for _, state, _ in outbox(data_dir)][:1] == ["dead"])
        assert receiver.attempts >= 2  # retried within the window
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{server.base}/metrics") as answer:
                text = await answer.text()
        assert 'mediagate_events{state="dead"} 1.0' in text
    finally:
        await server.stop()
    assert receiver.received == []
    assert outbox(data_dir)[0][:2] == ("upload.created", "dead")

    listed = mediagate_events(data_dir, "--dead")
    assert listed.returncode == 0, listed.stderr
    dead_id, dead_type, dead_media = listed.stdout.splitlines()[0].split("\t")[:3]
    assert (dead_type, dead_media) == ("upload.created", media_id)
    assert "HTTP 503" in listed.stdout

    # The application is fixed: the operator sends the dead events again.
    receiver.status = 204
    for line in listed.stdout.splitlines():
        retried = mediagate_events(data_dir, "--retry", line.split("\t")[0])
        assert retried.returncode == 0, retried.stderr
    unknown = mediagate_events(data_dir, "--retry", "msg_nope")
    assert unknown.returncode == 1
    assert "no dead event msg_nope" in unknown.stderr
    await server.start()
    try:
        await until(lambda: len(receiver.types(media_id)) == 2)
    finally:
        await server.stop()
    assert receiver.types(media_id) == ["upload.created", "media.ready"]
    assert receiver.received[0]["id"] == dead_id


def mediagate_events(data_dir: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mediagate", "events", *arguments],
        env={"PATH": "/usr/bin:/bin", "MEDIAGATE_DATA_DIR": str(data_dir)},
        cwd=data_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_receiver_that_never_answers_holds_one_connection_for_the_timeout(
    tmp_path, receiver
):
    receiver.hang = True
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir, server_env(receiver, MEDIAGATE_WEBHOOK_TIMEOUT="1"))
    await server.start()
    try:
        for number in range(3):  # three media: three events due at once
            await upload(server.base, f"file {number}".encode())
        connections = []
        loop = asyncio.get_running_loop()
        watch_until = loop.time() + 2.5  # two timeouts and more
        while receiver.attempts < 3 or loop.time() < watch_until:
            connections.append(open_connections_to(receiver.port))
            await asyncio.sleep(0.02)
        receiver.hang = False
        await until(lambda: len(receiver.received) == 6, seconds=60)
    finally:
        await server.stop()
    # The sender's side: one open connection at a time, dropped after the timeout.
    assert max(connections) == 1, connections
    with sqlite3.connect(data_dir / CATALOG_FILE) as db:
        errors = {row[0] for row in db.execute("SELECT last_error FROM events")}
    assert errors == {None}  # delivered in the end: the last attempt's error is cleared


def open_connections_to(port: int) -> int:
    """Established TCP connections to 127.0.0.1:`port` from a client on this machine."""
    target = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(1 for row in rows if row[2] == target and row[3] == "01")


async def test_410_stops_that_endpoint_for_that_event_only(tmp_path, receiver):
    other = Receiver(WHSEC)
    await other.start()
    receiver.status = 410
    env = server_env(receiver)
    env["MEDIAGATE_WEBHOOK_URL"] = f"{receiver.events_url},{other.events_url}"
    server = ServerProcess(tmp_path / "data", env)
    await server.start()
    try:
        media_id = await upload(server.base, b"gone")
        await until(lambda: len(other.types(media_id)) == 2)
        await until(lambda: receiver.attempts >= 2)
        await asyncio.sleep(1.5)
    finally:
        await server.stop()
        await other.stop()
    assert receiver.attempts == 2  # each event tried once there, never again
    states = outbox(tmp_path / "data")
    assert sorted(state for _, state, _ in states) == ["delivered"] * 2 + ["gone"] * 2


async def test_two_instances_on_one_postgresql_deliver_each_event_once(
    tmp_path, receiver, postgres_server
):
    url = postgres_server.new_database()
    shared = tmp_path / "data"
    env = server_env(receiver, MEDIAGATE_DATABASE_URL=url)
    servers = [ServerProcess(shared, env) for _ in range(2)]
    for server in servers:
        await server.start()
    try:
        media = await asyncio.gather(
            *(upload(servers[n % 2].base, f"file {n}".encode()) for n in range(8))
        )
        await until(lambda: len(receiver.received) == 16, seconds=60)
        await asyncio.sleep(1)
    finally:
        for server in servers:
            await server.stop()
    assert len(receiver.ids) == len(set(receiver.ids)) == 16
    for media_id in media:
        assert receiver.types(media_id) == ["upload.created", "media.ready"]


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def delivery(attempts: int = 0, age: float = 0) -> Delivery:
    return Delivery(
        seq=1,
        id="msg_1",
        endpoint="http://127.0.0.1:9/hooks",
        media_id="m1",
        type="media.ready",
        body="{}",
        state=DeliveryState.PENDING,
        attempts=attempts,
        created_at=NOW - timedelta(seconds=age),
        last_error=None,
    )


@pytest.mark.parametrize(
    ("status", "attempts", "age", "retry_for", "state", "delay"),
    [
        (200, 0, 0, 60, DeliveryState.DELIVERED, None),
        (204, 5, 0, 60, DeliveryState.DELIVERED, None),
        (410, 0, 0, 60, DeliveryState.GONE, None),
        (500, 0, 0, 86400, DeliveryState.PENDING, 1.0),
        (429, 3, 0, 86400, DeliveryState.PENDING, 8.0),
        (None, 30, 0, 86400, DeliveryState.PENDING, MAX_BACKOFF),
        (503, 10, 0, 60, DeliveryState.PENDING, 6.0),  # at most a tenth of the window
        (503, 10, 58, 60, DeliveryState.PENDING, 2.0),  # never past the window's end
        (503, 1, 60, 60, DeliveryState.DEAD, None),
        (None, 0, 61, 60, DeliveryState.DEAD, None),
    ],
)
def test_settle(status, attempts, age, retry_for, state, delay):
    outcome = settle(delivery(attempts, age), status, "refused", NOW, retry_for, jitter=0.9999999)
    assert outcome.state is state
    if delay is None:
        assert outcome.next_at is None
    else:
        assert (outcome.next_at - NOW).total_seconds() == pytest.approx(delay, abs=1e-3)
    if state is DeliveryState.PENDING:
        assert outcome.error == ("refused" if status is None else f"HTTP {status}")


def test_jitter_spreads_the_retries_over_the_second_half_of_the_back_off():
    low = settle(delivery(3), 500, None, NOW, 86400, jitter=0.0)
    assert low.next_at - NOW == timedelta(seconds=4)
