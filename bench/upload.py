"""Upload benchmark: mediagate's chunk API against aiobotocore straight into S3.

Starts a moto S3 server and `python -m mediagate serve` as child processes on
loopback, then runs, round by round and interleaved (mediagate, direct,
mediagate, direct, …), N concurrent uploads through mediagate's API and the
same bytes as plain aiobotocore multipart uploads into the same moto server.
Prints throughput medians, their ratio, the server's CPU seconds per GiB and
its resident memory; the `rss` scenario pushes 8 × one 64 MiB chunk at once
and reports the server's peak RSS. `--protocol tus` (or `both`) uploads the
same bytes through tus 1.0 as well: creation, then PATCHes of --patch-size
(default: the whole file in one PATCH, as tus-js-client and tuspy do).
`--protocol ietf` uploads them through the IETF resumable-upload draft (one POST
with `Upload-Complete: ?1` and the whole body, interop version 8, its 104 read
and skipped by aiohttp) against the native path without digest, and prints the
IETF/native ratios of MB/s and server CPU per GiB (target: within 5 %; give
`--parallel 1` so that both have one part in flight).
`--webhooks` instead compares a server sending webhooks to a loopback receiver
with one that sends none, round by round.

Run from the repository root: `python bench/upload.py --quick` (see --help).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import functools
import hashlib
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp import web

from _common import (
    GiB,
    MiB,
    Service,
    child_process,
    cpu_seconds,
    free_port,
    interrupt_on_signals,
    machine_busy_seconds,
    mediagate_server,
    median,
    memory_bytes,
    moto_server,
    parse_size,
    render_table,
    reset_peak_rss,
    tail,
    wait_until_answering,
)

DIGESTS = ("none", "md5", "sha256")
PROTOCOLS = ("native", "tus", "both", "ietf")
TUS = "tus"
IETF = "ietf"
IETF_TARGET = 0.05  # IETF at most 5 % slower than native, and at most 5 % more server CPU/GiB
TUS_HEADERS = {"Tus-Resumable": "1.0.0"}
TUS_BIG_PATCH = 256 * MiB
BARE = "bare"  # --bare-relay: the relay's floor (bench/_bare_relay.py)
PATH_NAMES = {
    "direct": "direct aiobotocore",
    TUS: "mediagate tus",
    IETF: "mediagate ietf",
    BARE: "bare relay",
}
TARGET_BARE_CPU_RATIO = 1.4
SCENARIOS = ("throughput", "rss", "all")
USER = "bench"
# The load generator never holds a file: every body is this block, repeated.
BLOCK = os.urandom(MiB)
MB = 1_000_000

TARGET_RATIO = 0.95
TARGET_PEAK_RSS = 150 * MiB
TARGET_CPU_PER_GIB = 1.0

NORMAL = {"clients": 4, "size": 64 * MiB, "chunk_size": 8 * MiB, "parallel": 4, "rounds": 5}
QUICK = {"clients": 2, "size": 64 * MiB, "chunk_size": 8 * MiB, "parallel": 4, "rounds": 3}
RSS_CLIENTS = 8
RSS_CHUNK = 64 * MiB
# moto holds about three copies of a round's bytes (parts, the joined object, its buffer).
MOTO_IN_MEMORY = 64 * MiB + 1
MOTO_IN_MEMORY_ROUND = GiB
# Cores busy outside our three processes (kernel threads, other jobs) above which
# the machine is not quiet enough for the figures to mean much.
OTHER_LOAD_WARNING = 0.25

NOTE = (
    "note: moto is a pure-Python S3 (CPU hungry, keeps parts in memory or temp files), and\n"
    "      moto, the mediagate server and this load client share the machine's "
    f"{os.cpu_count()} cores:\n"
    "      absolute MB/s are moto's limit, not S3's; compare the ratio. Figures are medians.\n"
    "      MB = 10^6 bytes. The direct path uses mediagate's streaming S3 settings and no digest."
)


# --- the bytes ---------------------------------------------------------------------


class RepeatedBody:
    """`length` bytes of BLOCK repeated, read piecewise: a body for aiohttp and botocore."""

    def __init__(self, length: int) -> None:
        self._remaining = length
        self._offset = 0

    async def read(self, n: int = -1) -> bytes:
        left_in_block = len(BLOCK) - self._offset
        want = min(left_in_block if n < 0 else min(n, left_in_block), self._remaining)
        piece = BLOCK if want == len(BLOCK) else BLOCK[self._offset : self._offset + want]
        self._offset = (self._offset + want) % len(BLOCK)
        self._remaining -= want
        return piece

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while piece := await self.read():
            yield piece


@functools.cache
def digest_headers(digest: str, length: int) -> dict[str, str]:
    """The chunk-check header for a RepeatedBody of `length` bytes (computed once per length)."""
    if digest == "none":
        return {}
    hasher = hashlib.new(digest)
    whole, rest = divmod(length, len(BLOCK))
    for _ in range(whole):
        hasher.update(BLOCK)
    hasher.update(BLOCK[:rest])
    if digest == "md5":
        return {"Content-MD5": base64.b64encode(hasher.digest()).decode()}
    return {"X-Chunk-SHA256": hasher.hexdigest()}


def chunk_lengths(size: int, chunk_size: int) -> list[int]:
    whole, rest = divmod(size, chunk_size)
    return [chunk_size] * whole + ([rest] if rest else [])


async def gather_bounded(limit: int, jobs: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


# --- the two ways into S3 ------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    clients: int
    size: int
    chunk_size: int
    parallel: int

    @property
    def total_bytes(self) -> int:
        return self.clients * self.size


@dataclass(frozen=True)
class Session:
    id: str
    chunk_size: int
    total_chunks: int
    size: int

    def chunk_length(self, number: int) -> int:
        return min(self.chunk_size, self.size - number * self.chunk_size)


class MediagateClient:
    """One user of mediagate's native upload API."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self._http = http
        self._base = base_url
        self._auth = {"Authorization": f"Bearer {token}"}

    async def upload(self, size: int, chunk_size: int, parallel: int, digest: str) -> str:
        """Initiate, send every chunk (`parallel` at a time), complete; the media id."""
        session = await self.initiate(size, chunk_size)
        await gather_bounded(
            parallel,
            [
                functools.partial(self.put_chunk, session, n, digest)
                for n in range(session.total_chunks)
            ],
        )
        return await self.complete(session.id)

    async def initiate(self, size: int, chunk_size: int) -> Session:
        answer = await self._call(
            "POST",
            "/api/v1/media/upload/initiate",
            201,
            json={"filename": "bench.mp4", "size": size, "chunk_size": chunk_size},
        )
        return Session(answer["session_id"], answer["chunk_size"], answer["total_chunks"], size)

    async def put_chunk(self, session: Session, number: int, digest: str) -> None:
        length = session.chunk_length(number)
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(length),
            **digest_headers(digest, length),
        }
        await self._call(
            "POST",
            f"/api/v1/media/upload/{session.id}/chunk/{number}",
            200,
            data=RepeatedBody(length),
            headers=headers,
        )

    async def complete(self, session_id: str) -> str:
        answer = await self._call("POST", f"/api/v1/media/upload/{session_id}/complete", 201)
        return answer["media_id"]

    async def delete(self, media_id: str) -> None:
        await self._call("DELETE", f"/api/v1/media/delete/{media_id}", 204)

    async def _call(
        self,
        method: str,
        path: str,
        expected: int,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> Any:
        async with self._http.request(
            method, self._base + path, headers={**self._auth, **(headers or {})}, **kw
        ) as response:
            if response.status != expected:
                text = await response.text()
                raise RuntimeError(f"{method} {path}: {response.status} {text[:300]}")
            return await response.json() if response.status != 204 else None


class TusUploadClient:
    """One user of mediagate's tus endpoint: a raw PATCH client, the bytes streamed."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self._http = http
        self._base = base_url
        self._auth = {"Authorization": f"Bearer {token}", **TUS_HEADERS}

    async def create(self, size: int) -> str:
        headers = {**self._auth, "Upload-Length": str(size)}
        async with self._http.post(f"{self._base}/api/v1/tus", headers=headers) as answer:
            if answer.status != 201:
                raise RuntimeError(f"tus POST: {answer.status} {(await answer.text())[:300]}")
            return answer.headers["Location"].rsplit("/", 1)[-1]

    async def upload(self, size: int, patch_size: int | None) -> None:
        upload = await self.create(size)
        offset = 0
        while offset < size:
            offset = await self.patch(upload, offset, min(patch_size or size, size - offset))

    async def patch(self, upload: str, offset: int, length: int) -> int:
        headers = {
            **self._auth,
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(length),
            "Upload-Offset": str(offset),
        }
        async with self._http.patch(
            f"{self._base}/api/v1/tus/{upload}", headers=headers, data=RepeatedBody(length)
        ) as answer:
            if answer.status != 204:
                raise RuntimeError(f"tus PATCH: {answer.status} {(await answer.text())[:300]}")
            return int(answer.headers["Upload-Offset"])

    async def delete_all_media(self) -> None:
        """tus answers carry no media id: the bench user's media are listed and deleted."""
        while True:
            async with self._http.get(
                f"{self._base}/api/v1/media?limit=200", headers=self._auth
            ) as answer:
                items = (await answer.json())["items"]
            if not items:
                return
            for item in items:
                async with self._http.delete(
                    f"{self._base}/api/v1/media/delete/{item['media_id']}", headers=self._auth
                ) as answer:
                    assert answer.status == 204, answer.status


class IetfUploadClient:
    """One user of mediagate's IETF resumable uploads: the whole file in the creation POST."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self._http = http
        self._base = base_url
        self._auth = {"Authorization": f"Bearer {token}", "Upload-Draft-Interop-Version": "8"}

    async def upload(self, size: int) -> str:
        """The media id; aiohttp reads past the 104 to the final answer."""
        headers = {
            **self._auth,
            "Upload-Complete": "?1",
            "Content-Type": "video/mp4",
            "Content-Length": str(size),
        }
        async with self._http.post(
            f"{self._base}/api/v1/uploads", headers=headers, data=RepeatedBody(size)
        ) as answer:
            if answer.status != 201:
                raise RuntimeError(f"ietf POST: {answer.status} {(await answer.text())[:300]}")
            return str((await answer.json())["media_id"])


def streaming_s3_config(connections: int) -> AioConfig:
    # The settings of mediagate's streaming client (storage/s3.py), so both
    # paths ask moto for the same thing: unsigned payload, no CRC, one attempt.
    return AioConfig(
        s3={"addressing_style": "path", "payload_signing_enabled": False},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"total_max_attempts": 1},
        connect_timeout=5,
        read_timeout=120,
        max_pool_connections=connections,
    )


class DirectClient:
    """The same bytes as plain aiobotocore multipart uploads."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    async def upload(self, key: str, size: int, chunk_size: int, parallel: int) -> str:
        created = await self._s3.create_multipart_upload(Bucket=self._bucket, Key=key)
        upload_id = created["UploadId"]
        lengths = chunk_lengths(size, chunk_size)
        etags = await gather_bounded(
            parallel,
            [
                functools.partial(self._put_part, key, upload_id, n, length)
                for n, length in enumerate(lengths)
            ],
        )
        parts = [{"PartNumber": n + 1, "ETag": etag} for n, etag in enumerate(etags)]
        await self._s3.complete_multipart_upload(
            Bucket=self._bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        return key

    async def _put_part(self, key: str, upload_id: str, number: int, length: int) -> str:
        answer = await self._s3.upload_part(
            Bucket=self._bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number + 1,
            ContentLength=length,
            Body=RepeatedBody(length),
        )
        return answer["ETag"]

    async def delete(self, key: str) -> None:
        await self._s3.delete_object(Bucket=self._bucket, Key=key)

    async def empty_bucket(self) -> None:
        """Remove whatever a failed phase left (objects and open multipart uploads)."""
        listing = await self._s3.list_objects_v2(Bucket=self._bucket)
        for item in listing.get("Contents", []):
            await self._s3.delete_object(Bucket=self._bucket, Key=item["Key"])
        uploads = await self._s3.list_multipart_uploads(Bucket=self._bucket)
        for upload in uploads.get("Uploads", []):
            await self._s3.abort_multipart_upload(
                Bucket=self._bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )


class BareRelayClient(DirectClient):
    """The same bytes through bench/_bare_relay.py: each part a plain PUT to a URL this
    client presigns; the multipart upload made and completed by this client."""

    def __init__(self, http: aiohttp.ClientSession, s3: Any, bucket: str, relay: str) -> None:
        super().__init__(s3, bucket)
        self._http = http
        self._relay = relay

    async def _put_part(self, key: str, upload_id: str, number: int, length: int) -> str:
        url = await self._s3.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": self._bucket,
                "Key": key,
                "UploadId": upload_id,
                "PartNumber": number + 1,
            },
        )
        async with self._http.put(
            f"{self._relay}/relay",
            params={"url": url},
            data=RepeatedBody(length),
            headers={"Content-Length": str(length)},
        ) as answer:
            if answer.status != 200:
                raise RuntimeError(f"bare relay: {answer.status} {(await answer.text())[:300]}")
            return str((await answer.json())["etag"])


@contextlib.contextmanager
def bare_relay_server(workdir: Path) -> Iterator[Service]:
    port = free_port()
    log_path = workdir / "bare-relay.log"
    command = [sys.executable, str(Path(__file__).with_name("_bare_relay.py")), str(port)]
    with child_process(command, dict(os.environ), log_path) as process:
        service = Service(f"http://127.0.0.1:{port}", process, log_path)
        wait_until_answering(service.url + "/", process, log_path)
        yield service


# --- measuring ------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One timed batch of uploads, and the CPU each process spent on it."""

    seconds: float
    bytes: int
    server_cpu: float
    moto_cpu: float
    client_cpu: float
    machine_busy: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / MB

    @property
    def other_cores(self) -> float:
        """Cores kept busy by anything but moto, the server and this client."""
        ours = self.server_cpu + self.moto_cpu + self.client_cpu
        return max(self.machine_busy - ours, 0.0) / self.seconds

    def per_gib(self, cpu: float) -> float:
        return cpu / (self.bytes / GiB)


@dataclass(frozen=True)
class Services:
    moto: Service
    server: Service
    bare: Service | None = None


async def measure(
    services: Services, total_bytes: int, run: Callable[[], Awaitable[Any]]
) -> tuple[Phase, Any]:
    server_before, moto_before = cpu_seconds(services.server.pid), cpu_seconds(services.moto.pid)
    client_before, machine_before = time.process_time(), machine_busy_seconds()
    started = time.perf_counter()
    result = await run()
    seconds = time.perf_counter() - started
    phase = Phase(
        machine_busy=machine_busy_seconds() - machine_before,
        seconds=seconds,
        bytes=total_bytes,
        server_cpu=cpu_seconds(services.server.pid) - server_before,
        moto_cpu=cpu_seconds(services.moto.pid) - moto_before,
        client_cpu=time.process_time() - client_before,
    )
    return phase, result


@dataclass
class Bench:
    services: Services
    mediagate: MediagateClient
    direct: DirectClient
    tus: TusUploadClient
    ietf: IetfUploadClient
    patch_size: int | None = None
    # --bare-relay: its client, and the services with the relay as the server.
    bare: tuple[BareRelayClient, Services] | None = None

    async def mediagate_phase(self, load: Workload, digest: str) -> Phase:
        for length in set(chunk_lengths(load.size, load.chunk_size)):
            digest_headers(digest, length)  # hashed here, not in the timed phase

        async def run() -> list[str]:
            return await asyncio.gather(
                *(
                    self.mediagate.upload(load.size, load.chunk_size, load.parallel, digest)
                    for _ in range(load.clients)
                )
            )

        phase, media_ids = await measure(self.services, load.total_bytes, run)
        for media_id in media_ids:
            await self.mediagate.delete(media_id)
        return phase

    async def tus_phase(self, load: Workload) -> Phase:
        async def run() -> list[None]:
            return await asyncio.gather(
                *(self.tus.upload(load.size, self.patch_size) for _ in range(load.clients))
            )

        phase, _ = await measure(self.services, load.total_bytes, run)
        await self.tus.delete_all_media()
        return phase

    async def ietf_phase(self, load: Workload) -> Phase:
        async def run() -> list[str]:
            return await asyncio.gather(*(self.ietf.upload(load.size) for _ in range(load.clients)))

        phase, media_ids = await measure(self.services, load.total_bytes, run)
        for media_id in media_ids:
            await self.mediagate.delete(media_id)
        return phase

    async def direct_phase(self, load: Workload) -> Phase:
        keys = [f"direct/{uuid.uuid4().hex}/bench.mp4" for _ in range(load.clients)]

        async def run() -> list[str]:
            return await asyncio.gather(
                *(
                    self.direct.upload(key, load.size, load.chunk_size, load.parallel)
                    for key in keys
                )
            )

        phase, _ = await measure(self.services, load.total_bytes, run)
        for key in keys:
            await self.direct.delete(key)
        return phase

    async def bare_phase(self, load: Workload) -> Phase:
        assert self.bare is not None
        client, services = self.bare
        keys = [f"bare/{uuid.uuid4().hex}/bench.mp4" for _ in range(load.clients)]

        async def run() -> list[str]:
            return await asyncio.gather(
                *(client.upload(key, load.size, load.chunk_size, load.parallel) for key in keys)
            )

        phase, _ = await measure(services, load.total_bytes, run)
        for key in keys:
            await self.direct.delete(key)
        return phase

    async def warm_up(self) -> None:
        """Connections, lazily loaded botocore models, SQLite: paid before any timing."""
        small = Workload(clients=1, size=6 * MiB, chunk_size=6 * MiB, parallel=1)
        await self.mediagate_phase(small, "none")
        await self.tus_phase(small)
        await self.ietf_phase(small)
        await self.direct_phase(small)
        if self.bare is not None:
            await self.bare_phase(small)
        await self.direct.empty_bucket()


async def throughput_rounds(
    bench: Bench, load: Workload, digests: Sequence[str], rounds: int, retries: int
) -> dict[str, list[Phase]]:
    """`rounds` rounds, each running every mediagate digest mode and the direct path once.

    Odd rounds go mediagate first, even rounds direct first (A B, B A, …), so a
    drift of moto's speed over the run does not favour either side. A round
    during which other processes kept the CPU busy is run again, `retries`
    times at most over the whole run.
    """
    phases: dict[str, list[Phase]] = {name: [] for name in (*digests, "direct")}
    done = discarded = 0
    while done < rounds:
        mediagate_first = done % 2 == 0
        result = await one_round(bench, load, digests, mediagate_first)
        await bench.direct.empty_bucket()
        other = max(phase.other_cores for phase in result.values())
        figures = ", ".join(f"{label(name)} {phase.mb_per_s:.1f}" for name, phase in result.items())
        if other > OTHER_LOAD_WARNING and discarded < retries:
            discarded += 1
            print(f"  round discarded, other load {other:.2f} cores: {figures} MB/s", flush=True)
            continue
        done += 1
        for name, phase in result.items():
            phases[name].append(phase)
        print(f"  round {done}/{rounds}: {figures} MB/s (other load {other:.2f} cores)", flush=True)
    return phases


def label(name: str) -> str:
    return name if name in ("direct", TUS, IETF, BARE) else f"mediagate/{name}"


async def one_round(
    bench: Bench, load: Workload, digests: Sequence[str], mediagate_first: bool
) -> dict[str, Phase]:
    order = [*digests, "direct"] if mediagate_first else ["direct", *reversed(digests)]
    result: dict[str, Phase] = {}
    for name in order:
        if name == "direct":
            result[name] = await bench.direct_phase(load)
        elif name == TUS:
            result[name] = await bench.tus_phase(load)
        elif name == BARE:
            result[name] = await bench.bare_phase(load)
        elif name == IETF:
            result[name] = await bench.ietf_phase(load)
        else:
            result[name] = await bench.mediagate_phase(load, name)
    return result


@dataclass(frozen=True)
class PeakRss:
    before: int
    peak: int


async def rss_scenario(bench: Bench, digest: str) -> PeakRss:
    """RSS_CLIENTS uploads each push their one RSS_CHUNK chunk at the same moment."""
    pid = bench.services.server.pid
    digest_headers(digest, RSS_CHUNK)
    sessions = await asyncio.gather(
        *(bench.mediagate.initiate(RSS_CHUNK, RSS_CHUNK) for _ in range(RSS_CLIENTS))
    )
    before = memory_bytes(pid, "VmRSS")
    if not reset_peak_rss(pid):
        print("  (cannot reset VmHWM: the peak below counts from the server's start)")
    await asyncio.gather(*(bench.mediagate.put_chunk(s, 0, digest) for s in sessions))
    peak = memory_bytes(pid, "VmHWM")
    media_ids = [await bench.mediagate.complete(s.id) for s in sessions]
    for media_id in media_ids:
        await bench.mediagate.delete(media_id)
    await bench.direct.empty_bucket()
    return PeakRss(before=before, peak=peak)


async def tus_rss_scenario(bench: Bench, clients: int, size: int) -> PeakRss:
    """`clients` tus uploads each send their `size` bytes in one PATCH at the same moment."""
    pid = bench.services.server.pid
    uploads = await asyncio.gather(*(bench.tus.create(size) for _ in range(clients)))
    before = memory_bytes(pid, "VmRSS")
    reset_peak_rss(pid)
    await asyncio.gather(*(bench.tus.patch(upload, 0, size) for upload in uploads))
    peak = memory_bytes(pid, "VmHWM")
    await bench.tus.delete_all_media()
    await bench.direct.empty_bucket()
    return PeakRss(before=before, peak=peak)


# --- webhooks on against off (--webhooks) ----------------------------------------------

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"bench-webhook-secret-32-bytes!!!").decode()


class WebhookReceiver:
    """The application's endpoint on loopback: 204 to every delivery, counted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received = 0
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhooks", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        await request.read()
        self.received += 1
        self._arrived.set()
        return web.Response(status=204)

    async def wait_for(self, count: int, seconds: float = 60) -> None:
        async with asyncio.timeout(seconds):
            while self.received < count:
                self._arrived.clear()
                await self._arrived.wait()


def webhook_env(receiver_port: int) -> dict[str, str]:
    return {
        "MEDIAGATE_WEBHOOK_URL": f"http://127.0.0.1:{receiver_port}/webhooks",
        "MEDIAGATE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }


async def webhook_phase(
    services: Services, client: MediagateClient, load: Workload, receiver: WebhookReceiver | None
) -> Phase:
    """`load` through one server, timed until the last complete; with `receiver`, the
    server's CPU counts on until the uploads' upload.created and media.ready arrived."""
    expected = receiver.received + 2 * load.clients if receiver else 0

    async def run() -> list[str]:
        return await asyncio.gather(
            *(
                client.upload(load.size, load.chunk_size, load.parallel, "none")
                for _ in range(load.clients)
            )
        )

    phase, media_ids = await measure(services, load.total_bytes, run)
    if receiver is not None:
        completed = cpu_seconds(services.server.pid)
        await receiver.wait_for(expected)
        sending = cpu_seconds(services.server.pid) - completed
        phase = dataclasses.replace(phase, server_cpu=phase.server_cpu + sending)
    for media_id in media_ids:
        await client.delete(media_id)
    if receiver is not None:
        await receiver.wait_for(expected + load.clients)  # media.deleted, outside the figures
    return phase


async def webhook_rounds(
    services: Services,
    hooked: Services,
    clients: tuple[MediagateClient, MediagateClient],
    receiver: WebhookReceiver | None,
    load: Workload,
    rounds: int,
) -> dict[str, list[Phase]]:
    """`rounds` rounds of the same uploads through the server without webhooks ("off")
    and the one with them ("on"), alternating which goes first."""
    phases: dict[str, list[Phase]] = {"off": [], "on": []}
    for number in range(rounds):
        order = ["off", "on"] if number % 2 == 0 else ["on", "off"]
        for name in order:
            if name == "off":
                phase = await webhook_phase(services, clients[0], load, None)
            else:
                phase = await webhook_phase(hooked, clients[1], load, receiver)
            phases[name].append(phase)
        figures = ", ".join(f"{n} {phases[n][-1].mb_per_s:.1f}" for n in ("off", "on"))
        other = max(phases[n][-1].other_cores for n in order)
        print(f"  round {number + 1}/{rounds}: {figures} MB/s (other load {other:.2f} cores)")
    return phases


def print_webhooks(phases: dict[str, list[Phase]], load: Workload, received: int) -> None:
    print()
    print(
        f"webhooks: {load.clients} uploads x {mib(load.size)}, chunks of {mib(load.chunk_size)}, "
        f"no digest, medians over {len(phases['off'])} rounds; {received} deliveries received"
    )
    off_speed = median([p.mb_per_s for p in phases["off"]])
    off_cpu = median([p.per_gib(p.server_cpu) for p in phases["off"]])
    rows = []
    for name, runs in phases.items():
        speeds = [p.mb_per_s for p in runs]
        cpu = median([p.per_gib(p.server_cpu) for p in runs])
        rows.append(
            [
                name,
                f"{median(speeds):.1f}",
                f"{min(speeds):.1f}-{max(speeds):.1f}",
                f"{median(speeds) / off_speed:.3f}",
                f"{cpu:.2f}",
                f"{cpu / off_cpu:.3f}",
            ]
        )
    headers = ["webhooks", "MB/s", "min-max", "ratio", "server CPU s/GiB", "CPU ratio"]
    print(render_table(headers, rows))
    pairs = list(zip(phases["off"], phases["on"], strict=True))
    speed_ratios = [on.mb_per_s / off.mb_per_s for off, on in pairs]
    cpu_ratios = [on.server_cpu / off.server_cpu for off, on in pairs]
    print(
        f"paired (on / off within each round): MB/s ratio median {median(speed_ratios):.3f} "
        f"(range {min(speed_ratios):.3f}-{max(speed_ratios):.3f}), server CPU ratio median "
        f"{median(cpu_ratios):.3f} (range {min(cpu_ratios):.3f}-{max(cpu_ratios):.3f})"
    )
    per_upload = [median([p.server_cpu for p in phases[n]]) / load.clients for n in ("off", "on")]
    print(
        f"server CPU per upload: {per_upload[0] * 1000:.0f} ms off, {per_upload[1] * 1000:.0f} ms "
        f"on (medians; the events' share is the difference, within the noise when it is small)"
    )
    print_other_load([p for runs in phases.values() for p in runs])


async def run_webhooks(
    options: argparse.Namespace, services: Services, hooked: Service, secret: str
) -> None:
    load = Workload(options.clients, options.size, options.chunk_size, options.parallel)
    listening = WebhookReceiver(options.webhook_port)
    await listening.start()
    # The control run (A/A): the second server sends nothing either, so nothing is awaited.
    receiver = None if options.webhooks_control else listening
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
    connector = aiohttp.TCPConnector(limit=load.clients * load.parallel + 8)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            token = bearer_token(secret)
            clients = (
                MediagateClient(http, services.server.url, token),
                MediagateClient(http, hooked.url, token),
            )
            with_hooks = Services(services.moto, hooked)
            warm = Workload(clients=1, size=6 * MiB, chunk_size=6 * MiB, parallel=1)
            await webhook_phase(services, clients[0], warm, None)
            await webhook_phase(with_hooks, clients[1], warm, receiver)
            what = "also none (control)" if receiver is None else "a receiver answering 204"
            print(f"webhooks rounds (off: no MEDIAGATE_WEBHOOK_URL; on: {what}):")
            phases = await webhook_rounds(
                services, with_hooks, clients, receiver, load, options.rounds
            )
            print_webhooks(phases, load, listening.received)
    finally:
        await listening.stop()
    print()
    print(NOTE)


# --- report ---------------------------------------------------------------------------


def mib(value: int) -> str:
    return f"{value / MiB:.1f} MiB"


def throughput_table(phases: dict[str, list[Phase]]) -> str:
    direct = median([p.mb_per_s for p in phases["direct"]])
    rows = []
    for name, runs in phases.items():
        speeds = [p.mb_per_s for p in runs]
        is_direct = name == "direct"
        rows.append(
            [
                PATH_NAMES.get(name, "mediagate"),
                "-" if name in PATH_NAMES else name,
                f"{median(speeds):.1f}",
                f"{min(speeds):.1f}-{max(speeds):.1f}",
                f"{median(speeds) / direct:.3f}",
                "-" if is_direct else f"{median([p.per_gib(p.server_cpu) for p in runs]):.2f}",
                f"{median([p.per_gib(p.moto_cpu) for p in runs]):.2f}",
                f"{median([p.per_gib(p.client_cpu) for p in runs]):.2f}",
            ]
        )
    headers = [
        "path",
        "digest",
        "MB/s",
        "min-max",
        "ratio",
        "server CPU s/GiB",
        "moto CPU s/GiB",
        "client CPU s/GiB",
    ]
    return render_table(headers, rows)


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def print_throughput(
    phases: dict[str, list[Phase]], load: Workload, idle: int, before: int, peak: int
) -> None:
    print()
    print(
        f"throughput: {load.clients} uploads x {mib(load.size)}, chunks of {mib(load.chunk_size)}"
        f" ({load.parallel} in flight per upload), medians over {len(phases['direct'])} rounds"
    )
    print(throughput_table(phases))
    print_other_load([p for runs in phases.values() for p in runs])
    print(
        f"server RSS: {mib(idle)} idle after start, {mib(before)} before these rounds, "
        f"peak during them (VmHWM) {mib(peak)}"
    )
    print_ietf_against_native(phases)
    direct = median([p.mb_per_s for p in phases["direct"]])
    if BARE in phases:
        print_relay_floor(phases)
    for name, runs in phases.items():
        if name in ("direct", BARE):
            continue
        ratio = median([p.mb_per_s for p in runs]) / direct
        cpu = median([p.per_gib(p.server_cpu) for p in runs])
        what = name if name in (TUS, IETF) else f"digest {name}"
        line = f"target, {what}: ratio >= {TARGET_RATIO} {verdict(ratio >= TARGET_RATIO)}"
        if name in ("none", TUS, IETF):
            cpu_met = verdict(cpu <= TARGET_CPU_PER_GIB)
            line += f"; server CPU <= {TARGET_CPU_PER_GIB} s/GiB {cpu_met}"
        print(line)


def print_relay_floor(phases: dict[str, list[Phase]]) -> None:
    """mediagate's server CPU per GiB over the bare relay's, the floor of any relay."""
    floor = median([p.per_gib(p.server_cpu) for p in phases[BARE]])
    for name, runs in phases.items():
        if name in ("direct", BARE):
            continue
        cpu = median([p.per_gib(p.server_cpu) for p in runs])
        ratio = cpu / floor
        print(
            f"relay floor, {label(name)}: server CPU {cpu:.2f} s/GiB vs bare relay "
            f"{floor:.2f}: {ratio:.2f}x (target <= {TARGET_BARE_CPU_RATIO} "
            f"{verdict(ratio <= TARGET_BARE_CPU_RATIO)})"
        )


def print_ietf_against_native(phases: dict[str, list[Phase]]) -> None:
    """The IETF upload against the native one, both without digest: MB/s and CPU ratios."""
    if IETF not in phases or "none" not in phases:
        return
    ietf, native = phases[IETF], phases["none"]
    speed = median([p.mb_per_s for p in ietf]) / median([p.mb_per_s for p in native])
    cpu = median([p.per_gib(p.server_cpu) for p in ietf]) / median(
        [p.per_gib(p.server_cpu) for p in native]
    )
    met = speed >= 1 - IETF_TARGET and cpu <= 1 + IETF_TARGET
    print(
        f"ietf / native (no digest): MB/s {speed:.3f}, server CPU per GiB {cpu:.3f}; "
        f"target within {IETF_TARGET:.0%} {verdict(met)}"
    )


def print_other_load(phases: Sequence[Phase]) -> None:
    other = [p.other_cores for p in phases]
    print(
        f"other processes on the machine: {median(other):.2f} cores (median over timed phases), "
        f"{max(other):.2f} at most"
    )
    if max(other) > OTHER_LOAD_WARNING:
        print(
            "WARNING: something else used the CPU during timed phases; MB/s and ratios are "
            "unreliable, rerun on a quiet machine"
        )


def print_rss(result: PeakRss, title: str) -> None:
    print()
    print(f"rss: {title}")
    print(
        f"server RSS {mib(result.before)} before, peak {mib(result.peak)} "
        f"(+{mib(result.peak - result.before)}); "
        f"target peak < {mib(TARGET_PEAK_RSS)} {verdict(result.peak < TARGET_PEAK_RSS)}"
    )


# --- processes and main ---------------------------------------------------------------


def bearer_token(secret: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": USER, "iat": now, "exp": now + 86400}, secret, algorithm="HS256")


async def run(options: argparse.Namespace, services: Services, bucket: str, secret: str) -> None:
    load = Workload(options.clients, options.size, options.chunk_size, options.parallel)
    digests = list(DIGESTS) if options.digest == "all" else [options.digest]
    if options.protocol == "tus":
        digests = [TUS]
    elif options.protocol == IETF:
        digests = ["none", IETF]
    elif options.protocol == "both":
        digests = [*digests, TUS]
    if options.bare_relay:
        digests = [*digests, BARE]
    native = [name for name in digests if name not in (TUS, IETF, BARE)]
    connections = max(load.clients * load.parallel, RSS_CLIENTS) + 8
    idle_rss = memory_bytes(services.server.pid, "VmRSS")
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections), timeout=timeout
        ) as http,
        get_session().create_client(
            "s3",
            region_name="us-east-1",
            endpoint_url=services.moto.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=streaming_s3_config(connections),
        ) as s3,
    ):
        bench = Bench(
            services,
            MediagateClient(http, services.server.url, bearer_token(secret)),
            DirectClient(s3, bucket),
            TusUploadClient(http, services.server.url, bearer_token(secret)),
            IetfUploadClient(http, services.server.url, bearer_token(secret)),
            options.patch_size,
        )
        if services.bare is not None:
            bare = BareRelayClient(http, s3, bucket, services.bare.url)
            bench.bare = (bare, Services(services.moto, services.bare))
        await bench.warm_up()
        # The rss scenario first, while the server's heap is as small as it gets.
        if options.scenario in ("rss", "all"):
            chunks = f"{RSS_CLIENTS} uploads each pushing one {mib(RSS_CHUNK)}"
            if native:
                result = await rss_scenario(bench, native[0])
                print_rss(result, f"{chunks} chunk at once (digest {native[0]})")
            if TUS in digests:
                result = await tus_rss_scenario(bench, RSS_CLIENTS, RSS_CHUNK)
                print_rss(result, f"{chunks} tus PATCH at once")
                result = await tus_rss_scenario(bench, 1, TUS_BIG_PATCH)
                print_rss(result, f"one tus upload of {mib(TUS_BIG_PATCH)} in one PATCH")
        if options.scenario in ("throughput", "all"):
            print(f"throughput rounds ({', '.join(digests)} vs direct):", flush=True)
            before = memory_bytes(services.server.pid, "VmRSS")
            reset_peak_rss(services.server.pid)
            phases = await throughput_rounds(bench, load, digests, options.rounds, options.retries)
            peak = memory_bytes(services.server.pid, "VmHWM")
            print_throughput(phases, load, idle_rss, before, peak)
    print()
    print(NOTE)


def size_argument(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/upload.py",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Defaults: 4 uploads x 64 MiB, 8 MiB chunks, 4 chunks in flight per upload, 5 rounds;\n"
            "--quick: 2 x 64 MiB, 3 rounds (under a minute). Explicit flags override both.\n"
            "Columns: MB/s = 10^6 bytes/s over initiate..complete of all uploads (median, and\n"
            "min-max over rounds); ratio = median MB/s / direct median MB/s; CPU s/GiB =\n"
            "utime+stime of that process (/proc/PID/stat) over the bytes passed through;\n"
            "RSS from /proc/PID/status (VmRSS now, VmHWM peak; reset before the rss scenario).\n"
            "Targets (printed, not asserted): ratio >= 0.95, server CPU <= 1.0 s/GiB without a\n"
            "digest, peak server RSS < 150 MiB with 8 x 64 MiB chunks in flight.\n"
            "moto, the server and this client all run on this machine: see the note printed."
        ),
    )
    parser.add_argument("--clients", type=positive_int, help="concurrent uploads per round")
    parser.add_argument("--size", type=size_argument, help="bytes per upload (64M, 1G, …)")
    parser.add_argument("--chunk-size", type=size_argument, help="chunk = S3 part size (>= 5M)")
    parser.add_argument("--parallel", type=positive_int, help="chunks in flight per upload")
    parser.add_argument("--rounds", type=positive_int, help="interleaved rounds (median over them)")
    parser.add_argument(
        "--digest",
        choices=(*DIGESTS, "all"),
        default="none",
        help="per-chunk check sent to mediagate: Content-MD5, X-Chunk-SHA256, none, or each "
        "of them in turn within every round (default: none)",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="native",
        help="the native chunk API, tus 1.0 (creation + PATCH), both in every round, or the "
        "IETF draft against native without digest (default: native)",
    )
    parser.add_argument(
        "--patch-size",
        type=size_argument,
        default=None,
        help="tus: bytes per PATCH (default: the whole file in one PATCH)",
    )
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="all",
        help=f"throughput rounds, the rss scenario ({RSS_CLIENTS} x one {RSS_CHUNK // MiB} MiB "
        "chunk at once), or both (default)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=None,
        help="rounds run again when other processes kept more than "
        f"{OTHER_LOAD_WARNING} cores busy (at most this many over the run; default: --rounds)",
    )
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="instead: native uploads through a second server with MEDIAGATE_WEBHOOK_URL set "
        "(a loopback receiver answering 204) against the first without, interleaved rounds",
    )
    parser.add_argument(
        "--webhooks-control",
        action="store_true",
        help="with --webhooks: the second server sends no webhooks either (an A/A run: what "
        "the comparison shows between two identical servers)",
    )
    parser.add_argument(
        "--bare-relay",
        action="store_true",
        help="also the same bytes through a bare aiohttp relay (bench/_bare_relay.py: each "
        "part a plain PUT to a presigned URL, nothing else) in every round, and mediagate's "
        f"server CPU per GiB as a ratio to it (target <= {TARGET_BARE_CPU_RATIO})",
    )
    parser.add_argument("--quick", action="store_true", help="small settings, under a minute")
    options = parser.parse_args(argv)
    defaults = QUICK if options.quick else NORMAL
    for name, value in defaults.items():
        if getattr(options, name) is None:
            setattr(options, name, value)
    if options.retries is None:
        options.retries = 0 if options.quick else options.rounds
    if options.chunk_size < 5 * MiB and options.chunk_size < options.size:
        parser.error("--chunk-size must be at least 5M (S3's smallest part) unless it holds --size")
    if options.size < 1:
        parser.error("--size must be at least 1 byte")
    return options


def moto_memory_bound(options: argparse.Namespace) -> int | None:
    """Parts and objects up to 64 MiB stay in moto's RAM if a round holds at most 1 GiB."""
    round_bytes = max(options.clients * options.size, RSS_CLIENTS * RSS_CHUNK)
    return MOTO_IN_MEMORY if round_bytes <= MOTO_IN_MEMORY_ROUND else None


@contextlib.contextmanager
def running_services(
    workdir: Path, bucket: str, secret: str, moto_in_memory: int | None, bare_relay: bool
) -> Iterator[Services]:
    with (
        moto_server(workdir, moto_in_memory) as moto,
        mediagate_server(workdir, moto.url, bucket, secret) as server,
        bare_relay_server(workdir) if bare_relay else contextlib.nullcontext() as bare,
    ):
        yield Services(moto, server, bare)


def webhooks_main(options: argparse.Namespace, bucket: str, secret: str) -> None:
    """--webhooks: two servers on one moto, the second sending events to a receiver that
    this process runs (its CPU counts as the client's)."""
    options.webhook_port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="mediagate-bench-") as tmp,
        running_services(
            Path(tmp), bucket, secret, moto_memory_bound(options), bare_relay=False
        ) as services,
    ):
        hooked_dir = Path(tmp) / "webhooks"
        hooked_dir.mkdir()
        extra = {} if options.webhooks_control else webhook_env(options.webhook_port)
        with mediagate_server(hooked_dir, services.moto.url, bucket, secret, extra) as hooked:
            print(
                f"moto pid {services.moto.pid}, mediagate pid {services.server.pid} (webhooks "
                f"off), pid {hooked.pid} (webhooks on)",
                flush=True,
            )
            try:
                asyncio.run(run_webhooks(options, services, hooked, secret))
            except Exception:
                print(f"--- mediagate log (tail) ---\n{tail(hooked.log_path)}", file=sys.stderr)
                raise


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_arguments(argv)
    interrupt_on_signals()
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    secret = secrets.token_urlsafe(32)
    moto_in_memory = moto_memory_bound(options)
    try:
        if options.webhooks or options.webhooks_control:
            webhooks_main(options, bucket, secret)
            return 0
        with (
            tempfile.TemporaryDirectory(prefix="mediagate-bench-") as tmp,
            running_services(
                Path(tmp), bucket, secret, moto_in_memory, options.bare_relay
            ) as services,
        ):
            spool = "in its memory" if moto_in_memory else "in temporary files"
            print(
                f"moto pid {services.moto.pid} at {services.moto.url} (parts {spool}), "
                f"mediagate pid {services.server.pid} at {services.server.url}",
                flush=True,
            )
            try:
                asyncio.run(run(options, services, bucket, secret))
            except Exception:
                print(
                    f"--- mediagate log (tail) ---\n{tail(services.server.log_path)}",
                    file=sys.stderr,
                )
                raise
    except KeyboardInterrupt:
        print("interrupted; servers stopped, temporary files removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
