"""mediagate: chunked media uploads into S3 or local disk, served with Range support."""

from __future__ import annotations

from importlib import metadata


def version() -> str:
    """The installed release (`mediagate --version`, the start-up log)."""
    try:
        return metadata.version("mediagate")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"
