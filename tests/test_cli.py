"""The `mediagate` command itself (its subcommands have their own modules)."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata


def test_version_names_the_installed_release(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mediagate", "--version"],
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"mediagate {metadata.version('mediagate')}\n"
