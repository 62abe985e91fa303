"""Several `mediagate serve` instances behind nginx on loopback, sharing one PostgreSQL
catalog and one data directory, as deploy/docker-compose.instances.yml runs them.

nginx's site is deploy/nginx-instances.conf itself with only its upstream servers and
its listen lines replaced, so the benchmark measures the deployed proxy settings.
PostgreSQL is the tests' throwaway server (tests/support/postgres_server.py: Debian's binaries,
run as the `postgres` user when we are root).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from _common import ROOT, Service, child_process, cpu_seconds, free_port, wait_until_answering

DEPLOY_SITE = ROOT / "deploy" / "nginx-instances.conf"
_UPSTREAM_SERVERS = re.compile(r"(?m)(^[ \t]*server mediagate-[^\n]*\n)+")
_LISTEN_LINES = re.compile(r"(?m)(^[ \t]*listen [^\n]*\n)+")


def process_tree(pid: int) -> list[int]:
    """The process and its direct children (nginx's workers, PostgreSQL's backends)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []
    return [pid, *(int(child) for child in children)]


def cpu_of(pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds of each process still alive (a backend may exit meanwhile)."""
    spent = {}
    for pid in pids:
        try:
            spent[pid] = cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return spent


def cpu_since(before: Mapping[int, float]) -> float:
    """CPU seconds the processes of `before` spent since; those that exited count 0."""
    now = cpu_of(list(before))
    return sum(now[pid] - before[pid] for pid in now)


# --- PostgreSQL -------------------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    url: str
    postmaster: int

    def pids(self) -> list[int]:
        return process_tree(self.postmaster)


@contextmanager
def postgres() -> Iterator[Postgres]:
    sys.path.insert(0, str(ROOT / "tests"))
    from support import postgres_server

    if not postgres_server.available():
        sys.exit(f"no PostgreSQL in {postgres_server.BIN}: apt-get install -y postgresql")
    server = postgres_server.PostgresServer(free_port())
    try:
        server.init()
        server.start()
        url = server.new_database()
        postmaster = int((server.root / "data" / "postmaster.pid").read_text().split()[0])
        yield Postgres(url, postmaster)
    finally:
        try:
            server.stop()
        finally:
            server.remove()


# --- mediagate instances -----------------------------------------------------------------


@contextmanager
def instance(name: str, env: Mapping[str, str], workdir: Path) -> Iterator[Service]:
    """One `mediagate serve` (one process) on a free loopback port, with `env`."""
    port = free_port()
    env = {**env, "MEDIAGATE_HOST": "127.0.0.1", "MEDIAGATE_PORT": str(port)}
    log = workdir / f"instance-{name}.log"
    with child_process([sys.executable, "-m", "mediagate", "serve"], env, log) as process:
        service = Service(f"http://127.0.0.1:{port}", process, log)
        wait_until_answering(f"{service.url}/healthz", process, log)
        yield service


# --- nginx -------------------------------------------------------------------------------


def nginx_site(upstream_ports: Sequence[int], port: int) -> str:
    """deploy/nginx-instances.conf, its upstream and listen lines pointed at loopback."""
    site = DEPLOY_SITE.read_text()
    servers = "".join(
        f"    server 127.0.0.1:{upstream} max_fails=1 fail_timeout=10s;\n"
        for upstream in upstream_ports
    )
    site, replaced = _UPSTREAM_SERVERS.subn(lambda _: servers, site, count=1)
    site, listens = _LISTEN_LINES.subn(lambda _: f"    listen 127.0.0.1:{port};\n", site, count=1)
    if not (replaced and listens):
        raise RuntimeError(f"{DEPLOY_SITE}: no `server mediagate-…` or `listen` lines to replace")
    return site


def nginx_config(site: Path, workdir: Path, name: str) -> str:
    # One worker: on 2 cores the instances need the rest, and it keeps nginx's
    # share the same whether it fronts one instance or two.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    temp = workdir / f"nginx-{name}-temp"
    temp.mkdir()
    return (
        f"{user}worker_processes 1;\ndaemon off;\npid {workdir}/nginx-{name}.pid;\n"
        f"error_log {workdir}/nginx-{name}.log warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n"
        "    access_log off;\n"
        f"    client_body_temp_path {temp}/body;\n"
        f"    proxy_temp_path {temp}/proxy;\n"
        f"    include {site};\n"
        "}\n"
    )


@contextmanager
def nginx(name: str, upstreams: Sequence[Service], workdir: Path) -> Iterator[Service]:
    """nginx on a free loopback port in front of `upstreams`, with the deploy site."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).is_file():
        sys.exit("nginx is not installed: apt-get install -y nginx-light")
    port = free_port()
    ports = [int(service.url.rsplit(":", 1)[1]) for service in upstreams]
    site = workdir / f"nginx-{name}-site.conf"
    site.write_text(nginx_site(ports, port))
    config = workdir / f"nginx-{name}.conf"
    config.write_text(nginx_config(site, workdir, name))
    log = workdir / f"nginx-{name}.log"
    command = [binary, "-p", str(workdir), "-e", str(log), "-c", str(config)]
    with child_process(command, os.environ, workdir / f"nginx-{name}.out") as process:
        service = Service(f"http://127.0.0.1:{port}", process, log)
        wait_until_answering(f"{service.url}/healthz", process, log)
        yield service
