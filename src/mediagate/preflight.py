"""Start-up checks of what a setting names but cannot check by itself.

A data directory that is a file or not writable, or a listen host that does not
resolve, would otherwise end in a traceback deep in the server's start; each is
a SettingsError here instead: one line naming the variable and the fix.
"""

from __future__ import annotations

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
