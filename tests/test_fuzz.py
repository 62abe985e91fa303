"""A live `mediagate serve` fuzzed by schemathesis against its own OpenAPI document.

`st run --checks all` with a fixed seed and a bounded number of examples per
operation, on local storage and on S3 (moto): no 5xx, and every answer's status,
content type, headers and body as the document says. What the fuzzer cannot
know (state-dependent answers, a JSON Schema limit, a finding another branch
owns) is said, narrowly, in tests/fuzz/schemathesis.toml and tests/fuzz/hooks.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from mediagate import tokens
from support.server_process import ServerProcess
from support.tier import tier_s3_env

FUZZ = Path(__file__).parent / "fuzz"
SECRET = "test-secret-with-enough-length-for-hs256"
SEED = 20261201
EXAMPLES_PER_OPERATION = 25
# The stateful phase shares its scenarios among all the document's links, so few
# reach tus's chains (a creation's Location, then HEAD, PATCH, DELETE): they get
# a stateful run of their own, of tus alone.
TUS_CHAINS = ("--include-tag", "tus", "--phases", "stateful")
TUS_CHAIN_EXAMPLES = 20
RUN_TIMEOUT = 300


async def fuzz(
    server: ServerProcess,
    workdir: Path,
    *options: str,
    examples: int = EXAMPLES_PER_OPERATION,
) -> tuple[int, str]:
    """Run schemathesis against the server; its exit code and report."""
    token = tokens.issue(SECRET, "fuzzer", 3600)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--no-color",
        "--config-file",
        str(FUZZ / "schemathesis.toml"),
        "run",
        f"{server.base}/api/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(examples),
        "--workers",
        "1",
        "--output-truncate",
        "false",
        *options,
        cwd=workdir,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(FUZZ / "hooks.py")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode or 0, output.decode(errors="replace")


async def serve_and_fuzz(tmp_path: Path, env: dict[str, str]) -> None:
    server = ServerProcess(
        tmp_path / "data",
        {"MEDIAGATE_HOST": "127.0.0.1", "MEDIAGATE_JWT_SECRET": SECRET, **env},
    )
    await server.start()
    try:
        runs = [
            await fuzz(server, tmp_path),
            await fuzz(server, tmp_path, *TUS_CHAINS, examples=TUS_CHAIN_EXAMPLES),
        ]
    finally:
        await server.stop()
    for code, report in runs:
        assert code == 0, report
        assert " passed" in report, report


async def test_local_server_conforms_to_its_document(tmp_path: Path) -> None:
    await serve_and_fuzz(tmp_path, {})


async def test_s3_server_conforms_to_its_document(
    tmp_path: Path, moto_endpoint: str, bucket: str
) -> None:
    await serve_and_fuzz(
        tmp_path,
        {
            "USE_CLOUD_STORAGE": "true",
            "AWS_S3_BUCKET_NAME": bucket,
            **tier_s3_env(moto_endpoint),
        },
    )
