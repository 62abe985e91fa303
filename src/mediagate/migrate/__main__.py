"""`python -m mediagate.migrate`: the same command as `mediagate migrate`."""

import argparse
import sys

from mediagate.config import SettingsError, load_settings
from mediagate.migrate.cli import add_parser


def main(argv: list[str]) -> int:
    root = argparse.ArgumentParser(prog="mediagate")
    add_parser(root.add_subparsers(required=True))
    arguments = root.parse_args(["migrate", *argv])
    try:
        status: int = arguments.handler(load_settings(), arguments)
    except SettingsError as error:
        print(f"mediagate: {error}", file=sys.stderr)
        return 2
    return status


sys.exit(main(sys.argv[1:]))
