"""What probing a media costs: time and bytes read, faststart MP4 vs index at the end,
local file vs S3 object (moto behind a counting proxy).

    python bench/probe.py --size 256M

Makes two H.264 MP4s of about SIZE from ffmpeg's testsrc2 (a 4-second clip copied
over and over: the index grows with the frame count, as a real video's), stores them on
local disk and in a moto bucket, and probes each as the server does (`MediaProber`:
ffprobe and the faststart check; the poster, one more ffmpeg run reading the frame at
10 %, is left out) --repeat times. Bytes read from S3 are counted at a TCP proxy in
front of moto, whose socket towards the prober holds at most 64 KiB unread (else the
kernel's autotuned buffer, megabytes, would count as read).

How it scales: the probe reads the index and the first frames, so a faststart file's
bytes read grow with its index (its frame count), not its size; a file with the index at
its end costs one more range read of the index at the end. Probe time is FFmpeg's start
(~0.1 s) plus those reads. moto keeps the objects in memory: 2 x SIZE of RAM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import structlog
from moto.server import ThreadedMotoServer

from mediagate.core.probe import Limits
from mediagate.core.probing import MediaProber
from mediagate.models import Media, StorageKind
from mediagate.storage.local import LocalStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MiB, parse_size

BUCKET = "bench-probe"


class CountingProxy:
    """Loopback TCP proxy that counts the bytes flowing back from its target."""

    def __init__(self, port: int) -> None:
        self._target = port
        self.received = 0
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        towards_client = writer.transport.get_extra_info("socket")
        towards_client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(
                self._pipe(reader, up_writer, count=False),
                self._pipe(up_reader, writer, count=True),
                return_exceptions=True,
            )
        writer.close()
        up_writer.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if count:
                    self.received += len(data)
                writer.write(data)
                await writer.drain()
        writer.close()


class PresignedBucket:
    """Just enough of a store for the prober: presigned URLs through the proxy."""

    kind = StorageKind.S3

    def __init__(self, client: Any) -> None:
        self._client = client

    async def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int, head: bool = False
    ) -> str:
        return str(
            self._client.generate_presigned_url(
                "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=expires_in
            )
        )


def make_mp4(folder: Path, name: str, size: int, *, faststart: bool) -> Path:
    """About `size` bytes of H.264: a 4-second 2 Mbit/s clip, encoded once, copied over
    and over (stream copy is as quick as the disk), so the index grows as a real
    video's of that length (25 frames a second)."""
    clip = folder / "clip.mp4"
    if not clip.exists():
        subprocess.run(
            (
                "ffmpeg -v error -y -f lavfi -i testsrc2=size=640x360:rate=25 -t 4 "
                f"-c:v libx264 -preset ultrafast -b:v 2M -pix_fmt yuv420p {clip}"
            ).split(),
            check=True,
        )
    target = folder / name
    flags = ["-movflags", "+faststart"] if faststart else []
    command = f"ffmpeg -v error -y -stream_loop -1 -i {clip} -c copy -fs {size}".split()
    subprocess.run([*command, *flags, str(target)], check=True)
    return target


def media(key: str, size: int, storage: StorageKind) -> Media:
    return Media(
        id=key,
        user_id="bench",
        filename=key,
        content_type="video/mp4",
        size=size,
        checksum=None,
        storage=storage,
        key=key,
        created_at=datetime.now(UTC),
    )


async def measure(
    prober: MediaProber, item: Media, repeat: int, proxy: CountingProxy | None
) -> tuple[float, int, bool | None]:
    times = []
    read = 0
    faststart = None
    for _ in range(repeat):
        before = proxy.received if proxy else 0
        started = time.perf_counter()
        probed = await prober.probe(item)
        times.append(time.perf_counter() - started)
        read = (proxy.received - before) if proxy else 0
        found = probed.media_facts()
        assert found is not None, probed.probe_error
        faststart = found.faststart
    return statistics.median(times), read, faststart


async def main(arguments: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-probe-"))
    local = LocalStore(folder)
    files = {}
    for name, faststart in (("faststart.mp4", True), ("moov-last.mp4", False)):
        started = time.perf_counter()
        files[name] = make_mp4(folder, name, arguments.size, faststart=faststart).stat().st_size
        print(f"made {name}: {files[name] / MiB:.0f} MiB in {time.perf_counter() - started:.0f} s")

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        _, moto_port = moto.get_host_and_port()
        proxy = CountingProxy(moto_port)
        await proxy.start()
        direct = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{moto_port}",
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        direct.create_bucket(Bucket=BUCKET)
        for name in files:
            direct.upload_file(str(folder / name), BUCKET, name)
        proxied = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{proxy.port}",
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        limits = Limits(timeout=120, memory=1 << 30)
        stores: dict[StorageKind, Any] = {
            StorageKind.LOCAL: local,
            StorageKind.S3: PresignedBucket(proxied),
        }
        prober = MediaProber(stores, limits=limits, concurrency=1, posters=False)
        print(f"\n{'file':<15} {'store':<6} {'faststart':<10} {'probe s':>8} {'bytes read':>14}")
        for name, size in files.items():
            for storage in (StorageKind.LOCAL, StorageKind.S3):
                seconds, read, faststart = await measure(
                    prober,
                    media(name, size, storage),
                    arguments.repeat,
                    proxy if storage is StorageKind.S3 else None,
                )
                shown = f"{read:,} ({read / size:.2%})" if storage is StorageKind.S3 else "-"
                print(
                    f"{name:<15} {storage.value:<6} {faststart!s:<10} {seconds:>8.3f} {shown:>14}"
                )
        await prober.close()
        proxy.close()
    finally:
        moto.stop()


if __name__ == "__main__":
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("256M"))
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
