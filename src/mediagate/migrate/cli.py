"""`mediagate migrate` (also `python -m mediagate.migrate`): options, checks, output, exit codes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from mediagate.arguments import positive_int
from mediagate.catalog.base import CATALOG_FILE
from mediagate.config import Settings
from mediagate.core.keys import is_valid_user_id
from mediagate.errors import NotFound, Problem
from mediagate.logs import configure_logging
from mediagate.migrate.plan import LEGACY_OWNER, Options

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

DESCRIPTION = """\
Move media whose bytes are on local disk into the S3 bucket, under the same key
(media/{user_id}/{media_id}/{filename}). Each file is read once: its parts go
to S3 with a Content-MD5 that S3 checks, and the whole file is hashed (SHA-256).
Only when the copy is verified does the catalog switch the media to S3, in one atomic
step, so a running server keeps serving every media throughout, and an
interrupted run leaves each media fully local or fully in S3. Run it again to
finish: it picks up only what is left. Needs USE_CLOUD_STORAGE=true and
AWS_S3_BUCKET_NAME.
"""

EPILOG = """\
exit status: 0 all done (or verified), 1 some file failed (or the verification
failed; see the summary), 2 bad usage or settings, 130 interrupted (run again).
"""


def add_parser(commands: Any) -> None:
    """Add `migrate` to the `mediagate` command's subparsers."""
    parser = commands.add_parser(
        "migrate",
        help="move local media into S3 (verified, safe to re-run)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be copied, imported and deleted (files, bytes); change nothing",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=10,
        metavar="N",
        help="files in flight at once, and S3 requests in flight in all (default: 10); a file "
        "larger than MEDIAGATE_CHUNK_SIZE goes as a multipart upload of parts of that size, "
        "several at once within the same bound, so at most N parts are in memory",
    )
    parser.add_argument(
        "--delete-local",
        action="store_true",
        help="delete each local copy once its S3 copy is verified and its record switched "
        "(also the copies that earlier runs kept)",
    )
    parser.add_argument(
        "--verify",
        metavar="MEDIA_ID",
        help="read the S3 object of MEDIA_ID back and compare its size and checksum with the "
        "record; exit 0 if they match, 1 if not",
    )
    parser.add_argument(
        "--user-id",
        metavar="USER",
        help="only this user's media; also the owner of files imported with --source "
        f"(default: all users; imports belong to {LEGACY_OWNER!r})",
    )
    parser.add_argument(
        "--source",
        type=Path,
        metavar="DIR",
        help="also import the files below DIR that the catalog does not know (a legacy "
        "upload folder) as new media in S3; symbolic links are not followed, and a file "
        "imported once is recognised by its path and not imported again",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the summary (or the plan, or the verification) as JSON on stdout",
    )
    parser.set_defaults(handler=run)


def usage_problem(settings: Settings, arguments: argparse.Namespace) -> str | None:
    """What is wrong with this command line and these settings, in one line, if anything."""
    if not settings.use_cloud_storage or not settings.s3_bucket:
        return (
            "set USE_CLOUD_STORAGE=true and AWS_S3_BUCKET_NAME: the bucket is where media "
            "goes, and only a server with cloud storage on serves media from it"
        )
    if arguments.user_id is not None and not is_valid_user_id(arguments.user_id):
        return (
            f"--user-id {arguments.user_id!r} is not a valid user id "
            "(letters, digits and . _ @ + = -, at most 128)"
        )
    if arguments.verify and (arguments.dry_run or arguments.source or arguments.delete_local):
        return "--verify checks one media; it combines with --user-id and --json only"
    if arguments.source is not None:
        return source_problem(arguments.source, settings.data_dir)
    if settings.database_url is None and not (settings.data_dir / CATALOG_FILE).is_file():
        return (
            f"there is no catalog at {settings.data_dir / CATALOG_FILE}: "
            "is MEDIAGATE_DATA_DIR the server's data directory?"
        )
    return None


def source_problem(source: Path, data_dir: Path) -> str | None:
    if not source.is_dir():
        return f"--source {source}: not a directory"
    source, data_dir = source.resolve(), data_dir.resolve()
    if source.is_relative_to(data_dir) or data_dir.is_relative_to(source):
        return (
            f"--source {source} overlaps the data directory {data_dir}: "
            "give the folder that holds only the legacy files"
        )
    return None


def run(settings: Settings, arguments: argparse.Namespace) -> int:
    problem = usage_problem(settings, arguments)
    if problem is not None:
        return fail(problem, EXIT_USAGE)
    on_terminal = sys.stderr.isatty()
    # On a terminal the progress bar tells what the per-file log lines would.
    configure_logging(settings.log_format, logging.WARNING if on_terminal else logging.INFO)
    try:
        if arguments.verify:
            return asyncio.run(verify(settings, arguments))
        return migrate(settings, arguments, show_bar=on_terminal and not arguments.dry_run)
    except NotFound as error:
        return fail(error.detail, EXIT_USAGE)
    except Problem as error:
        return fail(error.detail, EXIT_FAILED)
    except OSError as error:  # the data directory or the catalog, before any file is moved
        return fail(str(error), EXIT_FAILED)
    except KeyboardInterrupt:
        return fail("interrupted before anything was moved", EXIT_INTERRUPTED)


def fail(message: str, code: int) -> int:
    print(f"mediagate migrate: {message}", file=sys.stderr)
    return code


def migrate(settings: Settings, arguments: argparse.Namespace, *, show_bar: bool) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from mediagate.migrate.report import Report, Summary, plan_as_json, plan_as_text
    from mediagate.migrate.service import dry_run, migrate_all

    options = Options(
        user_id=arguments.user_id,
        source=arguments.source,
        delete_local=arguments.delete_local,
        batch_size=arguments.batch_size,
        key_prefix=settings.key_prefix,
        part_size=settings.chunk_size,
    )
    if arguments.dry_run:
        plan = asyncio.run(dry_run(settings, options))
        bucket = settings.s3_bucket or ""
        print_json_or_text(arguments.json, plan_as_json(plan, bucket), plan_as_text(plan, bucket))
        return EXIT_OK
    summary = Summary()
    # Log lines go around the progress bar only when there is one: tqdm.write
    # costs about 1 ms a line, a tenth of a small file's whole migration.
    redirect = logging_redirect_tqdm() if show_bar else contextlib.nullcontext()
    try:
        with redirect:
            asyncio.run(migrate_all(settings, options, Report(summary, show_bar=show_bar)))
    except KeyboardInterrupt:
        summary.interrupted = True
    print_json_or_text(arguments.json, summary.as_json(), summary.as_text())
    return summary.exit_code


async def verify(settings: Settings, arguments: argparse.Namespace) -> int:
    from mediagate.migrate.service import open_stores, verify_media

    bucket = settings.s3_bucket or ""
    async with open_stores(settings) as stores:
        result = await verify_media(stores, arguments.verify, user_id=arguments.user_id)
    print_json_or_text(arguments.json, result.as_json(bucket), result.as_text(bucket))
    return EXIT_OK if result.ok else EXIT_FAILED


def print_json_or_text(as_json: bool, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, indent=2) if as_json else text)
