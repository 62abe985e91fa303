"""mediagate: chunked media uploads into S3 or local disk, served with Range support."""

from __future__ import annotations


def version() -> str:
    """The installed release (`mediagate --version`, the start-up log)."""
    # Imported here: ~40 ms that every command (the client's too) would pay at start-up.
    from importlib import metadata

    try:
        return metadata.version("mediagate")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"
