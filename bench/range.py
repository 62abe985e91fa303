"""Benchmark random Range requests: mediagate send_file vs aiohttp FileResponse vs nginx.

Each server runs in its own process on 127.0.0.1 and serves the same file. Load comes
from separate client processes: a minimal HTTP/1.1 keep-alive client (asyncio
BufferedProtocol, 1 MiB reads) that asks for random ranges and checks each 206's
Content-Range and length. Rounds are interleaved, with the server order rotated every
round (A, B, C, then B, C, A, ...); the summary shows medians over rounds and the ratios
send_file/FileResponse and send_file/nginx.

    python bench/range.py --quick        # under a minute
    python bench/range.py                # 1 GiB file, 6 rounds of 5 s per server and load

Client and server share the machine's cores. By default each server is pinned to the
first CPU and the clients to the others, so every server gets the same single core.
Each run reports the CPU used by the server, by the busiest client process (near 100%
means the client, not the server, may have set the pace; such figures are starred)
and by everything else on the machine, which shows when other work disturbed a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_SRC = Path(__file__).resolve().parents[1] / "src"
MIB = 1024 * 1024
CLIENT_READ_SIZE = MIB
SERVERS = ("send_file", "FileResponse", "nginx")


@dataclass(frozen=True)
class Workload:
    name: str
    range_size: int


WORKLOADS = (Workload("64 KiB ranges", 64 * 1024), Workload("8 MiB ranges", 8 * MIB))


# --- Servers -------------------------------------------------------------------------------


def serve(kind: str, path: Path) -> None:
    """Server process: serve `path` at /file on a free loopback port; print the port."""
    from aiohttp import web

    async def send_file_handler(request: web.Request) -> web.StreamResponse:
        from mediagate.web.file_response import send_file

        return await send_file(
            request,
            path,
            content_type="video/mp4",
            etag=etag,
            last_modified=last_modified,
            cache_control="public, max-age=60",
        )

    async def file_response_handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path)

    status = path.stat()
    etag, last_modified = f'"{status.st_mtime_ns:x}-{status.st_size:x}"', status.st_mtime
    handler = send_file_handler if kind == "send_file" else file_response_handler

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/file", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(run())


@dataclass
class RunningServer:
    kind: str
    port: int
    process: subprocess.Popen[str]

    def cpu_seconds(self) -> float:
        """CPU time of the server process and its children (nginx's worker)."""
        return sum(_cpu_seconds(pid) for pid in [self.process.pid, *_children(self.process.pid)])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_python_server(kind: str, path: Path, cpus: set[int] | None) -> RunningServer:
    # This checkout's package, whatever the virtualenv has installed.
    python_path = os.pathsep.join(filter(None, [str(REPO_SRC), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path}
    process = subprocess.Popen(
        [sys.executable, __file__, "--role", "server", "--server", kind, "--file", str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_pin(cpus),
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return RunningServer(kind, port, process)


def start_nginx(path: Path, workdir: Path, cpus: set[int] | None) -> RunningServer:
    port = _free_port()
    config = workdir / "nginx.conf"
    config.write_text(
        textwrap.dedent(
            f"""\
            worker_processes 1;
            pid {workdir}/nginx.pid;
            error_log {workdir}/nginx-error.log warn;
            events {{ worker_connections 1024; }}
            http {{
                access_log off;
                sendfile on;
                tcp_nopush off;
                keepalive_requests 100000000;
                types {{ video/mp4 mp4; }}
                client_body_temp_path {workdir}/client_body;
                proxy_temp_path {workdir}/proxy;
                fastcgi_temp_path {workdir}/fastcgi;
                uwsgi_temp_path {workdir}/uwsgi;
                scgi_temp_path {workdir}/scgi;
                server {{
                    listen 127.0.0.1:{port};
                    location = /file {{ alias {path}; }}
                }}
            }}
            """
        )
    )
    nginx = shutil.which("nginx")
    assert nginx is not None
    process = subprocess.Popen(
        [nginx, "-c", str(config), "-p", str(workdir), "-g", "daemon off;"],
        text=True,
        preexec_fn=_pin(cpus),
    )
    _wait_for_port(port, process)
    return RunningServer("nginx", port, process)


def _pin(cpus: set[int] | None) -> Callable[[], None] | None:
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nginx did not start listening")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


# --- Load generator ------------------------------------------------------------------------


class RangeClient(asyncio.BufferedProtocol):
    """One keep-alive connection asking for one random range after another."""

    def __init__(self, request_for: Callable[[], tuple[bytes, bytes]]) -> None:
        self._request_for = request_for
        self._buffer = memoryview(bytearray(CLIENT_READ_SIZE))
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._remaining: int | None = None
        self._expected_range = b""
        self._response: asyncio.Future[bool] | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._response is not None and not self._response.done():
            self._response.set_result(False)
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def fetch(self) -> bool:
        """Send one request; True when a correct 206 arrived in full."""
        if self._transport is None or self.closed.done():
            return False
        request, self._expected_range = self._request_for()
        self._head.clear()
        self._remaining = None
        self._response = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await self._response

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._remaining is None:
            self._head += self._buffer[:nbytes]
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._head[:end])
            if not head.startswith(b"HTTP/1.1 206") or self._expected_range not in head:
                self._finish(False)
                return
            length = int(head.split(b"\r\nContent-Length: ", 1)[1].split(b"\r\n", 1)[0])
            self._remaining = length - (len(self._head) - end - 4)
        else:
            self._remaining -= nbytes
        if self._remaining <= 0:
            self._finish(self._remaining == 0)

    def _finish(self, ok: bool) -> None:
        assert self._response is not None
        if not self._response.done():
            self._response.set_result(ok)
        if not ok:
            self.close()


async def load(args: argparse.Namespace) -> dict[str, Any]:
    """Client process: keep its connections busy until `end_at`; report the measured window."""
    generator = random.Random(args.seed)
    host = f"127.0.0.1:{args.port}".encode()

    def request_for() -> tuple[bytes, bytes]:
        start = generator.randrange(0, args.file_size - args.range_size + 1)
        end = start + args.range_size - 1
        request = b"GET /file HTTP/1.1\r\nHost: %s\r\nRange: bytes=%d-%d\r\n\r\n" % (
            host,
            start,
            end,
        )
        return request, b"Content-Range: bytes %d-%d/%d" % (start, end, args.file_size)

    latencies: list[float] = []
    counts = {"requests": 0, "bytes": 0, "errors": 0}
    issued = 0
    cpu_marks: dict[str, float] = {}
    loop = asyncio.get_running_loop()

    def mark_cpu(name: str) -> None:
        usage = os.times()
        cpu_marks[name] = usage.user + usage.system

    async def connection() -> None:
        nonlocal issued
        while time.time() < args.end_at and issued < args.max_requests:
            _, client = await loop.create_connection(
                lambda: RangeClient(request_for), "127.0.0.1", args.port
            )
            try:
                while time.time() < args.end_at and issued < args.max_requests:
                    issued += 1
                    started = time.time()
                    ok = await client.fetch()
                    finished = time.time()
                    if not args.start_at <= started <= finished <= args.end_at:
                        continue
                    if not ok:
                        counts["errors"] += 1
                        break  # reconnect
                    counts["requests"] += 1
                    counts["bytes"] += args.range_size
                    latencies.append(finished - started)
            finally:
                client.close()

    await asyncio.sleep(max(0.0, args.begin_at - time.time()))
    loop.call_later(args.start_at - time.time(), mark_cpu, "start")
    loop.call_later(args.end_at - time.time(), mark_cpu, "end")
    await asyncio.gather(*(connection() for _ in range(args.connections)))
    await asyncio.sleep(max(0.0, args.end_at - time.time()) + 0.01)
    cpu = (cpu_marks["end"] - cpu_marks["start"]) / (args.end_at - args.start_at)
    return {**counts, "latencies": latencies, "cpu": cpu}


# --- Orchestration ----------------------------------------------------------------------


@dataclass
class Measurement:
    requests_per_second: float
    megabytes_per_second: float
    p99_ms: float
    errors: int
    server_cpu: float  # in cores
    client_cpu: float  # in cores, the busiest client process
    others_cpu: float  # in cores: everything on the machine but this server and its clients

    @property
    def server_us_per_request(self) -> float:
        """Server CPU per request: less disturbed by other work than the rates."""
        return (
            self.server_cpu / self.requests_per_second * 1e6
            if self.requests_per_second
            else math.nan
        )

    @property
    def client_bound(self) -> bool:
        return self.client_cpu >= CLIENT_BOUND


CLIENT_BOUND = 0.9  # a client process this busy may be what limits the rate


def measure(
    server: RunningServer, workload: Workload, args: argparse.Namespace, seed: int
) -> Measurement:
    begin_at = time.time() + 0.3  # time for the client processes to start
    start_at = begin_at + args.warmup
    end_at = start_at + args.duration
    processes = [
        subprocess.Popen(
            [
                *(sys.executable, __file__, "--role", "load", "--port", str(server.port)),
                *("--file-size", str(args.size), "--range-size", str(workload.range_size)),
                *("--connections", str(count), "--seed", str(seed * 1000 + index)),
                *("--begin-at", repr(begin_at), "--start-at", repr(start_at)),
                *("--end-at", repr(end_at), "--max-requests", str(args.max_requests)),
            ],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=_pin(args.client_cpus),
        )
        for index, count in enumerate(_split(args.connections, args.clients))
    ]
    time.sleep(max(0.0, start_at - time.time()))
    server_before, busy_before = server.cpu_seconds(), _busy_cpu_seconds()
    time.sleep(max(0.0, end_at - time.time()))
    server_cpu = (server.cpu_seconds() - server_before) / args.duration
    busy = (_busy_cpu_seconds() - busy_before) / args.duration
    results = [json.loads(p.communicate(timeout=args.duration + 60)[0]) for p in processes]

    latencies = sorted(latency for result in results for latency in result["latencies"])
    clients_cpu = [result["cpu"] for result in results]
    return Measurement(
        requests_per_second=sum(result["requests"] for result in results) / args.duration,
        megabytes_per_second=sum(result["bytes"] for result in results) / args.duration / 1e6,
        p99_ms=latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else math.nan,
        errors=sum(result["errors"] for result in results),
        server_cpu=server_cpu,
        client_cpu=max(clients_cpu),
        others_cpu=max(0.0, busy - server_cpu - sum(clients_cpu)),
    )


def _busy_cpu_seconds() -> float:
    """CPU time all processes on the machine have used (the `cpu` line of /proc/stat)."""
    fields = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def make_file(path: Path, size: int, content: str) -> None:
    with open(path, "wb") as file:
        if content == "sparse":
            file.truncate(size)
            return
        block = 16 * MIB
        for offset in range(0, size, block):
            file.write(os.urandom(min(block, size - offset)))


def start_servers(path: Path, workdir: Path, args: argparse.Namespace) -> list[RunningServer]:
    servers: list[RunningServer] = []
    try:
        for kind in args.servers:
            if kind == "nginx":
                servers.append(start_nginx(path, workdir, args.server_cpus))
            else:
                servers.append(start_python_server(kind, path, args.server_cpus))
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def run_benchmark(args: argparse.Namespace) -> None:
    results: dict[tuple[str, str], list[Measurement]] = {}
    with tempfile.TemporaryDirectory(prefix="mediagate-bench-") as directory:
        workdir = Path(directory)
        workdir.chmod(0o755)  # nginx workers run as an unprivileged user
        path = workdir / "bench.mp4"
        print(f"writing a {args.size / MIB:.0f} MiB {args.content} file ...", flush=True)
        make_file(path, args.size, args.content)
        path.chmod(0o644)
        servers = start_servers(path, workdir, args)
        try:
            for round_ in range(args.rounds):
                # Interleaved, and rotated every round: the first run of a round measured
                # consistently lower here, so each server takes each place in turn.
                shift = round_ % len(servers)
                order = servers[shift:] + servers[:shift]
                for workload in WORKLOADS:
                    for server in order:
                        result = measure(server, workload, args, seed=round_)
                        results.setdefault((workload.name, server.kind), []).append(result)
                        print_measurement(round_, workload, server.kind, result, args)
        finally:
            for server in servers:
                server.stop()
    print_summary(results, [server.kind for server in servers], args)


def print_measurement(
    round_: int, workload: Workload, kind: str, result: Measurement, args: argparse.Namespace
) -> None:
    print(
        f"round {round_ + 1}/{args.rounds} {workload.name:14} {kind:12}"
        f" {result.requests_per_second:7.0f} req/s {result.megabytes_per_second:6.0f} MB/s"
        f" p99 {result.p99_ms:7.2f} ms | cpu: server {result.server_cpu:4.0%}"
        f" client {result.client_cpu:4.0%} others {result.others_cpu:4.0%}"
        f" | errors {result.errors}",
        flush=True,
    )


SUMMARY_ROWS = (
    ("64 KiB ranges", "requests_per_second", "req/s", "{:.0f}"),
    ("64 KiB ranges", "p99_ms", "p99 ms", "{:.2f}"),
    ("64 KiB ranges", "server_us_per_request", "cpu µs", "{:.0f}"),
    ("8 MiB ranges", "megabytes_per_second", "MB/s", "{:.0f}"),
    ("8 MiB ranges", "p99_ms", "p99 ms", "{:.1f}"),
    ("8 MiB ranges", "server_us_per_request", "cpu µs", "{:.0f}"),
)


def print_summary(
    results: dict[tuple[str, str], list[Measurement]], kinds: list[str], args: argparse.Namespace
) -> None:
    def median(workload: str, kind: str, metric: str) -> float:
        return statistics.median(getattr(m, metric) for m in results[(workload, kind)])

    def client_bound(workload: str, kind: str) -> bool:
        return sum(m.client_bound for m in results[(workload, kind)]) * 2 > args.rounds

    others = [f"{kind} / {other}" for kind, other in RATIOS if {kind, other} <= set(kinds)]
    print(
        f"\nMedians of {args.rounds} interleaved rounds of {args.duration:g} s;"
        f" {args.connections} connections from {args.clients} client process(es);"
        f" {args.size / MIB:.0f} MiB {args.content} file; {os.cpu_count()} CPUs,"
        f" servers on {_cpus(args.server_cpus)}, clients on {_cpus(args.client_cpus)}"
    )
    header = f"{'workload':14} {'metric':7}" + "".join(f"{k:>14}" for k in kinds)
    header += "".join(f"{column:>26}" for column in others)
    print(header)
    print("-" * len(header))
    for workload, metric, label, number_format in SUMMARY_ROWS:
        values = {kind: median(workload, kind, metric) for kind in kinds}
        line = f"{workload:14} {label:7}"
        for kind in kinds:
            flag = "*" if client_bound(workload, kind) else " "
            line += f"{number_format.format(values[kind]):>13}{flag}"
        for kind, other in RATIOS:
            if {kind, other} <= set(kinds):
                line += f"{values[kind] / values[other]:>26.2f}"
        print(line)
    print(
        "cpu µs: server CPU time per request."
        f" *: in most rounds a client process was at >= {CLIENT_BOUND:.0%} CPU,"
        " so the client may have set the pace."
    )
    print("\nMedian CPU in cores: server / busiest client / other processes on the machine")
    for workload in (w.name for w in WORKLOADS):
        cells = [
            f"{kind} {median(workload, kind, 'server_cpu'):.2f}"
            f"/{median(workload, kind, 'client_cpu'):.2f}"
            f"/{median(workload, kind, 'others_cpu'):.2f}"
            for kind in kinds
        ]
        errors = sum(m.errors for kind in kinds for m in results[(workload, kind)])
        print(f"{workload:14} " + "   ".join(cells) + f"   errors {errors}")


RATIOS = (("send_file", "FileResponse"), ("send_file", "nginx"))


def _cpus(cpus: set[int] | None) -> str:
    return ",".join(map(str, sorted(cpus))) if cpus else "any"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Ratios above 1 favour send_file for req/s and MB/s; below 1 for p99.",
    )
    option = parser.add_argument
    option("--size", type=_size, default=1024 * MIB, help="file size: 1G, 256M, ... (1G)")
    option("--content", choices=("random", "sparse"), default="random", help="(random)")
    option("--rounds", type=int, default=6, help="interleaved rounds (6)")
    option("--duration", type=float, default=5.0, help="seconds measured per run (5)")
    option("--warmup", type=float, default=1.0, help="unmeasured seconds before each run (1)")
    option("--connections", type=int, default=64, help="concurrent connections in all (64)")
    option("--clients", type=int, default=1, help="client processes sharing them (1)")
    option("--max-requests", type=int, default=10_000_000, help="per client process and run")
    option("--no-nginx", action="store_true", help="leave nginx out")
    option("--no-pin", dest="pin", action="store_false", help="do not pin servers and clients")
    option("--quick", action="store_true", help="256 MiB, 3 rounds of 1.5 s: under a minute")
    # Internal: the same script runs the server and the client processes.
    for name, kind in [
        *(("--role", str), ("--server", str), ("--file", Path), ("--port", int)),
        *(("--file-size", int), ("--range-size", int), ("--seed", int)),
        *(("--begin-at", float), ("--start-at", float), ("--end-at", float)),
    ]:
        option(name, type=kind, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.rounds, args.duration, args.warmup = 256 * MIB, 3, 1.5, 0.5
    return args


def _size(text: str) -> int:
    units = {"K": 1024, "M": MIB, "G": 1024 * MIB}
    suffix = text[-1:].upper()
    return int(float(text[:-1]) * units[suffix]) if suffix in units else int(text)


def choose_servers_and_cpus(args: argparse.Namespace) -> None:
    args.servers = [kind for kind in SERVERS if kind != "nginx" or not args.no_nginx]
    if "nginx" in args.servers and shutil.which("nginx") is None:
        print("note: nginx not found, leaving it out (apt-get install -y nginx-light)")
        args.servers.remove("nginx")
    cpus = sorted(os.sched_getaffinity(0))
    pin = args.pin and len(cpus) > 1
    args.server_cpus = {cpus[0]} if pin else None
    args.client_cpus = set(cpus[1:]) if pin else None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.role == "server":
        serve(args.server, args.file)
    elif args.role == "load":
        print(json.dumps(asyncio.run(load(args))))
    else:
        choose_servers_and_cpus(args)
        run_benchmark(args)


if __name__ == "__main__":
    main()
