"""mediagate run as a real process, for tests that kill or signal it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    def __init__(self, data_dir: Path, env: dict[str, str], *, log: Path | None = None) -> None:
        """`log`: a file to keep the server's log in (stderr), else it is dropped."""
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "MEDIAGATE_DATA_DIR": str(data_dir),
            "MEDIAGATE_PORT": str(self.port),
            "MEDIAGATE_LOG_FORMAT": "json",
            "MEDIAGATE_PROBE": "false",  # only the tests of probing pay for ffprobe
            **env,
        }
        self._cwd = data_dir.parent
        self._log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log = os.open(self._log or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "mediagate",
                "serve",
                env=self._env,
                cwd=self._cwd,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        finally:
            os.close(log)  # the child keeps its own copy
        async with asyncio.timeout(30), aiohttp.ClientSession() as client:
            while True:
                assert self.process.returncode is None, "the server exited at start"
                try:
                    async with client.get(f"{self.base}/api/v1/media"):
                        return
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)

    def signal(self, number: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    async def wait(self, seconds: float = 30) -> int:
        assert self.process is not None
        async with asyncio.timeout(seconds):
            return await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.wait()
