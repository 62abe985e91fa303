"""Where a run remembers its upload session, so that the next run of the same upload resumes it.

One small JSON file per (server, absolute path) under the user's cache directory
(`$XDG_CACHE_HOME/mediagate/uploads`, else `~/.cache/mediagate/uploads`). It
holds the session id and the file's size and mtime when the session started:
a file changed since no longer matches, and gets a fresh session.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from mediagate.client.file_source import Fingerprint


def default_directory() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mediagate" / "uploads"


@dataclass(frozen=True)
class ResumeState:
    server: str
    path: str
    size: int
    mtime_ns: int
    session_id: str
    # A direct upload (its chunks in the bucket are listed there).
    direct: bool = False

    def matches(self, fingerprint: Fingerprint) -> bool:
        return (self.path, self.size, self.mtime_ns) == (
            fingerprint.path,
            fingerprint.size,
            fingerprint.mtime_ns,
        )


class ResumeStore:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_directory()

    def load(self, server: str, path: str) -> ResumeState | None:
        """The state kept for this upload, or None (also for an unreadable file)."""
        try:
            data = json.loads(self._file(server, path).read_text())
            state = ResumeState(**data)
        except (OSError, ValueError, TypeError):
            return None
        return state if (state.server, state.path) == (server, path) else None

    def save(self, state: ResumeState) -> None:
        """Write atomically: a crash mid-write leaves the old state or the new, never half.

        Private to the user (folder 0700, files 0600): a session id lets its
        holder's token add chunks, and a path tells what the user uploads."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)  # made by an older version, or under another umask
        target = self._file(state.server, state.path)
        partial = target.with_suffix(".tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            os.fchmod(fd, 0o600)  # a .tmp left by a crash keeps its old mode otherwise
            file.write(json.dumps(asdict(state)))
        partial.replace(target)

    def remove(self, server: str, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._file(server, path).unlink()

    def _file(self, server: str, path: str) -> Path:
        key = hashlib.sha256(f"{server}\n{path}".encode()).hexdigest()[:32]
        return self.directory / f"{key}.json"
