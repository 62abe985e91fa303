"""What the catalog's chunk leases cost a chunk: one server on PostgreSQL, 64 KiB chunks
(one per session) into local storage (so that the catalog's share shows), the upload
rules kept in the catalog (as with several instances) or in the process's memory,
interleaved rounds.

    PYTHONPATH=src .venv/bin/python bench/chunk_locks.py --database-url postgresql://…

Printed: the median over rounds of milliseconds per chunk (sequential requests), and
catalog transactions per chunk (each one borrowed pool connection, a few statements).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from mediagate import tokens
from mediagate.catalog.postgres import PostgresCatalog
from mediagate.config import Settings
from mediagate.core.session_locks import InProcessSessionLocks
from mediagate.web import app as app_module

CHUNK = 64 * 1024


class Counted:
    """Counts the catalog's transactions: its borrowed connections, one transaction each."""

    def __init__(self) -> None:
        self.transactions = 0
        self._original = PostgresCatalog._connection

    def __enter__(self) -> Counted:
        def counted(catalog: PostgresCatalog) -> Any:
            self.transactions += 1
            return self._original(catalog)

        PostgresCatalog._connection = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *_: object) -> None:
        PostgresCatalog._connection = self._original  # type: ignore[method-assign]


async def one_round(settings: Settings, chunks: int, in_process: bool) -> tuple[float, float]:
    original = app_module.session_locks
    if in_process:
        app_module.session_locks = lambda _settings, catalog: InProcessSessionLocks(catalog)
    server = TestServer(app_module.create_app(settings))
    try:
        await server.start_server()
    finally:
        app_module.session_locks = original
    secret = tokens.load_secret(settings)
    headers = {"Authorization": f"Bearer {tokens.issue(secret, 'bench', 600)}"}
    body = b"x" * CHUNK
    try:
        async with aiohttp.ClientSession(str(server.make_url("")), headers=headers) as client:
            sids = []
            for _ in range(chunks):  # one chunk each: chunks of a session are 5 MiB at least
                async with client.post(
                    "/api/v1/media/upload/initiate", json={"filename": "b.bin", "size": CHUNK}
                ) as answer:
                    sids.append((await answer.json())["session_id"])
            with Counted() as counted:
                started = time.perf_counter()
                for sid in sids:
                    async with client.post(
                        f"/api/v1/media/upload/{sid}/chunk/0", data=body
                    ) as answer:
                        assert answer.status == 200, await answer.text()
                elapsed = time.perf_counter() - started
    finally:
        await server.close()
    return elapsed / chunks * 1000, counted.transactions / chunks


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--chunks", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"catalog": [], "in-process": []}
    with tempfile.TemporaryDirectory() as workdir:
        settings = Settings(
            _env_file=None,
            data_dir=Path(workdir),
            database_url=arguments.database_url,
            jwt_secret="bench-secret-with-enough-length-for-hs256",
            max_open_sessions_per_user=1_000_000,
        )
        for round_ in range(arguments.rounds):
            order = ["catalog", "in-process"] if round_ % 2 == 0 else ["in-process", "catalog"]
            for name in order:
                results[name].append(
                    await one_round(settings, arguments.chunks, name == "in-process")
                )
    for name, figures in results.items():
        ms = statistics.median(f[0] for f in figures)
        transactions = statistics.median(f[1] for f in figures)
        print(f"{name:>10}: {ms:.2f} ms/chunk, {transactions:.1f} transactions/chunk")


if __name__ == "__main__":
    asyncio.run(main())
