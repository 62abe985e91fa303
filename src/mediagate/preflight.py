"""Start-up checks of what a setting names but cannot check by itself.

A data directory that is a file or not writable, or a listen host that does not
resolve, would otherwise end in a traceback deep in the server's start; each is
a SettingsError here instead: one line naming the variable and the fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
from pathlib import Path

from mediagate.config import SettingsError


def check_data_dir(path: Path) -> None:
    """Create the data directory if missing and prove that files can be written in it."""
    where = f"MEDIAGATE_DATA_DIR={str(path)!r}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SettingsError(
            f"invalid setting {where}: it (or a parent) is a file, not a directory; "
            "point MEDIAGATE_DATA_DIR at a directory"
        ) from None
    except OSError as error:
        raise SettingsError(
            f"invalid setting {where}: cannot create it ({error.strerror}); create it "
            f"writable by this user (uid {os.getuid()}) or point MEDIAGATE_DATA_DIR elsewhere"
        ) from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise SettingsError(
            f"invalid setting {where}: cannot write in it ({error.strerror}); make it "
            f"writable by this user (uid {os.getuid()}) or point MEDIAGATE_DATA_DIR elsewhere"
        ) from None


# In the data directory: held (flock) by the server that uses its SQLite catalog.
SERVE_LOCK_FILE = "serve.lock"


def lock_data_dir(path: Path) -> int:
    """Hold the data directory for this process (until it exits or the fd is closed).

    With SQLite the rules that keep an upload correct hold in one process's memory,
    so a second server on the same directory must not start. An OS lock, not a pid
    file: the kernel drops it when the holder dies, SIGKILL included."""
    lock = path / SERVE_LOCK_FILE
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = ""
        with contextlib.suppress(OSError):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        if not isinstance(error, BlockingIOError):
            raise SettingsError(
                f"invalid setting MEDIAGATE_DATA_DIR={str(path)!r}: cannot lock {lock} "
                f"({error.strerror}); put the data directory on a file system with locks"
            ) from None
        raise SettingsError(
            f"invalid setting MEDIAGATE_DATA_DIR={str(path)!r}: another mediagate serve "
            f"(pid {holder or 'unknown'}) runs on it with its SQLite catalog; stop that one "
            "or point this one at another data directory (several servers on one catalog "
            "need MEDIAGATE_DATABASE_URL, PostgreSQL)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def check_listen_host(host: str, port: int) -> None:
    try:
        # Empty means every interface, as asyncio's create_server takes it.
        socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        reason = error.strerror if isinstance(error, socket.gaierror) else "not a valid host name"
        raise SettingsError(
            f"invalid setting MEDIAGATE_HOST={host!r} (or --host): it does not resolve "
            f"({reason}); use an address of this machine, e.g. 127.0.0.1, or 0.0.0.0 for all"
        ) from None
