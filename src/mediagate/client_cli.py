"""`mediagate upload | ls | download | rm`: the client commands (HTTP only, no server settings)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediagate.arguments import positive_int

if TYPE_CHECKING:
    from mediagate.client import MediagateClient, MediagateError
    from mediagate.client.models import UploadProgress, UploadResult
    from mediagate.client.progress_display import Display

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
CLIENT_COMMANDS = ("upload", "ls", "download", "rm")
DEFAULT_SERVER = "http://127.0.0.1:8080"
RESUME_HINT = "run the same command again to resume"
STDIN = Path("-")
MiB = 1024 * 1024

UPLOAD_DESCRIPTION = """\
Upload files to a mediagate server in parallel chunks, retrying what fails.
When the server offers it, the chunks go straight into its bucket, at URLs it
signs (each MD5-checked by S3); otherwise, or when the bucket does not answer,
through the server (each checked with its SHA-256). Interrupted (Ctrl-C, a
crash, a lost network)? Run the same command again: it resumes each unchanged
file where it stopped, sending only the chunks the server lacks. Prints
`MEDIA_ID  FILE` per file. `-` reads standard input (with --name; not
resumable: see docs/client.md).
"""


def add_parsers(commands: Any) -> None:
    """Add the client commands to the `mediagate` command's subparsers."""
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--server",
        default=os.environ.get("MEDIAGATE_URL", DEFAULT_SERVER),
        metavar="URL",
        help=f"the server's base URL (default: MEDIAGATE_URL, else {DEFAULT_SERVER})",
    )
    connection.add_argument(
        "--token",
        default=os.environ.get("MEDIAGATE_TOKEN"),
        help="bearer token (default: MEDIAGATE_TOKEN; `mediagate token USER` on the server)",
    )
    connection.add_argument("--json", action="store_true", help="print results as JSON")
    connection.add_argument(
        "-q", "--quiet", action="store_true", help="no progress and no retry notes, only results"
    )

    upload = commands.add_parser(
        "upload",
        parents=[connection],
        help="upload files (parallel chunks, resumable)",
        description=UPLOAD_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    upload.add_argument(
        "files", nargs="+", type=Path, metavar="FILE", help="a file, or - for standard input"
    )
    upload.add_argument(
        "--name",
        metavar="NAME",
        help="the media's filename (needed for -; with one FILE, instead of its own name)",
    )
    upload.add_argument(
        "--parallel",
        type=positive_int,
        metavar="N",
        help="chunks in flight (default: 8 into the bucket, 4 through the server)",
    )
    upload.add_argument(
        "--chunk-size",
        type=positive_int,
        metavar="MIB",
        help="ask for chunks of this many MiB (the server may adjust; default: 16 into the "
        "bucket, and through the server its own, 8 MiB unless configured; 16-32 spare "
        "server CPU on fast links)",
    )
    upload.add_argument(
        "--sha256",
        action="store_true",
        help="also declare each file's SHA-256 for the server to verify (one extra read; "
        "the file then goes through the server, which checks the bytes it relays)",
    )
    upload.add_argument(
        "--no-resume", action="store_true", help="start a new session even if one can resume"
    )
    upload.add_argument(
        "--direct",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="PUT the chunks straight into the server's bucket at URLs it signs (each "
        "MD5-checked by S3), when the server offers that (the default); chunks the bucket "
        "does not take go through the server. --no-direct: every chunk through the server",
    )
    upload.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="say per file whether its chunks went into the bucket or through the server",
    )
    upload.set_defaults(handler=upload_command)

    listing = commands.add_parser("ls", parents=[connection], help="list your media, newest first")
    listing.add_argument(
        "-l",
        "--long",
        action="store_true",
        help="also each media's duration, picture size, codecs and whether it is faststart",
    )
    listing.set_defaults(handler=ls_command)

    fetch = commands.add_parser(
        "download", parents=[connection], help="save a media to a file (resumable)"
    )
    fetch.add_argument("media_id", metavar="ID")
    fetch.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="file or directory (default: the media's filename, made safe, in this directory)",
    )
    fetch.add_argument(
        "--force",
        action="store_true",
        help="replace a file of that name in the directory (a file named by -o always is)",
    )
    fetch.set_defaults(handler=download_command)

    remove = commands.add_parser("rm", parents=[connection], help="delete media")
    remove.add_argument("media_ids", nargs="+", metavar="ID")
    remove.set_defaults(handler=rm_command)


# --- the commands -----------------------------------------------------------------------


def upload_command(arguments: argparse.Namespace) -> int:
    missing = [str(path) for path in arguments.files if path != STDIN and not path.is_file()]
    if missing:
        return _fail(arguments, f"not a file: {', '.join(missing)}", EXIT_USAGE)
    if arguments.name is not None and len(arguments.files) > 1:
        return _fail(arguments, "--name names one file: give one FILE (or -)", EXIT_USAGE)
    if STDIN in arguments.files and not arguments.name:
        return _fail(arguments, "- (standard input) needs --name NAME", EXIT_USAGE)
    if STDIN in arguments.files and sys.stdin.isatty():
        return _fail(
            arguments, "- reads standard input, a terminal here: pipe the data in", EXIT_USAGE
        )
    arguments.uploaded = []
    return _run(arguments, _upload_all, interrupted=lambda: _how_to_resume(arguments))


def ls_command(arguments: argparse.Namespace) -> int:
    return _run(arguments, _list)


def download_command(arguments: argparse.Namespace) -> int:
    return _run(arguments, _download, interrupted=lambda: RESUME_HINT)


def rm_command(arguments: argparse.Namespace) -> int:
    return _run(arguments, _remove)


Work = Callable[["MediagateClient", argparse.Namespace], Awaitable[int]]


def _run(
    arguments: argparse.Namespace, work: Work, *, interrupted: Callable[[], str] | None = None
) -> int:
    from mediagate.client.api import validate_server_url

    problem = validate_server_url(arguments.server)
    if problem is not None:
        return _fail(arguments, f"--server {problem}", EXIT_USAGE)
    if not arguments.token:
        return _fail(
            arguments,
            "no token: pass --token or set MEDIAGATE_TOKEN "
            "(`mediagate token USER` on the server prints one)",
            EXIT_USAGE,
        )
    try:
        return asyncio.run(_with_client(arguments, work, interrupted))
    except KeyboardInterrupt:
        message = f"interrupted; {interrupted()}" if interrupted else "interrupted"
        return _fail(arguments, message, EXIT_INTERRUPTED)


async def _with_client(
    arguments: argparse.Namespace, work: Work, resume_hint: Callable[[], str] | None
) -> int:
    from mediagate.client import ConnectionFailed, MediagateClient, MediagateError

    notes = arguments.retry_notes = RetryNotes(arguments)
    async with MediagateClient(
        arguments.server,
        arguments.token,
        on_retry=notes.retrying,
        on_recovered=notes.recovered,
    ) as client:
        try:
            return await work(client, arguments)
        except MediagateError as error:
            message = _explain(error, arguments.server)
            if isinstance(error, ConnectionFailed) and error.retryable and resume_hint:
                message += f"; {resume_hint()}"
            return _fail(arguments, message, EXIT_FAILED)


class RetryNotes:
    """Retries told one line per outage (and per file): the first retry says what failed;
    the other chunks' retries, and the later tries, until a call succeeds again, say nothing
    (with 4 chunks in flight, one line per retry would scroll the bar away)."""

    def __init__(self, arguments: argparse.Namespace) -> None:
        self._arguments = arguments
        self._told = False

    def retrying(self, error: MediagateError, delay: float) -> None:
        if self._told or self._arguments.quiet:
            return
        self._told = True
        message = f"{error}; retrying in {delay:.1f} s"
        display = getattr(self._arguments, "display", None)
        if display is not None:  # above its bar, which a plain print would break
            display.note(message)
        else:
            print(f"mediagate {self._arguments.command}: {message}", file=sys.stderr)

    def recovered(self) -> None:
        self._told = False

    next_file = recovered


async def _upload_all(client: MediagateClient, arguments: argparse.Namespace) -> int:
    from mediagate.client import ConnectionFailed, MediagateError, Unauthorized
    from mediagate.client.progress_display import Display

    code = EXIT_OK
    for path in arguments.files:
        label = arguments.name or path.name
        display = arguments.display = Display(label, bar=sys.stderr.isatty(), quiet=arguments.quiet)
        arguments.retry_notes.next_file()
        finished = False
        try:
            result = await _upload_one(client, arguments, path, display)
            finished = True
        except (ConnectionFailed, Unauthorized):
            raise  # the next file would fail the same way
        except (MediagateError, OSError) as error:
            code = EXIT_FAILED
            message = str(error)
            if isinstance(error, MediagateError):
                message = _explain(error, arguments.server)
            if arguments.json:
                _print_result(arguments, {"file": str(path), "error": message}, "")
            else:
                _fail(arguments, f"{path}: {message}", EXIT_FAILED)
            continue
        finally:
            display.close(finished=finished)
        arguments.uploaded.append(path)
        media = result.media
        if result.finalizing:
            display.note("stored; the server is still moving it into S3")
        if arguments.verbose:
            display.note(describe_path(result))
        _print_result(
            arguments,
            {
                "file": str(path),
                "session_id": result.session_id,
                "sent_chunks": result.sent_chunks,
                "resumed_chunks": result.resumed_chunks,
                "direct_chunks": result.direct_chunks,
                "path": result.path,
                "relay_reason": result.relay_reason,
                **media.as_json(),
            },
            f"{media.media_id}  {path}",
        )
    return code


async def _upload_one(
    client: MediagateClient, arguments: argparse.Namespace, path: Path, display: Display
) -> UploadResult:
    from mediagate.client.spool import readable_again

    options: dict[str, Any] = {
        "filename": arguments.name,
        "parallel": arguments.parallel,
        "chunk_size": arguments.chunk_size * MiB if arguments.chunk_size else None,
        "file_sha256": arguments.sha256,
        "resume": not arguments.no_resume,
        "direct": arguments.direct,
        "on_progress": functools.partial(_show_progress, display),
    }
    if path != STDIN:
        return await client.upload(path, **options)
    # Nothing recognises standard input again in a later run: no resume state for it.
    source, owned = await asyncio.to_thread(readable_again, sys.stdin.buffer)
    try:
        return await client.upload(source, **{**options, "resume": False})
    finally:
        if owned:
            source.close()


async def _list(client: MediagateClient, arguments: argparse.Namespace) -> int:
    media = await client.list_media()
    if arguments.json:
        print(json.dumps([item.as_json() for item in media], indent=2))
        return EXIT_OK
    for item in media:
        created = item.created_at.strftime("%Y-%m-%d %H:%M")
        facts = f"  {describe_media(item.media):<32}" if arguments.long else ""
        print(f"{item.media_id}  {item.size:>14,}  {created}{facts}  {item.filename}")
    return EXIT_OK


def describe_path(result: UploadResult) -> str:
    """`--verbose`'s line: which way the chunks went, and why through the server."""
    if result.path == "direct":
        return f"{result.sent_chunks} chunk(s) straight into the bucket"
    why = f" ({result.relay_reason})" if result.relay_reason else ""
    if result.path == "mixed":
        return (
            f"{result.direct_chunks} of {result.sent_chunks} chunk(s) straight into the "
            f"bucket, the rest through the server{why}"
        )
    return f"{result.sent_chunks} chunk(s) through the server{why}"


def describe_media(facts: dict[str, Any] | None) -> str:
    """`ls --long`'s column: duration, picture size, codecs, faststart; `-` if unknown."""
    if not facts:
        return "-"
    words = []
    duration = facts.get("duration_s")
    if duration is not None:
        minutes, seconds = divmod(round(duration), 60)
        hours, minutes = divmod(minutes, 60)
        words.append(f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes}:{seconds:02}")
    video, audio = facts.get("video"), facts.get("audio")
    if video:
        words.append(f"{video['width']}x{video['height']}")
    codecs = [stream["codec"] for stream in (video, audio) if stream]
    if codecs:
        words.append("/".join(codecs))
    if facts.get("faststart") is True:
        words.append("faststart")
    elif facts.get("faststart") is False:
        words.append("moov-last")
    return " ".join(words) or str(facts.get("kind", "-"))


async def _download(client: MediagateClient, arguments: argparse.Namespace) -> int:
    from mediagate.client.progress_display import Display

    display = arguments.display = Display(
        arguments.media_id, bar=sys.stderr.isatty(), quiet=arguments.quiet
    )
    finished = False
    try:
        saved = await client.download(
            arguments.media_id,
            arguments.output,
            on_progress=lambda d, t: display.update(d, t),
            overwrite=arguments.force,
        )
        finished = True
    finally:
        display.close(finished=finished)
    _print_result(arguments, {"media_id": arguments.media_id, "file": str(saved)}, str(saved))
    return EXIT_OK


async def _remove(client: MediagateClient, arguments: argparse.Namespace) -> int:
    for media_id in arguments.media_ids:
        await client.delete(media_id)
        _print_result(arguments, {"deleted": media_id}, f"deleted {media_id}")
    return EXIT_OK


def _how_to_resume(arguments: argparse.Namespace) -> str:
    """The same command, less the files already uploaded (a re-run would upload them again)."""
    if not arguments.uploaded:
        return RESUME_HINT
    command: list[str] = ["mediagate"]
    hide_next = False
    for word in sys.argv[1:]:
        if hide_next or word.startswith("--token="):  # never echo a secret
            word, hide_next = ("TOKEN" if hide_next else "--token=TOKEN"), False
        elif word == "--token":
            hide_next = True
        elif Path(word) in arguments.uploaded:
            continue
        command.append(word)
    done = len(arguments.uploaded)
    return f"{done} file(s) done; resume the rest with: {shlex.join(command)}"


# --- output ------------------------------------------------------------------------------


def _print_result(arguments: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data) if arguments.json else text, flush=True)


def _explain(error: MediagateError, server: str) -> str:
    """One line a user can act on."""
    from mediagate.client import ConnectionFailed, TargetExists, Unauthorized

    if isinstance(error, TargetExists):
        return f"{error}; name the file with -o FILE, or replace it with --force"
    if isinstance(error, Unauthorized):
        hint = TOKEN_HINTS.get(str(error.problem.get("reason")), TOKEN_HINTS["expired"])
        return f"the server refused the token: {error.detail} (401); {hint}"
    if isinstance(error, ConnectionFailed) and not error.retryable:
        return f"{error} (is the server running, and is --server {server} right?)"
    if isinstance(error, ConnectionFailed):
        return f"{error} (gave up retrying)"
    return str(error)


# What to do about a refused token, by the `reason` of the server's 401 problem.
TOKEN_HINTS = {
    "missing": "pass --token or set MEDIAGATE_TOKEN",
    "malformed": "pass the whole line `mediagate token USER` printed on the server",
    "bad-signature": "run `mediagate token USER` where that server runs (with its "
    "MEDIAGATE_DATA_DIR or MEDIAGATE_JWT_SECRET), not on another machine or data directory",
    "expired": "get a new one with `mediagate token USER` on the server",
    # The identity provider's tokens (MEDIAGATE_JWT_JWKS_URL on the server).
    "algorithm": "use a token `mediagate token USER` printed on the server, or one from the "
    "identity provider the server is set up with (its MEDIAGATE_JWT_JWKS_URL)",
    "unknown-key": "get a new token from the identity provider the server is set up with "
    "(its MEDIAGATE_JWT_JWKS_URL): the server does not know the key that signed this one",
    "wrong-issuer": "get a token from the identity provider the server is set up with "
    "(its MEDIAGATE_JWT_ISSUER)",
    "wrong-audience": "get a token the identity provider made for this server "
    "(its MEDIAGATE_JWT_AUDIENCE)",
    "not-yet-valid": "check the clock of the machine that made the token against the server's",
    "user-id": "the server keeps media under your user id, which must be 1-128 letters, "
    "digits and ._@+=- (its MEDIAGATE_JWT_USER_CLAIM picks the claim that holds it)",
}


def _fail(arguments: argparse.Namespace, message: str, code: int) -> int:
    print(f"mediagate {arguments.command}: {message}", file=sys.stderr)
    return code


def _show_progress(display: Display, progress: UploadProgress) -> None:
    display.update(progress.sent, progress.total, progress.resumed)
