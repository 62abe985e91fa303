"""Helpers the benchmarks share: child processes on loopback, /proc figures, tables.

Only the standard library: a benchmark should not change what it measures by
importing more than the client it drives.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1
SIZE_UNITS = {"": 1, "K": KiB, "M": MiB, "G": GiB}


def parse_size(text: str) -> int:
    """`67108864`, `64M`, `64MiB`, `1G`: binary units."""
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = cleaned[-1] if cleaned and cleaned[-1] in SIZE_UNITS else ""
    number = cleaned[: len(cleaned) - len(unit)]
    try:
        value = int(float(number) * SIZE_UNITS[unit])
    except ValueError:
        raise ValueError(f"not a size: {text!r} (try 64M or 1G)") from None
    if value < 0:
        raise ValueError(f"a size cannot be negative: {text!r}")
    return value


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- figures of another process, from /proc --------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time all cores of the machine have spent busy since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def memory_bytes(pid: int, field: str) -> int:
    """A `Vm…` line of /proc/<pid>/status (VmRSS now, VmHWM peak), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * KiB
    raise KeyError(f"{field} is not in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> bool:
    """Start VmHWM again from the current RSS (Linux >= 4.0); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# --- child processes ----------------------------------------------------------------


def _die_with_parent() -> None:
    # Runs in the child before exec: a SIGKILLed benchmark must not leave servers behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def child_process(
    command: Sequence[str], env: Mapping[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` with its output in `log_path`; terminate (then kill) it on exit."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C reaches only us, and we stop it in order.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        try:
            yield process
        finally:
            stop_process(process)


def stop_process(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace)


def wait_until_answering(
    url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 30.0
) -> None:
    """Poll `url` until any HTTP answer comes back; fail early if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{url}: the process exited ({process.returncode})\n{tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # an error status is still an answer
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s\n{tail(log_path)}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass(frozen=True)
class Service:
    """A server running in a child process, answering on `url`."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.contextmanager
def moto_server(workdir: Path, in_memory_up_to: int | None = None) -> Iterator[Service]:
    """moto's S3 server on a free loopback port.

    moto keeps each part and object in a SpooledTemporaryFile: in memory up to
    `in_memory_up_to` bytes (its default is 5 MiB), on disk in `workdir` beyond.
    Keeping them in memory costs moto's RAM but spares it ~2 s of CPU per GiB
    of temp-file writes and reads, which makes its speed less noisy.
    """
    port = free_port()
    log_path = workdir / "moto.log"
    spool = workdir / "moto-tmp"
    spool.mkdir()
    env = {**os.environ, "TMPDIR": str(spool)}
    if in_memory_up_to is not None:
        env["MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"] = str(in_memory_up_to)
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with child_process(command, env, log_path) as process:
        service = Service(f"http://127.0.0.1:{port}", process, log_path)
        wait_until_answering(service.url + "/", process, log_path)
        yield service


def mediagate_env(workdir: Path, s3_endpoint: str, bucket: str, jwt_secret: str) -> dict[str, str]:
    """Environment for a `python -m mediagate …` child storing into `bucket` at `s3_endpoint`.

    The worktree's `src` comes first on PYTHONPATH, so the code measured is the
    code beside this script even when another checkout is installed.
    """
    python_path = os.pathsep.join(
        part for part in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if part
    )
    return {
        **os.environ,
        "PYTHONPATH": python_path,
        "USE_CLOUD_STORAGE": "true",
        "AWS_S3_BUCKET_NAME": bucket,
        "AWS_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_S3_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "MEDIAGATE_DATA_DIR": str(workdir / "data"),
        "MEDIAGATE_JWT_SECRET": jwt_secret,
        "MEDIAGATE_LOG_FORMAT": "json",
    }


@contextlib.contextmanager
def mediagate_server(
    workdir: Path,
    s3_endpoint: str,
    bucket: str,
    secret: str,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Service]:
    """`python -m mediagate serve` on a free loopback port, once it answers."""
    port = free_port()
    env = {**mediagate_env(workdir, s3_endpoint, bucket, secret), "MEDIAGATE_PORT": str(port)}
    env |= extra_env or {}
    log_path = workdir / "mediagate.log"
    command = [sys.executable, "-m", "mediagate", "serve", "--host", "127.0.0.1"]
    with child_process(command, env, log_path) as process:
        service = Service(f"http://127.0.0.1:{port}", process, log_path)
        # The app creates the bucket before it listens, so any answer means ready.
        wait_until_answering(service.url + "/api/v1/media", process, log_path)
        yield service


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to fit; the first left-aligned, the figures right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [headers, ["-" * width for width in widths], *rows]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def interrupt_on_signals() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt wherever the bench is, even inside
    the event loop (asyncio.run's own SIGINT handler only cancels the main task,
    which a library may swallow), so its servers and temp dirs are cleaned up too."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
