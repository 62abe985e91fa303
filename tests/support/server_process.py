"""mediagate run as a real process, for tests that kill or signal it, or read its log."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

START_TIMEOUT = 30
# Starts on another port after the one chosen was taken meanwhile.
PORT_TRIES = 3


def free_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`python -m mediagate serve [arguments]` on a free loopback port over `data_dir`,
    with only `env` (and PATH) in its environment, from `data_dir`'s parent folder.

    Its log (stderr, JSON lines) goes to the file `log`, else to a file of its own beside
    `data_dir`; `lines` and `events` read it back.
    """

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str],
        *,
        log: Path | None = None,
        arguments: Sequence[str] = (),
    ) -> None:
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
        self._arguments = list(arguments)
        self.log_file = log or data_dir.parent / f"server-{self.port}.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the process and wait until it listens and answers. Another process of the
        test run may take the port between `free_port()` and the server's bind (and
        answer in its place): the server is then started again on another port."""
        for _ in range(PORT_TRIES):
            if await self._started_on_port():
                return
            self.port = free_port()
            self.base = f"http://127.0.0.1:{self.port}"
            self._env["MEDIAGATE_PORT"] = str(self.port)
        raise AssertionError(f"no free port in {PORT_TRIES} tries: {self.events}")

    async def _started_on_port(self) -> bool:
        """True once it listens and answers; False if its port was taken."""
        self._cwd.mkdir(parents=True, exist_ok=True)
        log = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        written_before = os.fstat(log).st_size
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "mediagate",
                "serve",
                *self._arguments,
                env=self._env,
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        finally:
            os.close(log)  # the child keeps its own copy
        try:
            return await self._until_listening(written_before)
        except BaseException:  # a server that never came up is not left running
            await self.stop()
            raise

    async def _until_listening(self, written_before: int) -> bool:
        assert self.process is not None
        async with asyncio.timeout(START_TIMEOUT), aiohttp.ClientSession() as client:
            while True:
                written = self.log_file.read_bytes()[written_before:]  # JSON or console
                if self.process.returncode is not None:
                    if b"cannot listen on" in written and b"already in use" in written.lower():
                        return False
                    raise AssertionError(f"the server exited: {self.events}")
                if b"server.listening" in written:
                    try:
                        async with client.get(f"{self.base}/healthz"):
                            return True
                    except aiohttp.ClientConnectionError:
                        pass
                await asyncio.sleep(0.05)

    @property
    def lines(self) -> list[dict[str, Any]]:
        """The JSON lines of its log so far (a line still being written is left out)."""
        lines = []
        for raw in self.log_file.read_bytes().splitlines(keepends=True):
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
        return lines

    @property
    def events(self) -> list[str]:
        return [line.get("event", "") for line in self.lines]

    async def logged(self, event: str, seconds: float = 15) -> dict[str, Any]:
        """The first log line of this event, once written."""
        async with asyncio.timeout(seconds):
            while event not in self.events:
                await asyncio.sleep(0.05)
        lines = self.lines
        return lines[[line.get("event") for line in lines].index(event)]

    def signal(self, number: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    async def wait(self, seconds: float = 30) -> int:
        assert self.process is not None
        async with asyncio.timeout(seconds):
            return await self.process.wait()

    async def terminate(self, seconds: float = 15) -> int:
        """SIGTERM, then its exit status."""
        self.signal(signal.SIGTERM)
        return await self.wait(seconds)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.wait()
