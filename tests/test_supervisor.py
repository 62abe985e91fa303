"""`mediagate serve --workers N` as a real process tree: refusal, serving, restart, drain.

Several workers need the PostgreSQL catalog, where the upload rules hold across
processes (`supervisor.several_processes_refusal`); the tests of real
multi-process serving run on a PostgreSQL the tests start themselves.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import mediagate
from mediagate import tokens
from support.api import JWT_SECRET
from support.metrics import parse
from support.raw_http import CHUNK, PIECES, read_answer
from support.server_process import ServerProcess, free_port

SOURCE = str(Path(mediagate.__file__).parents[1])
# Only to show what the supervisor does with a bad setting its workers meet (on SQLite,
# which several workers are otherwise refused).
ALLOWED = (
    "import sys, mediagate.supervisor as supervisor\n"
    "supervisor.several_processes_refusal = lambda settings: None\n"
    "from mediagate.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


SERVER_ENV = {
    "MEDIAGATE_JWT_SECRET": JWT_SECRET,
    "MEDIAGATE_HOST": "127.0.0.1",
    "MEDIAGATE_SHUTDOWN_TIMEOUT": "10",
    "USE_CLOUD_STORAGE": "false",
}


def environment(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    """What a one-shot `mediagate serve` run (expected to refuse) gets."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [SOURCE, os.environ.get("PYTHONPATH")])),
        "MEDIAGATE_DATA_DIR": str(data_dir),
        "MEDIAGATE_PORT": str(port),
        "MEDIAGATE_LOG_FORMAT": "json",
        **SERVER_ENV,
        **extra,
    }


def workers_of(server: ServerProcess) -> list[int]:
    pid = server.process.pid
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.fixture
async def supervised(tmp_path: Path, postgres_server: Any) -> AsyncIterator[Any]:
    """Start `mediagate serve --workers N` on a PostgreSQL catalog of its own."""
    started: list[ServerProcess] = []
    database_url = postgres_server.new_database()

    async def start(workers: int = 2, **extra_env: str) -> ServerProcess:
        env = {**SERVER_ENV, "MEDIAGATE_DATABASE_URL": database_url, **extra_env}
        server = ServerProcess(tmp_path / "data", env, arguments=["--workers", str(workers)])
        started.append(server)
        await server.start()  # one worker answering is enough for it: wait for them all
        async with asyncio.timeout(30):
            while server.events.count("server.listening") < workers:
                await asyncio.sleep(0.05)
        return server

    yield start
    for server in started:
        await server.stop()  # the workers follow: they die with their parent


@pytest.mark.parametrize(
    ("arguments", "extra_env"),
    [(["--workers", "2"], {}), ([], {"MEDIAGATE_WORKERS": "3"})],
    ids=["flag", "env"],
)
def test_several_workers_are_refused_in_one_line(tmp_path, arguments, extra_env):
    result = subprocess.run(
        [sys.executable, "-m", "mediagate", "serve", *arguments],
        cwd=tmp_path,
        env=environment(tmp_path / "data", free_port(), **extra_env),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("mediagate: invalid setting MEDIAGATE_WORKERS")
    assert not (tmp_path / "data").exists(), "nothing may start before the refusal"


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_worker_count_below_one_is_refused(tmp_path, value):
    for arguments, extra_env in ((["--workers", value], {}), ([], {"MEDIAGATE_WORKERS": value})):
        result = subprocess.run(
            [sys.executable, "-m", "mediagate", "serve", *arguments],
            cwd=tmp_path,
            env=environment(tmp_path / "data", free_port(), **extra_env),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2
        assert "--workers" in result.stderr or "MEDIAGATE_WORKERS" in result.stderr


async def upload(http: aiohttp.ClientSession, url: str, data: bytes) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {tokens.issue(JWT_SECRET.encode(), 'alice', 3600)}"}
    async with http.post(
        f"{url}/api/v1/media/upload/initiate",
        json={"filename": "clip.mp4", "size": len(data)},
        headers=auth,
    ) as answer:
        assert answer.status == 201
        session_id = (await answer.json())["session_id"]
    base = f"{url}/api/v1/media/upload/{session_id}"
    async with http.post(f"{base}/chunk/0", data=data, headers=auth) as answer:
        assert answer.status == 200
    async with http.post(f"{base}/complete", headers=auth) as answer:
        assert answer.status == 201
        return dict(await answer.json())


async def test_two_workers_take_uploads_and_serve_ranges(supervised):
    async with aiohttp.ClientSession() as http:
        server = await supervised(2)
        assert len(workers_of(server)) == 2
        media = await upload(http, server.base, CHUNK)

        async def ranged(start: int) -> None:
            headers = {"Range": f"bytes={start}-{start + 999}"}
            async with (
                aiohttp.ClientSession() as own_connection,  # spread over the workers
                own_connection.get(media["stream_url"], headers=headers) as answer,
            ):
                assert answer.status == 206
                assert await answer.read() == CHUNK[start : start + 1000]

        await asyncio.gather(*(ranged(start) for start in range(0, 200_000, 10_000)))
        assert await server.terminate() == 0
    assert server.events.count("server.stopped") == 2
    assert server.events[-1] == "supervisor.stopped"


async def test_a_worker_that_dies_is_replaced_and_the_port_keeps_answering(supervised):
    server = await supervised(2)
    victim, survivor = workers_of(server)
    os.kill(victim, signal.SIGKILL)
    died = await server.logged("worker.died")
    assert (died["pid"], died["status"]) == (victim, -signal.SIGKILL)
    assert died["restart_in_seconds"] > 0
    # The shared socket stays open: the other worker answers meanwhile.
    for _ in range(5):
        async with aiohttp.ClientSession() as fresh, fresh.get(f"{server.base}/healthz") as ok:
            assert ok.status == 200
    async with asyncio.timeout(10):
        while len(workers_of(server)) < 2:
            await asyncio.sleep(0.1)
    replacement = set(workers_of(server)) - {survivor}
    assert replacement and victim not in replacement
    async with asyncio.timeout(10):
        while server.events.count("server.listening") < 3:
            await asyncio.sleep(0.1)
    assert await server.terminate() == 0


async def test_sigterm_drains_every_worker_and_the_chunk_in_flight_finishes(supervised):
    token = tokens.issue(JWT_SECRET.encode(), "alice", 3600)
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        server = await supervised(2)
        async with http.post(
            f"{server.base}/api/v1/media/upload/initiate",
            json={"filename": "slow.bin", "size": len(CHUNK)},
            headers=auth,
        ) as created:
            session_id = (await created.json())["session_id"]

        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = (
            f"POST /api/v1/media/upload/{session_id}/chunk/0 HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Length: {len(CHUNK)}\r\n\r\n"
        )
        writer.write(head.encode())
        size = len(CHUNK) // PIECES
        pieces = [CHUNK[i : i + size] for i in range(0, len(CHUNK), size)]
        writer.write(pieces[0])
        await writer.drain()
        await asyncio.sleep(0.5)  # the handler is reading the body now

        server.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            while server.events.count("server.stopping") < 2:
                await asyncio.sleep(0.05)
        in_flight = [
            line["in_flight"] for line in server.lines if line["event"] == "server.stopping"
        ]
        assert sorted(in_flight) == [0, 1]
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", server.port)
        for piece in pieces[1:]:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.2)
        status, body = await read_answer(reader)
        writer.close()
        assert status == 200, body
        assert json.loads(body)["received_chunks"] == 1
        assert await server.wait(15) == 0
        stopped = [line for line in server.lines if line["event"] == "worker.stopped"]
        assert [line["status"] for line in stopped] == [0, 0]

        # One process on the same data directory: the chunk was kept.
        restarted = await supervised(1)
        async with http.get(
            f"{restarted.base}/api/v1/media/upload/{session_id}", headers=auth
        ) as s:
            assert (await s.json())["received"] == [0]
        assert await restarted.terminate() == 0


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[Any, float]:
    """One /metrics answer's samples, less those of the scrapes themselves."""
    async with http.get(f"{url}/metrics") as answer:
        assert answer.status == 200
        samples = parse(await answer.text())
    return {key: value for key, value in samples.items() if ("route", "/metrics") not in key[1]}


async def test_one_scrape_counts_every_worker_and_a_dead_one_s_requests_stay(supervised, tmp_path):
    requests = 40
    refused = (
        "mediagate_http_request_duration_seconds_count",
        frozenset({("method", "GET"), ("route", "/api/v1/media"), ("status_class", "4xx")}),
    )
    started = ("mediagate_uploads_started_total", frozenset({("storage", "local")}))
    sessions = ("mediagate_upload_sessions_in_flight", frozenset())
    auth = {"Authorization": f"Bearer {tokens.issue(JWT_SECRET.encode(), 'alice', 3600)}"}
    # A connection per request: the kernel spreads connections over the workers.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        (tmp_path / "tmp").mkdir()
        server = await supervised(2, TMPDIR=str(tmp_path / "tmp"))
        for _ in range(requests):
            async with http.get(f"{server.base}/api/v1/media") as answer:
                assert answer.status == 401
        await upload(http, server.base, CHUNK)  # a session opened and completed
        for _ in range(2):  # and two left open
            async with http.post(
                f"{server.base}/api/v1/media/upload/initiate",
                json={"filename": "open.bin", "size": 10},
                headers=auth,
            ) as answer:
                assert answer.status == 201

        scrapes = [await scrape(http, server.base) for _ in range(8)]
        assert [(s[refused], s[started], s[sessions]) for s in scrapes] == [(requests, 3, 2)] * 8
        assert all(later == scrapes[0] for later in scrapes[1:])

        os.kill(workers_of(server)[0], signal.SIGKILL)
        async with asyncio.timeout(20):
            while server.events.count("server.listening") < 3:
                await asyncio.sleep(0.1)
        for _ in range(4):
            after = await scrape(http, server.base)
            assert (after[refused], after[started], after[sessions]) == (requests, 3, 2)
        (shared,) = (tmp_path / "tmp").iterdir()
        assert shared.name.startswith("mediagate-metrics-") and any(shared.glob("*.db"))
        assert await server.terminate() == 0
    assert not any((tmp_path / "tmp").iterdir()), "the next start must not add in these counts"


def test_a_bad_setting_met_by_the_workers_stops_the_server_with_status_2(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / tokens.SECRET_FILE).write_bytes(b"abc\n")  # too short to sign with
    env = environment(tmp_path / "data", free_port())
    del env["MEDIAGATE_JWT_SECRET"]
    result = subprocess.run(
        [sys.executable, "-c", ALLOWED, "serve", "--workers", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    refusals = {line for line in result.stderr.splitlines() if line.startswith("mediagate:")}
    assert len(refusals) == 1 and tokens.SECRET_FILE in refusals.pop()
    log = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    events = [line["event"] for line in log]
    assert "worker.died" not in events, "a bad setting is not worth a restart"
    assert events[-1] == "supervisor.stopped"
