"""Server CPU per chunk request: mediagate against the bare relay, request by request.

    PYTHONPATH=src .venv/bin/python bench/relay_requests.py                    # 1-byte chunks
    PYTHONPATH=src .venv/bin/python bench/relay_requests.py --size 8M --requests 40
    PYTHONPATH=src .venv/bin/python bench/relay_requests.py --against /tmp/main-checkout

One moto, the bare relay (bench/_bare_relay.py) and a mediagate server of this checkout
(and, with --against, one of another checkout's `src`, e.g. `git archive main`). Each
server gets one session of one chunk of `--size` bytes, and the same chunk is sent
again and again (a chunk sent again replaces the one stored), one server after the
other, round robin, so that every server meets the same load on a shared machine.
Printed per round: each server's CPU (utime+stime from /proc) per request, and its
ratio to the bare relay's in that round. 1-byte chunks show what a request costs
besides its bytes; with --uploads, whole uploads (initiate, one chunk, complete) too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiobotocore.session import get_session
from yarl import URL

from _common import (
    ROOT,
    Service,
    cpu_seconds,
    mediagate_server,
    moto_server,
    parse_size,
)
from upload import bare_relay_server, bearer_token, streaming_s3_config

Send = Callable[[], Awaitable[None]]


class Mediagate:
    def __init__(self, http: aiohttp.ClientSession, service: Service, token: str) -> None:
        self.http, self.base = http, service.url
        self.auth = {"Authorization": f"Bearer {token}"}

    async def call(self, path: str, expected: int, **kw: Any) -> dict[str, object]:
        async with self.http.post(self.base + path, headers=self.auth, **kw) as answer:
            if answer.status != expected:
                raise RuntimeError(f"{path}: {answer.status} {(await answer.text())[:300]}")
            return dict(await answer.json())

    async def initiate(self, size: int) -> str:
        json = {"filename": "bench.mp4", "size": size}
        return str((await self.call("/api/v1/media/upload/initiate", 201, json=json))["session_id"])

    async def chunk(self, session: str, body: bytes) -> None:
        headers = {**self.auth, "Content-Type": "application/octet-stream"}
        path = f"/api/v1/media/upload/{session}/chunk/0"
        async with self.http.post(self.base + path, data=body, headers=headers) as answer:
            if answer.status != 200:
                raise RuntimeError(f"chunk: {answer.status} {(await answer.text())[:300]}")
            await answer.read()

    async def upload(self, body: bytes) -> None:
        session = await self.initiate(len(body))
        await self.chunk(session, body)
        await self.call(f"/api/v1/media/upload/{session}/complete", 201)


async def bare_sender(
    http: aiohttp.ClientSession, s3: Any, bare: Service, bucket: str, body: bytes
) -> Send:
    key = f"bare/{uuid.uuid4().hex}"
    upload = (await s3.create_multipart_upload(Bucket=bucket, Key=key))["UploadId"]
    url = await s3.generate_presigned_url(
        "upload_part",
        Params={"Bucket": bucket, "Key": key, "UploadId": upload, "PartNumber": 1},
        ExpiresIn=3600,
    )
    target = URL(str(URL(bare.url + "/relay").with_query(url=url)), encoded=True)

    async def send() -> None:
        headers = {"Content-Length": str(len(body))}
        async with http.put(target, data=body, headers=headers) as answer:
            if answer.status != 200:
                raise RuntimeError(f"bare relay: {answer.status} {(await answer.text())[:300]}")
            await answer.read()

    return send


async def per_request(senders: dict[str, tuple[int, Send]], requests: int) -> dict[str, float]:
    """Milliseconds of CPU per request of each server, all sending in turn."""
    before = {name: cpu_seconds(pid) for name, (pid, _) in senders.items()}
    for _ in range(requests):
        for _, send in senders.values():
            await send()
    return {
        name: (cpu_seconds(pid) - before[name]) / requests * 1000
        for name, (pid, _) in senders.items()
    }


async def run(
    options: argparse.Namespace,
    moto: Service,
    bare: Service,
    servers: dict[str, Service],
    bucket: str,
    secret: str,
) -> None:
    body = b"\x5a" * options.size
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        get_session().create_client(
            "s3",
            region_name="us-east-1",
            endpoint_url=moto.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=streaming_s3_config(8),
        ) as s3,
    ):
        clients = {
            name: Mediagate(http, service, bearer_token(secret))
            for name, service in servers.items()
        }
        sessions = {name: await client.initiate(options.size) for name, client in clients.items()}
        chunks: dict[str, tuple[int, Send]] = {
            name: (servers[name].pid, lambda c=client, s=sessions[name]: c.chunk(s, body))
            for name, client in clients.items()
        }
        chunks["bare relay"] = (bare.pid, await bare_sender(http, s3, bare, bucket, body))
        uploads = {
            name: (servers[name].pid, lambda c=client: c.upload(body))
            for name, client in clients.items()
        }
        await per_request(chunks, 5)  # connections, lazily loaded models: not timed
        rounds: list[dict[str, float]] = []
        upload_rounds: list[dict[str, float]] = []
        for number in range(1, options.rounds + 1):
            rounds.append(await per_request(chunks, options.requests))
            figures = ", ".join(f"{name} {ms:.2f}" for name, ms in rounds[-1].items())
            print(f"round {number}: ms of server CPU per chunk request: {figures}", flush=True)
            if options.uploads:
                upload_rounds.append(await per_request(uploads, options.uploads))
        print()
        print(
            f"chunks of {options.size} bytes, {options.requests} requests per server per "
            f"round, medians of {options.rounds} rounds:"
        )
        for name in chunks:
            ms = statistics.median(r[name] for r in rounds)
            ratio = statistics.median(r[name] / r["bare relay"] for r in rounds)
            print(f"  {name:12s} {ms:7.2f} ms per chunk request, {ratio:.2f}x the bare relay's")
        if upload_rounds:
            print("whole uploads (initiate, one chunk, complete):")
            for name in uploads:
                ms = statistics.median(r[name] for r in upload_rounds)
                print(f"  {name:12s} {ms:7.2f} ms per upload")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", type=parse_size, default=1, help="bytes per chunk (default 1; 8M: a whole part)"
    )
    parser.add_argument(
        "--requests", type=int, default=300, help="chunk requests per server per round"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--uploads", type=int, default=0, help="whole uploads per server per round (default none)"
    )
    parser.add_argument(
        "--against", type=Path, help="another checkout whose src/ runs as a second server"
    )
    options = parser.parse_args()
    bucket, secret = f"bench-{uuid.uuid4().hex[:12]}", secrets.token_urlsafe(32)
    roots = {"this": ROOT, **({"against": options.against.resolve()} if options.against else {})}
    with (
        tempfile.TemporaryDirectory(prefix="mediagate-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        moto = stack.enter_context(moto_server(workdir, 64 * 1024 * 1024))
        bare = stack.enter_context(bare_relay_server(workdir))
        servers = {}
        for name, root in roots.items():
            (workdir / name).mkdir()
            servers[name] = stack.enter_context(
                mediagate_server(
                    workdir / name, moto.url, bucket, secret, {"PYTHONPATH": str(root / "src")}
                )
            )
        asyncio.run(run(options, moto, bare, servers, bucket, secret))
    return 0


if __name__ == "__main__":
    sys.exit(main())
