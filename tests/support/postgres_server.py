"""A throwaway PostgreSQL server on loopback, made with the Debian binaries, for the tests.

initdb and pg_ctl refuse to run as root, so as root they run as the `postgres`
user (runuser); as anyone else, as that user. Durability is off (fsync,
synchronous_commit): the cluster is deleted at the end of the run anyway.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg


def _binaries() -> Path:
    """MEDIAGATE_TEST_PG_BIN, else Debian's PostgreSQL 15, else its newest version installed."""
    if "MEDIAGATE_TEST_PG_BIN" in os.environ:
        return Path(os.environ["MEDIAGATE_TEST_PG_BIN"])
    debian = Path("/usr/lib/postgresql")
    installed = sorted(debian.glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    preferred = debian / "15" / "bin"
    if (preferred / "initdb").is_file() or not installed:
        return preferred
    return installed[-1].parent


BIN = _binaries()
SUPERUSER = "postgres"


def available() -> bool:
    return (BIN / "initdb").is_file() and (BIN / "pg_ctl").is_file()


class PostgresServer:
    def __init__(self, port: int) -> None:
        self.port = port
        # Not below pytest's tmp_path: its parents are private to root.
        self.root = Path(tempfile.mkdtemp(prefix="mediagate-pg-"))
        self._data = self.root / "data"
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, SUPERUSER, SUPERUSER)
            self._as_owner = ["runuser", "-u", SUPERUSER, "--"]

    def _run(self, *command: str) -> None:
        answer = subprocess.run(
            [*self._as_owner, *command], capture_output=True, text=True, timeout=60, check=False
        )
        if answer.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({answer.returncode}): {answer.stderr}")

    def init(self) -> None:
        self._run(
            str(BIN / "initdb"),
            "--pgdata",
            str(self._data),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C.UTF-8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(BIN / "pg_ctl"),
            "--pgdata",
            str(self._data),
            "--log",
            str(self.root / "server.log"),
            "--options",
            options,
            "--wait",
            "start",
        )

    def stop(self) -> None:
        self._run(str(BIN / "pg_ctl"), "--pgdata", str(self._data), "--mode", "fast", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new, empty database (made from template0: a few milliseconds)."""
        name = f"test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)
