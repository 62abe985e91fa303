"""Argument types shared by the command lines (`mediagate`, its client commands, migrate).

A leaf: the client's commands use it too, and they import nothing of the server.
"""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A whole number of at least 1; anything else is a usage error that names the value."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value
