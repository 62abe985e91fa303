"""Benchmark `mediagate serve --workers 2` against one worker on 64 KiB Range requests,
(--mode instances, --mode uploads) 2 instances behind nginx against one, and
(--mode catalogs) one instance on SQLite against one on PostgreSQL.

Four servers run side by side on 127.0.0.1, each in its own process tree:
mediagate with 1 and with 2 workers (the stream endpoint, a local file uploaded
through the API first), and plain aiohttp (`web.FileResponse`) in 1 and in 2
processes on one shared socket, the peer figure for what a second process buys.
The load comes from `wrk` (one thread, 64 connections, a Lua script asking for
random 64 KiB ranges) in its own process. Rounds are interleaved with the server
order rotated every round; the summary shows medians and the 2-over-1 ratios.

    python bench/scale.py --quick     # under a minute
    python bench/scale.py             # 7 rounds of 5 s per server, about 4 minutes

Nothing is pinned: two workers need both cores of a 2-core machine, which the
load generator shares. Printed per run: requests/s, p99, server CPU per request
(the whole process tree), the spread of CPU over the workers (busiest / idlest)
and the CPU every other process used meanwhile, which shows a disturbed run.

--mode instances: two `mediagate serve` instances sharing one PostgreSQL catalog
and one data directory (bench/_instances.py), nginx with deploy/nginx-instances.conf
in front of one of them and in front of both, the same wrk load through each, and
the one instance reached directly; nginx's and PostgreSQL's CPU are shown apart.
--mode uploads: the same instances storing into moto (its own process), timed
rounds of concurrent native uploads through each nginx; MB/s is moto's limit on a
small machine, the instances' CPU per GiB is the figure to read.

--mode catalogs: two one-process `mediagate serve`, each with its own data directory,
one on the SQLite catalog and one on PostgreSQL, the same wrk load on each; the ratio
of their CPU per request (PostgreSQL's own CPU shown apart) is what the catalog's read
path costs a range request.

    python bench/scale.py --mode instances --quick
    python bench/scale.py --mode uploads --quick
    python bench/scale.py --mode catalogs --quick

Several workers are refused until uploads are safe across processes
(`mediagate.supervisor.several_processes_refusal`); this benchmark only reads,
so its server entry point lifts the refusal for itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from _common import (
    ROOT,
    GiB,
    Service,
    child_process,
    cpu_seconds,
    free_port,
    interrupt_on_signals,
    machine_busy_seconds,
    mediagate_env,
    moto_server,
    parse_size,
    render_table,
    wait_until_answering,
)
from _instances import cpu_of, cpu_since, instance, nginx, postgres, process_tree

if TYPE_CHECKING:  # upload.py imports aiohttp, jwt and aiobotocore: only --mode uploads does
    from upload import MediagateClient, Workload

MiB = 1024 * 1024
RANGE_SIZE = 64 * 1024
MODES = ("workers", "instances", "uploads", "catalogs")
UPLOAD_BUCKET = "scale-bench"
JWT_SECRET = "bench-scale-secret-with-enough-length-for-hs256"
# The entry point of the mediagate servers: several workers allowed (read-only load).
MEDIAGATE_ENTRY = (
    "import sys, mediagate.supervisor as supervisor\n"
    "supervisor.several_processes_refusal = lambda settings: None\n"
    "from mediagate.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
WRK_SCRIPT = """\
local size, range_size = {size}, {range_size}
math.randomseed(os.time() + {seed})
request = function()
  local first = math.random(0, size - range_size)
  local range = string.format("bytes=%d-%d", first, first + range_size - 1)
  return wrk.format("GET", "{path}", {{["Range"] = range}})
end
"""


@dataclass(frozen=True)
class Server:
    name: str
    processes: int
    port: int
    path: str  # what to GET, query included
    pid: int  # the supervising parent, or nginx's master in front of instances
    instances: tuple[int, ...] = ()  # behind nginx: the mediagate instances it balances over
    postmaster: int = 0  # the PostgreSQL catalog's, if any

    def server_pids(self) -> list[int]:
        """Whose CPU is the server's: the parent and its workers, or the instances."""
        return list(self.instances) or process_tree(self.pid)

    def worker_pids(self) -> list[int]:
        """Over which the work should spread: the workers, or the instances."""
        return list(self.instances) or process_tree(self.pid)[1:] or [self.pid]

    def balancer_pids(self) -> list[int]:
        return process_tree(self.pid) if self.instances else []

    def catalog_pids(self) -> list[int]:
        """PostgreSQL's postmaster and backends: a range request is a catalog query."""
        return process_tree(self.postmaster) if self.postmaster else []


@dataclass(frozen=True)
class Run:
    requests_per_second: float
    p99_ms: float
    errors: int
    server_cpu: float  # cores
    balancer_cpu: float  # cores used by nginx (0 without)
    catalog_cpu: float  # cores used by PostgreSQL (0 with SQLite)
    worker_spread: float  # busiest worker's CPU / idlest's (1.0 for one process)
    client_cpu: float  # cores used by wrk
    others_cpu: float  # cores used by everything but this server and wrk

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu / self.requests_per_second * 1e6

    @property
    def balancer_us_per_request(self) -> float:
        return self.balancer_cpu / self.requests_per_second * 1e6

    @property
    def catalog_us_per_request(self) -> float:
        return self.catalog_cpu / self.requests_per_second * 1e6

    @property
    def requests_per_core_second(self) -> float:
        """What the server does with the CPU it got: on a shared machine the req/s
        of 2 workers also depend on how much of the second core others left."""
        return self.requests_per_second / self.server_cpu


# --- plain aiohttp, the peer --------------------------------------------------------------


def serve_plain_aiohttp(path: Path, port: int, processes: int, shared: bool) -> None:
    """FileResponse in `processes` forked processes, each on its own SO_REUSEPORT
    socket as mediagate's workers are, or on one shared socket."""
    import asyncio

    from aiohttp import web

    def listener() -> socket.socket:
        sock = socket.create_server(("127.0.0.1", port), backlog=128, reuse_port=not shared)
        sock.setblocking(False)
        return sock

    listeners = [listener()] * processes if shared else [listener() for _ in range(processes)]

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path)

    async def run(listener: socket.socket) -> None:
        app = web.Application()
        app.router.add_get("/file", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, listener).start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    if processes == 1:
        asyncio.run(run(listeners[0]))
        return
    children = []
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # for sigwait below
    for own in listeners:
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            asyncio.run(run(own))
            os._exit(0)
        children.append(pid)
    signal.sigwait({signal.SIGTERM})
    for pid in children:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)


@contextmanager
def plain_aiohttp(
    file: Path, processes: int, workdir: Path, shared: bool = False
) -> Iterator[Server]:
    port = free_port()
    command = [sys.executable, __file__, "--role", "aiohttp", "--file", str(file)]
    command += ["--port", str(port), "--processes", str(processes)]
    command += ["--shared-socket"] if shared else []
    name = f"aiohttp {processes}p" + (" shared" if shared else "")
    with child_process(command, os.environ, workdir / f"{name}.log") as process:
        wait_until_answering(f"http://127.0.0.1:{port}/file", process, workdir / f"{name}.log")
        yield Server(name, processes, port, "/file", process.pid)


# --- mediagate ----------------------------------------------------------------------------


def local_env(data_dir: Path) -> dict[str, str]:
    """mediagate on local storage in `data_dir`, the worktree's code first on the path."""
    python_path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return {
        **os.environ,
        "PYTHONPATH": python_path,
        "MEDIAGATE_DATA_DIR": str(data_dir),
        "MEDIAGATE_JWT_SECRET": JWT_SECRET,
        "MEDIAGATE_LOG_FORMAT": "json",
        "USE_CLOUD_STORAGE": "false",
        "SIGNED_URL_EXPIRY": str(24 * 3600),
    }


@contextmanager
def mediagate(file: Path, workers: int, workdir: Path) -> Iterator[Server]:
    port = free_port()
    env = {
        **local_env(workdir / f"data-{workers}"),
        "MEDIAGATE_HOST": "127.0.0.1",
        "MEDIAGATE_PORT": str(port),
    }
    command = [sys.executable, "-c", MEDIAGATE_ENTRY, "serve", "--workers", str(workers)]
    log = workdir / f"mediagate-{workers}.log"
    with child_process(command, env, log) as process:
        base = f"http://127.0.0.1:{port}"
        wait_until_answering(f"{base}/healthz", process, log)
        path = path_of(upload(base, file))
        yield Server(f"mediagate {workers}w", workers, port, path, process.pid)


def instances_behind_nginx(file: Path, workdir: Path, stack: ExitStack) -> list[Server]:
    """Instances a and b (one process each) on one PostgreSQL catalog and one data
    directory; nginx in front of a alone, another nginx in front of both, and a
    reached directly."""
    catalog = stack.enter_context(postgres())
    env = {**local_env(workdir / "data-shared"), "MEDIAGATE_DATABASE_URL": catalog.url}
    # One after the other: the first brings the catalog's schema up to date.
    a = stack.enter_context(instance("a", env, workdir))
    b = stack.enter_context(instance("b", env, workdir))
    one = stack.enter_context(nginx("1", [a], workdir))
    two = stack.enter_context(nginx("2", [a, b], workdir))
    path = path_of(upload(two.url, file))  # its chunks spread over both instances
    pg = catalog.postmaster
    return [
        # Without nginx: what the proxy adds, and what PostgreSQL adds over SQLite (workers mode).
        Server("instance a, direct", 1, port_of(a), path, a.pid, postmaster=pg),
        Server("nginx -> 1 instance", 1, port_of(one), path, one.pid, (a.pid,), pg),
        Server("nginx -> 2 instances", 2, port_of(two), path, two.pid, (a.pid, b.pid), pg),
    ]


def sqlite_and_postgres(file: Path, workdir: Path, stack: ExitStack) -> list[Server]:
    """One instance on the SQLite catalog and one on PostgreSQL, each with its own copy."""
    catalog = stack.enter_context(postgres())
    sqlite = stack.enter_context(instance("sqlite", local_env(workdir / "data-sqlite"), workdir))
    env = {**local_env(workdir / "data-postgres"), "MEDIAGATE_DATABASE_URL": catalog.url}
    postgresql = stack.enter_context(instance("postgres", env, workdir))
    return [
        Server("sqlite", 1, port_of(sqlite), path_of(upload(sqlite.url, file)), sqlite.pid),
        Server(
            "postgres",
            1,
            port_of(postgresql),
            path_of(upload(postgresql.url, file)),
            postgresql.pid,
            postmaster=catalog.postmaster,
        ),
    ]


def path_of(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def port_of(service: Service) -> int:
    return int(service.url.rsplit(":", 1)[1])


def upload(base: str, file: Path) -> str:
    """Upload `file` through the native API; its signed stream URL."""
    sys.path.insert(0, str(ROOT / "src"))
    from mediagate import tokens

    auth = {"Authorization": f"Bearer {tokens.issue(JWT_SECRET.encode(), 'bench', 3600)}"}

    def call(path: str, data: bytes | None, content_type: str) -> dict[str, object]:
        headers = {**auth, "Content-Type": content_type}
        request = urllib.request.Request(base + path, data=data, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=60) as answer:
            return dict(json.loads(answer.read()))

    size = file.stat().st_size
    initiate = json.dumps({"filename": "bench.mp4", "size": size}).encode()
    session = call("/api/v1/media/upload/initiate", initiate, "application/json")
    chunk_size, prefix = (
        int(str(session["chunk_size"])),
        f"/api/v1/media/upload/{session['session_id']}",
    )
    with file.open("rb") as source:
        for number in range(int(str(session["total_chunks"]))):
            call(f"{prefix}/chunk/{number}", source.read(chunk_size), "application/octet-stream")
    return str(call(f"{prefix}/complete", b"", "application/json")["stream_url"])


# --- measuring ----------------------------------------------------------------------------


def measure(server: Server, args: argparse.Namespace, workdir: Path, seed: int) -> Run:
    script = workdir / f"range-{seed}.lua"
    script.write_text(
        WRK_SCRIPT.format(size=args.size, range_size=RANGE_SIZE, seed=seed, path=server.path)
    )
    url = f"http://127.0.0.1:{server.port}"
    if args.warmup:
        warm = wrk_command(args, args.warmup, script, url)
        subprocess.run(warm, capture_output=True, check=True, timeout=args.warmup + 60)
    pids, balancer = server.server_pids(), server.balancer_pids()
    before, balancer_before = cpu_of(pids), cpu_of(balancer)
    catalog_before = cpu_of(server.catalog_pids())
    busy_before = machine_busy_seconds()
    wrk = subprocess.Popen(
        wrk_command(args, args.duration, script, url), stdout=subprocess.PIPE, text=True
    )
    output, _ = wrk.communicate(timeout=args.duration + 60)
    wrk_cpu = _children_cpu()  # wrk's own CPU, reaped just now
    elapsed_busy = machine_busy_seconds() - busy_before
    used = {pid: cpu_seconds(pid) - before[pid] for pid in pids}
    balancer_cpu, catalog_cpu = cpu_since(balancer_before), cpu_since(catalog_before)
    ours = sum(used.values()) + balancer_cpu + catalog_cpu + wrk_cpu
    workers = [used[pid] for pid in server.worker_pids()]
    server_cpu = sum(used.values()) / args.duration
    return Run(
        requests_per_second=float(_wrk_field(output, r"Requests/sec:\s+([\d.]+)")),
        p99_ms=_latency_ms(output),
        errors=int(_wrk_field(output, r"Non-2xx or 3xx responses:\s+(\d+)", "0"))
        + sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output)),
        server_cpu=server_cpu,
        balancer_cpu=balancer_cpu / args.duration,
        catalog_cpu=catalog_cpu / args.duration,
        worker_spread=max(workers) / min(workers) if min(workers) > 0 else float("inf"),
        client_cpu=wrk_cpu / args.duration,
        others_cpu=max(0.0, (elapsed_busy - ours) / args.duration),
    )


def wrk_command(args: argparse.Namespace, seconds: int, script: Path, url: str) -> list[str]:
    command = [args.wrk, "-t1", f"-c{args.connections}", f"-d{seconds}s", "--latency"]
    return [*command, "-s", str(script), url]


_reaped_cpu = 0.0


def _children_cpu() -> float:
    """CPU of the child processes reaped since the last call (wrk)."""
    global _reaped_cpu
    usage = os.times()
    total = usage.children_user + usage.children_system
    spent, _reaped_cpu = total - _reaped_cpu, total
    return spent


def _wrk_field(output: str, pattern: str, default: str | None = None) -> str:
    found = re.search(pattern, output)
    if found is None:
        if default is not None:
            return default
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    return found.group(1)


def _latency_ms(output: str) -> float:
    value, unit = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", output).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_benchmark(args: argparse.Namespace) -> None:
    results: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="mediagate-scale-") as directory, ExitStack() as stack:
        workdir = Path(directory)
        file = workdir / "bench.mp4"
        print(f"writing a {args.size // MiB} MiB random file ...", flush=True)
        with file.open("wb") as out:
            for _ in range(args.size // MiB):
                out.write(os.urandom(MiB))
        if args.mode == "instances":
            servers = instances_behind_nginx(file, workdir, stack)
        elif args.mode == "catalogs":
            servers = sqlite_and_postgres(file, workdir, stack)
        else:
            servers = [
                stack.enter_context(mediagate(file, 1, workdir)),
                stack.enter_context(mediagate(file, 2, workdir)),
                stack.enter_context(plain_aiohttp(file, 1, workdir)),
                stack.enter_context(plain_aiohttp(file, 2, workdir)),
            ]
        if args.shared_socket_peer and args.mode == "workers":
            servers.append(stack.enter_context(plain_aiohttp(file, 2, workdir, shared=True)))
        width = max(len(server.name) for server in servers)
        _children_cpu()  # start counting wrk's CPU from here
        for round_ in range(args.rounds):
            shift = round_ % len(servers)
            for server in servers[shift:] + servers[:shift]:
                run = measure(server, args, workdir, seed=round_)
                results.setdefault(server.name, []).append(run)
                in_front = f"  nginx {run.balancer_cpu:4.2f}" if args.mode == "instances" else ""
                if args.mode in ("instances", "catalogs"):
                    in_front += f"  pg {run.catalog_cpu:4.2f}"
                print(
                    f"round {round_ + 1}/{args.rounds} {server.name:{width}}"
                    f" {run.requests_per_second:7.0f} req/s  p99 {run.p99_ms:6.2f} ms"
                    f"  server {run.server_cpu:4.2f} cores {run.cpu_us_per_request:4.0f} µs/req"
                    f"  spread {run.worker_spread:4.2f}{in_front}  wrk {run.client_cpu:4.2f}"
                    f"  others {run.others_cpu:4.2f} cores"
                    f"  errors {run.errors}",
                    flush=True,
                )
    print_summary(results, args)


def print_summary(results: dict[str, list[Run]], args: argparse.Namespace) -> None:
    def median(name: str, metric: str) -> float:
        return statistics.median(getattr(run, metric) for run in results[name])

    instances, catalogs = args.mode == "instances", args.mode == "catalogs"
    rows = []
    for name in results:
        rows.append(
            [
                name,
                f"{median(name, 'requests_per_second'):.0f}",
                f"{median(name, 'p99_ms'):.2f}",
                f"{median(name, 'server_cpu'):.2f}",
                f"{median(name, 'cpu_us_per_request'):.0f}",
                f"{median(name, 'worker_spread'):.2f}",
                *(
                    [
                        f"{median(name, 'balancer_cpu'):.2f}",
                        f"{median(name, 'balancer_us_per_request'):.0f}",
                    ]
                    if instances
                    else []
                ),
                *(
                    [
                        f"{median(name, 'catalog_cpu'):.2f}",
                        f"{median(name, 'catalog_us_per_request'):.0f}",
                    ]
                    if instances or catalogs
                    else []
                ),
                f"{median(name, 'client_cpu'):.2f}",
                f"{median(name, 'others_cpu'):.2f}",
                str(sum(run.errors for run in results[name])),
            ]
        )
    print(
        f"\nMedians of {args.rounds} interleaved rounds of {args.duration} s; wrk -t1"
        f" -c{args.connections}, random 64 KiB ranges of a {args.size // MiB} MiB file;"
        f" {os.cpu_count()} CPUs, nothing pinned"
    )
    headers = ["server", "req/s", "p99 ms", "cores", "cpu µs/req", "spread"]
    if instances:
        headers += ["nginx cores", "nginx µs/req"]
    if instances or catalogs:
        headers += ["pg cores", "pg µs/req"]
    headers += ["wrk", "others", "errors"]
    print(render_table(headers, rows))
    if catalogs:
        print_catalog_ratio(results["sqlite"], results["postgres"])
        return
    if instances:
        print(
            "cores and cpu µs/req: the instances' sum (spread: over the instances); nginx: one"
            " worker process, the deploy site, no access log; pg: the PostgreSQL catalog"
        )
        pairs = [("nginx -> 1 instance", "nginx -> 2 instances")]
    else:
        pairs = [("mediagate 1w", "mediagate 2w"), ("aiohttp 1p", "aiohttp 2p")]
    if "aiohttp 2p shared" in results:
        pairs.append(("aiohttp 1p", "aiohttp 2p shared"))
    for one, two in pairs:
        ratios = [
            b.requests_per_second / a.requests_per_second
            for a, b in zip(results[one], results[two], strict=True)
        ]
        ratio = median(two, "requests_per_second") / median(one, "requests_per_second")
        per_core = median(two, "requests_per_core_second") / median(one, "requests_per_core_second")
        print(
            f"{two} / {one}: {ratio:.2f} req/s (ratio of the medians;"
            f" per round {min(ratios):.2f}..{max(ratios):.2f}), {per_core:.2f} req per core-second"
        )


def print_catalog_ratio(sqlite: list[Run], postgres: list[Run]) -> None:
    """PostgreSQL over SQLite in the instance's CPU per request, and with PostgreSQL's own."""

    def ratios(figure: Callable[[Run], float]) -> tuple[float, list[float]]:
        of_medians = statistics.median(map(figure, postgres)) / statistics.median(
            map(figure, sqlite)
        )
        return of_medians, [figure(p) / figure(s) for s, p in zip(sqlite, postgres, strict=True)]

    instance, per_round = ratios(lambda run: run.cpu_us_per_request)
    whole, _ = ratios(lambda run: run.cpu_us_per_request + run.catalog_us_per_request)
    print(
        "cores and cpu µs/req: the mediagate process; pg: the PostgreSQL server (postmaster"
        " and backends)"
    )
    print(
        f"postgres / sqlite: {instance:.2f} CPU per request (ratio of the medians; per round"
        f" {min(per_round):.2f}..{max(per_round):.2f}); {whole:.2f} with PostgreSQL's own CPU"
    )


# --- uploads through instances (--mode uploads) -------------------------------------------


@dataclass(frozen=True)
class UploadTarget:
    name: str
    url: str  # nginx's
    balancer: int  # nginx's master
    instances: tuple[int, ...]  # the instances behind it


@dataclass(frozen=True)
class UploadRun:
    seconds: float
    bytes: int
    server_cpu: float  # seconds, the instances' sum
    worker_spread: float  # the busiest instance's CPU / the idlest's
    balancer_cpu: float  # seconds, nginx
    catalog_cpu: float  # seconds, PostgreSQL
    moto_cpu: float
    client_cpu: float  # this process: the load generator
    others_cpu: float  # cores used by every other process meanwhile

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6

    def per_gib(self, cpu: float) -> float:
        return cpu / (self.bytes / GiB)


def run_upload_benchmark(args: argparse.Namespace) -> None:
    interrupt_on_signals()
    with tempfile.TemporaryDirectory(prefix="mediagate-scale-") as directory, ExitStack() as stack:
        workdir = Path(directory)
        # moto keeps a round's parts in memory (see bench/upload.py): less noise from its disk.
        moto = stack.enter_context(moto_server(workdir, in_memory_up_to=64 * MiB + 1))
        catalog = stack.enter_context(postgres())
        env = {
            **mediagate_env(workdir, moto.url, UPLOAD_BUCKET, JWT_SECRET),
            "MEDIAGATE_DATABASE_URL": catalog.url,
        }
        # One after the other: the first makes the bucket and the catalog's schema.
        a = stack.enter_context(instance("a", env, workdir))
        b = stack.enter_context(instance("b", env, workdir))
        one = stack.enter_context(nginx("1", [a], workdir))
        two = stack.enter_context(nginx("2", [a, b], workdir))
        targets = [
            UploadTarget("nginx -> 1 instance", one.url, one.pid, (a.pid,)),
            UploadTarget("nginx -> 2 instances", two.url, two.pid, (a.pid, b.pid)),
        ]
        results = asyncio.run(upload_rounds(targets, args, moto.pid, catalog.postmaster))
    print_upload_summary(results, args)


async def upload_rounds(
    targets: list[UploadTarget], args: argparse.Namespace, moto: int, postmaster: int
) -> dict[str, list[UploadRun]]:
    import aiohttp

    from upload import MediagateClient, Workload, bearer_token

    load = Workload(args.upload_clients, args.upload_size, args.chunk_size, args.parallel)
    results: dict[str, list[UploadRun]] = {target.name: [] for target in targets}
    connections = load.clients * load.parallel + 8
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        token = bearer_token(JWT_SECRET)
        clients = {t.name: MediagateClient(http, t.url, token) for t in targets}
        for target in targets:  # connections, botocore's models, the catalog's pool
            client = clients[target.name]
            await client.delete(await client.upload(6 * MiB, 6 * MiB, 1, "none"))
        width = max(len(target.name) for target in targets)
        for round_ in range(args.rounds):
            order = targets if round_ % 2 == 0 else targets[::-1]
            for target in order:
                run = await upload_phase(target, clients[target.name], load, moto, postmaster)
                results[target.name].append(run)
                print(
                    f"round {round_ + 1}/{args.rounds} {target.name:{width}}"
                    f" {run.mb_per_s:6.1f} MB/s  server {run.per_gib(run.server_cpu):4.2f} s/GiB"
                    f"  spread {run.worker_spread:4.2f}"
                    f"  nginx {run.per_gib(run.balancer_cpu):4.2f}"
                    f"  pg {run.per_gib(run.catalog_cpu):4.2f}"
                    f"  moto {run.per_gib(run.moto_cpu):4.2f}"
                    f"  client {run.per_gib(run.client_cpu):4.2f} s/GiB"
                    f"  others {run.others_cpu:4.2f} cores",
                    flush=True,
                )
    return results


async def upload_phase(
    target: UploadTarget, client: MediagateClient, load: Workload, moto: int, postmaster: int
) -> UploadRun:
    """`load.clients` uploads at once through `target`; the media deleted after the timing."""
    instances = cpu_of(target.instances)
    balancer, catalog = cpu_of(process_tree(target.balancer)), cpu_of(process_tree(postmaster))
    moto_before, client_before = cpu_seconds(moto), time.process_time()
    busy_before, started = machine_busy_seconds(), time.perf_counter()
    media = await asyncio.gather(
        *(
            client.upload(load.size, load.chunk_size, load.parallel, "none")
            for _ in range(load.clients)
        )
    )
    seconds = time.perf_counter() - started
    client_cpu = time.process_time() - client_before
    busy = machine_busy_seconds() - busy_before
    used = [cpu_seconds(pid) - before for pid, before in instances.items()]
    balancer_cpu, catalog_cpu = cpu_since(balancer), cpu_since(catalog)
    moto_cpu = cpu_seconds(moto) - moto_before
    for media_id in media:
        await client.delete(media_id)
    ours = sum(used) + balancer_cpu + catalog_cpu + moto_cpu + client_cpu
    return UploadRun(
        seconds=seconds,
        bytes=load.total_bytes,
        server_cpu=sum(used),
        worker_spread=max(used) / min(used) if min(used) > 0 else float("inf"),
        balancer_cpu=balancer_cpu,
        catalog_cpu=catalog_cpu,
        moto_cpu=moto_cpu,
        client_cpu=client_cpu,
        others_cpu=max(0.0, busy - ours) / seconds,
    )


def print_upload_summary(results: dict[str, list[UploadRun]], args: argparse.Namespace) -> None:
    def median(name: str, figure: Callable[[UploadRun], float]) -> float:
        return statistics.median(figure(run) for run in results[name])

    def per_gib(name: str, field: str) -> float:
        return median(name, lambda run: run.per_gib(getattr(run, field)))

    rows = []
    for name, runs in results.items():
        speeds = [run.mb_per_s for run in runs]
        rows.append(
            [
                name,
                f"{statistics.median(speeds):.1f}",
                f"{min(speeds):.1f}-{max(speeds):.1f}",
                f"{per_gib(name, 'server_cpu'):.2f}",
                f"{median(name, lambda run: run.worker_spread):.2f}",
                f"{per_gib(name, 'balancer_cpu'):.2f}",
                f"{per_gib(name, 'catalog_cpu'):.2f}",
                f"{per_gib(name, 'moto_cpu'):.2f}",
                f"{per_gib(name, 'client_cpu'):.2f}",
                f"{median(name, lambda run: run.others_cpu):.2f}",
            ]
        )
    print(
        f"\nMedians of {args.rounds} interleaved rounds; each {args.upload_clients} uploads at once"
        f" of {args.upload_size // MiB} MiB, {args.chunk_size // MiB} MiB chunks,"
        f" {args.parallel} in flight per upload, into moto; {os.cpu_count()} CPUs, nothing pinned"
    )
    headers = ["through", "MB/s", "min-max", "server CPU s/GiB", "spread", "nginx s/GiB"]
    headers += ["pg s/GiB", "moto s/GiB", "client s/GiB", "others cores"]
    print(render_table(headers, rows))
    one, two = results
    ratios = [b.mb_per_s / a.mb_per_s for a, b in zip(results[one], results[two], strict=True)]
    ratio = median(two, lambda run: run.mb_per_s) / median(one, lambda run: run.mb_per_s)
    cpu = per_gib(two, "server_cpu") / per_gib(one, "server_cpu")
    print(
        f"{two} / {one}: {ratio:.2f} MB/s (ratio of the medians; per round"
        f" {min(ratios):.2f}..{max(ratios):.2f}), {cpu:.2f} server CPU per GiB"
    )
    print(
        "note: moto (pure Python), the instances, nginx, PostgreSQL and this client share the"
        " machine's cores, so MB/s is moto's limit, not mediagate's: the server CPU per GiB is"
        " the figure that carries over to a real S3."
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    option = parser.add_argument
    option("--rounds", type=int, default=7, help="interleaved rounds (7)")
    option("--duration", type=int, default=5, help="seconds measured per run (5)")
    option("--warmup", type=int, default=1, help="unmeasured seconds before each run (1)")
    option("--connections", type=int, default=64, help="wrk connections (64)")
    option("--size", type=int, default=64 * MiB, help="file size in bytes (64 MiB)")
    option("--quick", action="store_true", help="3 rounds of 2 s: under a minute")
    option(
        "--mode",
        choices=MODES,
        default="workers",
        help="workers: serve --workers 1 vs 2 and plain aiohttp (default); instances: 1 vs 2"
        " instances behind nginx on PostgreSQL, range requests; uploads: the same, uploads"
        " into moto; catalogs: one instance on SQLite vs one on PostgreSQL, range requests",
    )
    option("--upload-clients", type=int, help="uploads: uploads at once (4; --quick: 2)")
    option("--upload-size", type=parse_size, default=64 * MiB, help="uploads: bytes each (64M)")
    option("--chunk-size", type=parse_size, default=8 * MiB, help="uploads: chunk size (8M)")
    option("--parallel", type=int, default=4, help="uploads: chunks in flight per upload (4)")
    option(
        "--shared-socket-peer",
        action="store_true",
        help="add plain aiohttp in 2 processes sharing one socket (what --workers does not do)",
    )
    # Internal: the same script runs the plain aiohttp servers.
    option("--role", help=argparse.SUPPRESS)
    option("--file", type=Path, help=argparse.SUPPRESS)
    option("--port", type=int, help=argparse.SUPPRESS)
    option("--processes", type=int, help=argparse.SUPPRESS)
    option("--shared-socket", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 3, 2
    if args.upload_clients is None:
        args.upload_clients = 2 if args.quick else 4
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.role == "aiohttp":
        serve_plain_aiohttp(args.file, args.port, args.processes, args.shared_socket)
        return
    if args.mode == "uploads":
        run_upload_benchmark(args)
        return
    args.wrk = shutil.which("wrk")
    if args.wrk is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    run_benchmark(args)


if __name__ == "__main__":
    main()
