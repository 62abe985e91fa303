"""Client benchmark: `mediagate upload` of one file through the server against `aws s3 cp`.

Makes a file of random bytes (1 GiB by default), starts a moto S3 server and
`python -m mediagate serve` (cloud storage on, into moto) as child processes
on loopback, then, round by round and interleaved (the order alternates),
uploads the file with `mediagate upload --no-direct` (through the server; its
defaults: the server's 8 MiB chunks, 4 in flight, a SHA-256 per chunk; with
--direct also `mediagate upload --direct`, each chunk PUT straight into moto
with its Content-MD5, the client's default when the server offers it) and with
`aws s3 cp` (its defaults: 8 MiB parts, 10 in flight) straight into the same
moto. Each command is timed as a user would time it, start-up included. Prints
MB/s medians, their ratio, and the CPU seconds per GiB of each client, the server
and moto.

awscli pins its own botocore, so it lives in a venv of its own:

    python3 -m venv /tmp/awscli && /tmp/awscli/bin/pip install awscli
    .venv/bin/python bench/client.py --size-mib 1024

Run from the repository root with mediagate's venv (see --help).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import (
    GiB,
    MiB,
    Service,
    cpu_seconds,
    interrupt_on_signals,
    machine_busy_seconds,
    mediagate_env,
    mediagate_server,
    median,
    moto_server,
    render_table,
    tail,
)

MB = 1_000_000
TARGET_RATIO = 0.9
# `--direct` sends the parts to the store itself, as aws s3 cp does (issue 18).
DIRECT_TARGET_RATIO = 0.95
OTHER_LOAD_WARNING = 0.25
USER = "bench"
AWS = "aws s3 cp"
DEFAULT_AWS = "/tmp/awscli/bin/aws"
RUN_LIMIT = 1800  # seconds for one upload, so a wedged run cannot hang the benchmark
NOTE = (
    "note: moto is a pure-Python S3 and shares the machine's "
    f"{os.cpu_count()} cores with the server and the client:\n"
    "      absolute MB/s are moto's, not S3's; compare the ratio. MB = 10^6 bytes.\n"
    "      Each figure is a whole command, start-up included; medians over the rounds."
)


@dataclass(frozen=True)
class Run:
    seconds: float
    client_cpu: float
    server_cpu: float
    moto_cpu: float
    machine_busy: float

    @property
    def other_cores(self) -> float:
        """Cores kept busy by processes other than the client, the server and moto."""
        ours = self.client_cpu + self.server_cpu + self.moto_cpu
        return max(self.machine_busy - ours, 0.0) / self.seconds


@dataclass(frozen=True)
class Bench:
    workdir: Path
    file: Path
    moto: Service
    server: Service
    bucket: str
    aws: str
    client_env: dict[str, str]
    aws_env: dict[str, str]

    def measured(self, command: Sequence[str], env: dict[str, str]) -> tuple[Run, str]:
        """Run `command` to completion; its wall time and the CPU each process spent."""
        before = (
            children_cpu(),
            cpu_seconds(self.server.process.pid),
            cpu_seconds(self.moto.process.pid),
            machine_busy_seconds(),
        )
        started = time.monotonic()
        answer = subprocess.run(
            list(command), env=env, capture_output=True, text=True, timeout=RUN_LIMIT
        )
        seconds = time.monotonic() - started
        if answer.returncode != 0:
            raise RuntimeError(f"{command[0]} … failed ({answer.returncode}):\n{answer.stderr}")
        run = Run(
            seconds,
            children_cpu() - before[0],
            cpu_seconds(self.server.process.pid) - before[1],
            cpu_seconds(self.moto.process.pid) - before[2],
            machine_busy_seconds() - before[3],
        )
        return run, answer.stdout

    def mediagate_upload(self, options: Sequence[str]) -> Run:
        command = [
            *(sys.executable, "-m", "mediagate", "upload", "--json"),
            *options,
            str(self.file),
        ]
        run, out = self.measured(command, self.client_env)
        media = json.loads(out)
        direct = "--no-direct" not in options
        if (
            media["size"] != self.file.stat().st_size
            or media["storage"] != "s3"
            or (direct and media["direct_chunks"] != media["sent_chunks"])
        ):
            raise RuntimeError(f"unexpected upload result: {out}")
        rm = [sys.executable, "-m", "mediagate", "rm", media["media_id"]]
        subprocess.run(rm, env=self.client_env, check=True, capture_output=True)
        return run

    def aws_cp(self) -> Run:
        key = f"s3://{self.bucket}/direct/{self.file.name}"
        endpoint = ["--endpoint-url", self.moto.url]
        run, _ = self.measured([self.aws, "s3", "cp", str(self.file), key, *endpoint], self.aws_env)
        remove = [self.aws, "s3", "rm", key, *endpoint]
        subprocess.run(remove, env=self.aws_env, check=True, capture_output=True)
        return run


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def make_file(path: Path, size: int) -> None:
    """Random bytes, written a block at a time (and left in the page cache for both tools)."""
    with path.open("wb") as out:
        for _ in range(size // MiB):
            out.write(os.urandom(MiB))
        out.write(os.urandom(size % MiB))


def issue_token(env: dict[str, str]) -> str:
    command = [sys.executable, "-m", "mediagate", "token", USER]
    return subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout


def rounds(bench: Bench, count: int, variants: Sequence[str]) -> dict[str, list[Run]]:
    tools: dict[str, Callable[[], Run]] = {
        " ".join(["mediagate upload", variant]).strip(): functools.partial(
            bench.mediagate_upload, shlex.split(variant)
        )
        for variant in variants
    }
    tools[AWS] = bench.aws_cp
    results: dict[str, list[Run]] = {name: [] for name in tools}
    order = list(tools)
    for number in range(count):
        for name in order:
            run = tools[name]()
            results[name].append(run)
            print(
                f"  round {number + 1}: {name:<34} {speed(bench, run):7.1f} MB/s "
                f"(other processes: {run.other_cores:.2f} cores)",
                flush=True,
            )
        order.reverse()  # a drift in moto's speed favours neither
    return results


def speed(bench: Bench, run: Run) -> float:
    return bench.file.stat().st_size / MB / run.seconds


def report(bench: Bench, results: dict[str, list[Run]]) -> None:
    size = bench.file.stat().st_size
    aws = median([speed(bench, run) for run in results[AWS]])
    rows = []
    for name, runs in results.items():
        speeds = [speed(bench, run) for run in runs]

        def per_gib(field: str, runs: list[Run] = runs) -> str:
            return f"{median([getattr(run, field) for run in runs]) / (size / GiB):.2f}"

        rows.append(
            [
                name,
                f"{median(speeds):.1f}",
                f"{min(speeds):.1f}-{max(speeds):.1f}",
                f"{median(speeds) / aws:.3f}",
                f"{paired_ratio(runs, results[AWS]):.3f}",
                per_gib("client_cpu"),
                per_gib("server_cpu") if name.startswith("mediagate") else "-",
                per_gib("moto_cpu"),
                f"{path_cpu(runs) / (size / GiB):.2f}",
                f"{path_cpu(results[AWS]) / path_cpu(runs):.3f}",
            ]
        )
    headers = [
        "command",
        "MB/s",
        "min-max",
        "ratio",
        "paired ratio",
        "client CPU s/GiB",
        "server",
        "moto",
        "all three",
        "CPU ratio",
    ]
    print()
    print(f"{size / MiB:.0f} MiB file, {len(results[AWS])} interleaved rounds, medians:")
    print(render_table(headers, rows))
    print(
        "ratio: of the medians; paired ratio: the median of each round's ratio (runs back\n"
        "to back, so less exposed to slow drifts in the machine's load); CPU ratio: aws's\n"
        "CPU s/GiB (client + moto) over this path's (client + server + moto), the ratio to\n"
        "expect where the cores are the limit, whatever else the machine is doing"
    )
    for name, runs in results.items():
        if name != AWS:
            ratio = median([speed(bench, run) for run in runs]) / aws
            target = TARGET_RATIO if "--no-direct" in name else DIRECT_TARGET_RATIO
            verdict = "met" if ratio >= target else "MISSED"
            print(f"target, {name}: ratio >= {target}: {verdict}")
    other = [run.other_cores for runs in results.values() for run in runs]
    if max(other) > OTHER_LOAD_WARNING:
        print(
            f"WARNING: other processes kept up to {max(other):.2f} cores busy during runs: "
            "MB/s and ratios are unreliable, rerun on a quiet machine"
        )
    print()
    print(NOTE)


def path_cpu(runs: list[Run]) -> float:
    """Median CPU seconds of the client, the server and moto together, for one upload."""
    return median([run.client_cpu + run.server_cpu + run.moto_cpu for run in runs])


def paired_ratio(runs: list[Run], aws_runs: list[Run]) -> float:
    return median([aws.seconds / run.seconds for run, aws in zip(runs, aws_runs, strict=True)])


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/client.py",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default: 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    parser.add_argument(
        "--aws",
        default=DEFAULT_AWS if Path(DEFAULT_AWS).exists() else shutil.which("aws"),
        help=f"the aws command (default: {DEFAULT_AWS}, else `aws` on PATH)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        metavar="ARGS",
        help='options for `mediagate upload`, e.g. "--no-direct --chunk-size 16"; repeat to '
        "compare several in every round (default: --no-direct, through the server)",
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="also run `mediagate upload --direct` (parts straight into moto at URLs the "
        "server signs) in every round; the server column is then its signing CPU",
    )
    options = parser.parse_args(argv)
    options.variant = options.variant or ["--no-direct"]
    if options.direct:
        options.variant.append("--direct")
    if not options.aws:
        parser.error(
            "no aws command: python3 -m venv /tmp/awscli && /tmp/awscli/bin/pip install awscli"
        )
    if options.size_mib < 1 or options.rounds < 1:
        parser.error("--size-mib and --rounds must be at least 1")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_arguments(argv)
    interrupt_on_signals()
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    secret = secrets.token_urlsafe(32)
    try:
        with tempfile.TemporaryDirectory(prefix="mediagate-bench-client-") as tmp:
            workdir = Path(tmp)
            file = workdir / "clip.bin"
            make_file(file, options.size_mib * MiB)
            with (
                moto_server(workdir) as moto,
                mediagate_server(workdir, moto.url, bucket, secret) as server,
            ):
                env = mediagate_env(workdir, moto.url, bucket, secret)
                client_env = {
                    **env,
                    "MEDIAGATE_URL": server.url,
                    "MEDIAGATE_TOKEN": issue_token(env).strip(),
                    "XDG_CACHE_HOME": str(workdir / "cache"),
                }
                aws_env = {
                    **os.environ,
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_CONFIG_FILE": str(workdir / "aws-config"),  # awscli's own defaults
                }
                bench = Bench(workdir, file, moto, server, bucket, options.aws, client_env, aws_env)
                print(
                    f"moto pid {moto.pid} at {moto.url}, mediagate pid {server.pid} at "
                    f"{server.url}; {options.aws}",
                    flush=True,
                )
                try:
                    report(bench, rounds(bench, options.rounds, options.variant))
                except Exception:
                    print(f"--- mediagate log (tail) ---\n{tail(server.log_path)}", file=sys.stderr)
                    raise
    except KeyboardInterrupt:
        print("interrupted; servers stopped, temporary files removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
