"""`mediagate upload | ls | download | rm` run as real processes against a real server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import pty
import re
import signal
import struct
import sys
import termios
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from mediagate import tokens
from mediagate.client.models import Media, UploadResult
from mediagate.client_cli import _how_to_resume, describe_media, describe_path
from mediagate.errors import FileTooLarge, StorageUnavailable
from mediagate.web.app import create_app
from support.api import Api, MiB, make_settings, read_object
from support.forward_proxy import EGRESS_NAME, ForwardProxy
from support.identity_provider import ISSUER, IdentityServer, Key
from support.server_process import free_port
from support.tcp_proxy import CuttableProxy

TEST_SECRET = make_settings(Path("unused")).jwt_secret.get_secret_value().encode()


class Cli:
    """Runs the `mediagate` command as a user of the `local_api` server would."""

    def __init__(self, api, tmp_path: Path) -> None:
        self.server = str(api.client.make_url("")).rstrip("/")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "MEDIAGATE_URL": self.server,
            "MEDIAGATE_TOKEN": api.headers["Authorization"].removeprefix("Bearer "),
            # Client commands must not read server settings: these would stop `serve`.
            "USE_CLOUD_STORAGE": "maybe",
            "MEDIAGATE_PORT": "not-a-port",
        }

    async def start(self, *args: str, **env: str) -> asyncio.subprocess.Process:
        return await self.start_python("-m", "mediagate", *args, **env)

    async def start_python(
        self, *args: str, cwd: Path | None = None, **env: str
    ) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            env={**self.env, **env},
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def run(self, *args: str, cwd: Path | None = None, **env: str) -> tuple[int, str, str]:
        return await self.run_python("-m", "mediagate", *args, cwd=cwd, **env)

    async def run_python(
        self, *args: str, cwd: Path | None = None, **env: str
    ) -> tuple[int, str, str]:
        process = await self.start_python(*args, cwd=cwd, **env)
        async with asyncio.timeout(60):
            out, err = await process.communicate()
        return process.returncode, out.decode(), err.decode()


@pytest.fixture
def cli(local_api, tmp_path) -> Cli:
    return Cli(local_api, tmp_path)


def media_file(tmp_path: Path, size: int, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


async def test_upload_ls_download_rm(cli, tmp_path):
    first, second = media_file(tmp_path, 1000, "a.mp4"), media_file(tmp_path, 7 * MiB, "b.mp4")

    code, out, err = await cli.run("upload", str(first), str(second))
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split("  ")[1] for line in lines] == [str(first), str(second)]
    first_id, second_id = (line.split("  ")[0] for line in lines)
    assert "b.mp4: 100% (7.0 of 7.0 MiB" in err  # plain progress lines off a terminal

    code, out, _ = await cli.run("upload", "--json", str(first))
    third = json.loads(out)
    assert (third["file"], third["size"], third["sent_chunks"]) == (str(first), 1000, 1)

    code, out, _ = await cli.run("ls", "--json")
    assert [item["media_id"] for item in json.loads(out)] == [
        third["media_id"],
        second_id,
        first_id,
    ]

    code, out, _ = await cli.run("download", second_id, "-o", str(tmp_path / "back.mp4"))
    assert (code, out.strip()) == (0, str(tmp_path / "back.mp4"))
    assert (tmp_path / "back.mp4").read_bytes() == second.read_bytes()

    code, out, _ = await cli.run("rm", first_id, third["media_id"])
    assert (code, out.splitlines()) == (0, [f"deleted {first_id}", f"deleted {third['media_id']}"])
    code, out, _ = await cli.run("ls")
    assert [line.split()[0] for line in out.splitlines()] == [second_id]


async def test_ctrl_c_stops_at_once_and_the_same_command_resumes(local_api, tmp_path):
    small, path = media_file(tmp_path, 1000, "small.mp4"), media_file(tmp_path, 60 * MiB, "big.mp4")
    target = local_api.client.make_url("")
    proxy = CuttableProxy(target.host, target.port)  # counts the bytes on their way
    await proxy.start()
    cli = Cli(local_api, tmp_path)
    command = ("upload", "--json", "--parallel", "1", "--chunk-size", "5", str(path))
    process = await cli.start(*command[:-1], str(small), str(path), MEDIAGATE_URL=proxy.url)
    interrupted_at: list[float] = []

    def interrupt() -> None:
        interrupted_at.append(time.monotonic())
        process.send_signal(signal.SIGINT)

    proxy.call_after(12 * MiB, interrupt)
    async with asyncio.timeout(60):
        out, err = (stream.decode() for stream in await process.communicate())
    stopped_in = time.monotonic() - interrupted_at[0]
    await proxy.cut()

    assert process.returncode == 130
    assert stopped_in < 2.0
    assert err.strip().splitlines()[-1] == (
        "mediagate upload: interrupted; 1 file(s) done; resume the rest with: "
        f"mediagate upload --json --parallel 1 --chunk-size 5 {path}"
    )
    assert json.loads(out)["file"] == str(small)
    state = next((tmp_path / "cache" / "mediagate" / "uploads").glob("*.json"))
    session_id = json.loads(state.read_text())["session_id"]
    status = await local_api.status(session_id)
    received = (await status.json())["received"]
    assert 2 <= len(received) < 12

    await proxy.restore()
    code, out, err = await cli.run(*command, MEDIAGATE_URL=proxy.url)
    await proxy.cut()
    assert code == 0, err
    result = json.loads(out)
    assert result["session_id"] == session_id
    assert (result["resumed_chunks"], result["sent_chunks"]) == (len(received), 12 - len(received))
    assert f"resuming: {len(received) * 5:.1f} of 60.0 MiB already there" in err
    assert not state.exists()


@pytest.mark.parametrize(
    ("provider", "claims", "message"),
    [
        (
            False,
            {},
            "the token is signed with 'RS256': this server takes HS256 tokens signed with its "
            "own secret (no identity provider is set up) (401); use a token `mediagate token "
            "USER` printed on the server, or one from the identity provider the server is set "
            "up with (its MEDIAGATE_JWT_JWKS_URL)",
        ),
        (
            True,
            {"iss": "https://other.example.com/"},
            f"the token was issued by 'https://other.example.com/', not {ISSUER!r} (401); get a "
            "token from the identity provider the server is set up with (its "
            "MEDIAGATE_JWT_ISSUER)",
        ),
        (
            True,
            {"sub": "Jane Doe"},
            "the token's sub claim 'Jane Doe' is not a user id this server can store (1-128 "
            "letters, digits and ._@+=-) (401); the server keeps media under your user id, "
            "which must be 1-128 letters, digits and ._@+=- (its MEDIAGATE_JWT_USER_CLAIM "
            "picks the claim that holds it)",
        ),
    ],
    ids=["no-provider", "wrong-issuer", "user-id"],
)
async def test_a_refused_identity_provider_token_says_what_to_do(
    start_api, aiohttp_server, tmp_path, provider, claims, message
):
    key = Key.rsa("rsa-1")
    identity = await IdentityServer.start(aiohttp_server, [key])
    settings = {"jwt_jwks_url": identity.url, "jwt_issuer": ISSUER} if provider else {}
    api = await start_api(make_settings(tmp_path / "data", **settings))
    path = media_file(tmp_path, 10, "clip.mp4")

    returned, out, err = await Cli(api, tmp_path).run(
        "upload", "--token", key.sign(aud=None, **claims), str(path)
    )

    assert (returned, out) == (1, "")
    assert err.splitlines() == [f"mediagate upload: the server refused the token: {message}"]


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (
            ["--server", "ftp://example.com"],
            {},
            2,
            "mediagate upload: --server 'ftp://example.com' is not an http:// or https:// URL",
        ),
        (
            [],
            {"MEDIAGATE_TOKEN": ""},
            2,
            "mediagate upload: no token: pass --token or set MEDIAGATE_TOKEN "
            "(`mediagate token USER` on the server prints one)",
        ),
        (
            ["--token", "not-a-token"],
            {},
            1,
            "mediagate upload: the server refused the token: not a mediagate token (401); "
            "pass the whole line `mediagate token USER` printed on the server",
        ),
        (
            ["--token", tokens.issue(b"another-server-s-secret-long-enough", "alice", 60)],
            {},
            1,
            "mediagate upload: the server refused the token: the token is signed for another "
            "server (not with this server's secret) (401); run `mediagate token USER` where that "
            "server runs (with its MEDIAGATE_DATA_DIR or MEDIAGATE_JWT_SECRET), not on another "
            "machine or data directory",
        ),
        (
            ["--token", tokens.issue(TEST_SECRET, "alice", 60, now=1_000_000_000)],
            {},
            1,
            "mediagate upload: the server refused the token: the token expired at 2001-09-09 "
            "01:47 UTC (401); get a new one with `mediagate token USER` on the server",
        ),
        (
            [],
            {"MEDIAGATE_URL": "http://127.0.0.1:{closed}"},
            1,
            "mediagate upload: cannot reach the server at http://127.0.0.1:{closed}: connection "
            "refused (is the server running, and is --server http://127.0.0.1:{closed} right?)",
        ),
        (
            ["--server", "http://user:hunter2@127.0.0.1:{closed}"],
            {},
            2,
            "mediagate upload: --server http://127.0.0.1:{closed} must not carry a user name or "
            "password (`user:pass@`): the token signs you in",
        ),
    ],
    ids=[
        "bad-url",
        "no-token",
        "not-a-token",
        "another-server-s-token",
        "expired-token",
        "server-down",
        "password-in-url",
    ],
)
async def test_one_line_errors(cli, tmp_path, args, env, code, message):
    closed = str(free_port())
    env = {name: value.replace("{closed}", closed) for name, value in env.items()}
    args = [arg.replace("{closed}", closed) for arg in args]
    path = media_file(tmp_path, 10, "clip.mp4")
    started = time.monotonic()

    returned, out, err = await cli.run("upload", *args, str(path), **env)

    assert (returned, out, err.splitlines()) == (code, "", [message.replace("{closed}", closed)])
    assert time.monotonic() - started < 10  # no retrying what cannot succeed


@pytest.mark.parametrize(
    ("argv", "uploaded", "hint"),
    [
        (["upload", "a.mp4"], [], "run the same command again to resume"),
        (
            ["upload", "a.mp4", "--token", "secret", "b c.mp4"],
            ["a.mp4"],
            "1 file(s) done; resume the rest with: mediagate upload --token TOKEN 'b c.mp4'",
        ),
        (
            ["upload", "--token=secret", "a.mp4", "b.mp4", "c.mp4"],
            ["a.mp4", "b.mp4"],
            "2 file(s) done; resume the rest with: mediagate upload --token=TOKEN c.mp4",
        ),
    ],
)
def test_how_to_resume_names_the_files_left_and_hides_the_token(monkeypatch, argv, uploaded, hint):
    monkeypatch.setattr(sys, "argv", ["mediagate", *argv])
    files = [Path(word) for word in argv if word.endswith(".mp4")]
    arguments = argparse.Namespace(files=files, uploaded=[Path(name) for name in uploaded])
    assert _how_to_resume(arguments) == hint


async def test_ctrl_c_while_the_server_completes_then_the_rerun_adopts_its_media(
    aiohttp_client, proxy, tmp_path, impatient_settings
):
    settings = impatient_settings
    chunk_posts: list[str] = []
    running: list[asyncio.subprocess.Process] = []

    @web.middleware
    async def slow_complete(request, handler):
        if "/chunk/" in request.path:
            chunk_posts.append(request.path)
        if request.path.endswith("/complete") and running:
            # S3 keeps its answer to CompleteMultipartUpload: the session is
            # finalizing while the user presses Ctrl-C.
            proxy.hold_answers()
            asyncio.get_running_loop().call_later(1.0, running.pop().send_signal, signal.SIGINT)
        return await handler(request)

    app = create_app(settings)
    app.middlewares.append(slow_complete)
    cli = Cli(Api(await aiohttp_client(app), settings), tmp_path)
    path = media_file(tmp_path, 12 * MiB, "clip.mp4")
    # Through the server (--no-direct): its complete is what S3 holds up here.
    command = ("upload", "--no-direct", "--chunk-size", "5", str(path))

    interrupted = await cli.start(*command)
    running.append(interrupted)
    async with asyncio.timeout(60):
        _, first_err = await interrupted.communicate()
    assert (interrupted.returncode, running) == (130, []), first_err.decode()

    code, out, err = await cli.run(*command)
    proxy.release_answers()

    assert code == 0, err
    media_id = out.split()[0]
    assert "stored; the server is still moving it into S3" in err
    assert len(chunk_posts) == 3  # every byte went once, in the first run
    code, out, _ = await cli.run("ls", "--json")
    assert [item["media_id"] for item in json.loads(out)] == [media_id]


async def test_an_outage_is_told_once_per_file_not_per_chunk_and_try(local_api, tmp_path):
    target = local_api.client.make_url("")
    proxy = CuttableProxy(target.host, target.port)
    await proxy.start()
    cli = Cli(local_api, tmp_path)
    path = media_file(tmp_path, 30 * MiB, "clip.mp4")

    async def outage() -> None:
        await proxy.cut()  # 4 chunks in flight break, and every retry is refused
        await asyncio.sleep(4)
        await proxy.restore()

    proxy.call_after(8 * MiB, lambda: asyncio.ensure_future(outage()))
    code, out, err = await cli.run(
        "upload", "--chunk-size", "5", "--parallel", "4", str(path), MEDIAGATE_URL=proxy.url
    )
    await proxy.cut()

    assert code == 0, err
    told = [line for line in err.splitlines() if "retrying" in line]
    assert len(told) == 1, err
    assert told[0].startswith(f"clip.mp4: cannot reach the server at {proxy.url}: ")
    media_id = out.split()[0]
    back = tmp_path / "back.mp4"
    assert (await cli.run("download", media_id, "-o", str(back), "--quiet"))[0] == 0
    assert back.read_bytes() == path.read_bytes()


async def run_with_stdin(cli: Cli, stdin: Any, *args: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "mediagate", *args),
        env=cli.env,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return process


@pytest.mark.parametrize("kind", ["pipe", "file"])
async def test_upload_from_standard_input_with_a_name(cli, tmp_path, kind):
    data = os.urandom(11 * MiB + 3)  # three chunks of 5 MiB: some sent after the first
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    command = ("upload", "-", "--name", "clip.mp4", "--chunk-size", "5", "--quiet", "--json")

    if kind == "pipe":
        process = await run_with_stdin(cli, asyncio.subprocess.PIPE, *command)
        async with asyncio.timeout(60):
            out, err = await process.communicate(data)
    else:
        with source.open("rb") as stdin:
            process = await run_with_stdin(cli, stdin, *command)
            async with asyncio.timeout(60):
                out, err = await process.communicate()

    assert (process.returncode, err.decode()) == (0, "")  # --quiet: results only
    result = json.loads(out)
    assert (result["file"], result["filename"], result["size"]) == ("-", "clip.mp4", len(data))
    assert list((tmp_path / "cache").glob("**/*.json")) == []  # nothing to resume stdin with
    code, out, _ = await cli.run("download", result["media_id"], cwd=tmp_path)
    assert (code, (tmp_path / "clip.mp4").read_bytes()) == (0, data)


async def test_upload_from_a_terminal_is_refused_not_waited_for(cli, tmp_path):
    terminal, child_end = pty.openpty()
    process = await run_with_stdin(cli, child_end, "upload", "-", "--name", "clip.mp4")
    os.close(child_end)
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    os.close(terminal)
    assert (process.returncode, out, err.decode().splitlines()) == (
        2,
        b"",
        ["mediagate upload: - reads standard input, a terminal here: pipe the data in"],
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-"], "mediagate upload: - (standard input) needs --name NAME"),
        (
            ["a.mp4", "b.mp4", "--name", "x.mp4"],
            "mediagate upload: --name names one file: give one FILE (or -)",
        ),
    ],
)
async def test_upload_name_misuse_is_a_usage_error(cli, tmp_path, args, message):
    media_file(tmp_path, 10, "a.mp4")
    media_file(tmp_path, 10, "b.mp4")
    code, out, err = await cli.run("upload", *args, cwd=tmp_path)
    assert (code, out, err.splitlines()) == (2, "", [message])


# Reports the peak RSS of the command it runs. A small process of its own starts it:
# a child forked from pytest would count pytest's pages in its peak until it execs.
PEAK_RSS_OF = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


async def test_upload_memory_stays_small_with_64_mib_chunks(cli, tmp_path):
    path = media_file(tmp_path, 128 * MiB, "big.mp4")
    command = [sys.executable, "-m", "mediagate", "upload", "--chunk-size", "64", str(path)]

    _, out, err = await cli.run_python("-c", PEAK_RSS_OF, *command)

    returned, peak = map(int, out.split())
    assert returned == 0, err
    # Two 64 MiB chunks in flight, streamed: 1 MiB pieces, not 64 MiB blobs.
    assert peak < 100 * MiB


async def test_a_terminal_gets_a_progress_bar(cli, tmp_path):
    path = media_file(tmp_path, 6 * MiB, "clip.mp4")
    terminal, child_end = pty.openpty()
    fcntl.ioctl(child_end, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "mediagate", "upload", str(path)),
        env=cli.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=child_end,
    )
    os.close(child_end)

    def read_terminal() -> str:
        seen = b""
        with contextlib.suppress(OSError):  # EIO once the command has exited
            while piece := os.read(terminal, 4096):
                seen += piece
        os.close(terminal)
        return seen.decode(errors="replace")

    async with asyncio.timeout(60):
        (out, _), shown = await asyncio.gather(
            process.communicate(), asyncio.to_thread(read_terminal)
        )

    assert out.decode().endswith(f"  {path}\n")
    # tqdm's final bar: bytes done of total, elapsed<left, rate.
    bar = r"clip\.mp4: 100%\|[^|]+\| 6\.0/6\.0 MiB \[[0-9:]+<[0-9:]+, +[0-9.]+MiB/s\]"
    assert re.search(bar, shown)
    assert "clip.mp4: 100% (" not in shown  # no plain lines on a terminal


async def test_a_busy_server_is_waited_for_as_it_asks(aiohttp_client, local_settings, tmp_path):
    busy = [True]

    @web.middleware
    async def once_busy(request, handler):
        if "/chunk/" in request.path and busy:
            busy.clear()
            while await request.content.readany():
                pass
            raise StorageUnavailable("S3 is away")  # 503 with Retry-After: 2
        return await handler(request)

    app = create_app(local_settings)
    app.middlewares.append(once_busy)
    api = Api(await aiohttp_client(app), local_settings)
    path = media_file(tmp_path, 1000, "clip.mp4")
    started = time.monotonic()

    code, out, err = await Cli(api, tmp_path).run("upload", str(path))

    assert (code, out.endswith(f"  {path}\n")) == (0, True), err
    # The server keeps a 5xx's cause in its log; the note gives what the client was told.
    assert "clip.mp4: Storage is unavailable" in err
    assert "(503 storage-unavailable); retrying in 2." in err
    assert time.monotonic() - started >= 2.0


async def test_a_refused_file_is_reported_and_the_others_still_go(
    aiohttp_client, local_settings, tmp_path
):
    @web.middleware
    async def refuse_huge(request, handler):
        if request.path.endswith("/initiate") and (await request.json())["filename"] == "huge.mp4":
            raise FileTooLarge("huge.mp4 is over the limit")
        return await handler(request)

    app = create_app(local_settings)
    app.middlewares.append(refuse_huge)
    cli = Cli(Api(await aiohttp_client(app), local_settings), tmp_path)
    huge, fine = media_file(tmp_path, 10, "huge.mp4"), media_file(tmp_path, 10, "fine.mp4")

    code, out, err = await cli.run("upload", str(huge), str(fine))
    assert (code, out.endswith(f"  {fine}\n")) == (1, True)
    assert err.splitlines()[0] == (
        f"mediagate upload: {huge}: huge.mp4 is over the limit (413 file-too-large)"
    )

    code, out, _ = await cli.run("upload", "--json", str(huge), str(fine))
    refused, uploaded = map(json.loads, out.splitlines())
    reason = "huge.mp4 is over the limit (413 file-too-large)"
    assert refused == {"file": str(huge), "error": reason}
    assert (code, uploaded["file"]) == (1, str(fine))


def lying_server(filename: str, body: bytes) -> web.Application:
    """A server whose info answer names a hostile file, and whose media id is a path."""
    media = {
        "media_id": "../../PWNED",
        "user_id": "alice",
        "filename": filename,
        "content_type": "application/octet-stream",
        "size": len(body),
        "checksum": None,
        "storage": "local",
        "created_at": "2026-01-01T00:00:00+00:00",
        "stream_url": "/elsewhere",
    }

    async def info(request: web.Request) -> web.Response:
        return web.json_response(media)

    async def stream(request: web.Request) -> web.Response:
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/api/v1/media/info/{id}", info)
    app.router.add_get("/api/v1/media/stream/{id}", stream)
    return app


@pytest.mark.parametrize(
    ("filename", "saved"),
    [
        ("", "file"),
        (".", "file"),
        ("..", "file"),
        ("../../PWNED", "PWNED"),
        ("..\\..\\PWNED", "PWNED"),
        (".bashrc", "bashrc"),
        ("clip\x1b[2J.mp4", "clip[2J.mp4"),
    ],
)
async def test_download_names_the_file_itself_never_from_a_path_the_server_gives(
    aiohttp_client, local_api, tmp_path, filename, saved
):
    server = await aiohttp_client(lying_server(filename, b"payload"))
    root = tmp_path / "root"
    here = root / "a" / "b" / "here"
    here.mkdir(parents=True)
    cli = Cli(local_api, tmp_path)

    code, out, err = await cli.run(
        "download", "m1", cwd=here, MEDIAGATE_URL=str(server.make_url("")).rstrip("/")
    )

    assert (code, out.strip()) == (0, saved), err
    assert (here / saved).read_bytes() == b"payload"
    assert [path for path in root.rglob("*") if path.is_file()] == [here / saved]


async def test_download_replaces_a_file_only_when_named_or_forced(
    aiohttp_client, local_api, tmp_path
):
    server = await aiohttp_client(lying_server(".bashrc", b"new"))
    cli = Cli(local_api, tmp_path)
    url = str(server.make_url("")).rstrip("/")
    mine = tmp_path / "bashrc"
    mine.write_bytes(b"mine")

    code, out, err = await cli.run("download", "m1", cwd=tmp_path, MEDIAGATE_URL=url)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "mediagate download: bashrc already exists (not replaced); "
        "name the file with -o FILE, or replace it with --force"
    ]
    assert mine.read_bytes() == b"mine"
    assert [path.name for path in tmp_path.iterdir() if path.is_file()] == ["bashrc"]

    code, out, err = await cli.run("download", "m1", "-o", ".", cwd=tmp_path, MEDIAGATE_URL=url)
    assert code == 1 and mine.read_bytes() == b"mine", err

    code, _, err = await cli.run("download", "m1", "-o", "bashrc", cwd=tmp_path, MEDIAGATE_URL=url)
    assert code == 0 and mine.read_bytes() == b"new", err

    mine.write_bytes(b"mine")
    code, _, err = await cli.run("download", "m1", "--force", cwd=tmp_path, MEDIAGATE_URL=url)
    assert code == 0 and mine.read_bytes() == b"new", err


async def test_download_of_an_empty_media(cli, local_api, tmp_path):
    session = await (await local_api.initiate(filename="empty.txt", size=0)).json()
    media_id = (await (await local_api.complete(session["session_id"])).json())["media_id"]

    code, out, err = await cli.run("download", media_id, cwd=tmp_path)

    assert (code, out.strip()) == (0, "empty.txt"), err
    assert (tmp_path / "empty.txt").read_bytes() == b""


@pytest.mark.parametrize(
    ("facts", "shown"),
    [
        (None, "-"),
        ({"kind": "audio", "duration_s": 65.4, "audio": {"codec": "mp3"}}, "1:05 mp3"),
        (
            {
                "kind": "video",
                "duration_s": 3725,
                "video": {"codec": "h264", "width": 1920, "height": 1080},
                "audio": {"codec": "aac"},
                "faststart": True,
            },
            "1:02:05 1920x1080 h264/aac faststart",
        ),
        (
            {
                "kind": "video",
                "duration_s": 2,
                "video": {"codec": "h264", "width": 160, "height": 120},
                "faststart": False,
            },
            "0:02 160x120 h264 moov-last",
        ),
        ({"kind": "image", "video": {"codec": "png", "width": 16, "height": 16}}, "16x16 png"),
    ],
)
def test_ls_long_describes_each_media(facts, shown) -> None:
    assert describe_media(facts) == shown


async def test_upload_direct_falls_back_to_the_server_when_the_bucket_is_cut(
    start_api, s3_settings, proxy, s3_objects, bucket, tmp_path
):
    # The server reaches moto itself; the part URLs it signs lead through the proxy.
    api = await start_api(s3_settings.model_copy(update={"direct_endpoint_url": proxy.url}))
    cli = Cli(api, tmp_path)
    path = media_file(tmp_path, 2 * 5 * MiB + 4321, "direct.mp4")
    proxy.cut_after(6 * MiB)  # the first chunk reaches the bucket, the second is cut midway
    code, out, err = await cli.run(
        "upload", "--direct", "--json", "--parallel", "1", "--chunk-size", "5", str(path)
    )
    assert code == 0, err
    result = json.loads(out)
    assert (result["sent_chunks"], result["direct_chunks"]) == (3, 1)
    key = f"media/alice/{result['media_id']}/direct.mp4"
    assert await read_object(s3_objects, bucket, key) == path.read_bytes()
    uploads = await s3_objects.list_multipart_uploads(Bucket=bucket)
    assert uploads.get("Uploads", []) == []


async def test_upload_and_download_go_through_the_users_proxy(
    aiohttp_client, s3_settings, tmp_path
):
    """Behind an egress proxy (HTTP_PROXY), as curl and aws are: the server and the bucket
    are under names that only the proxy resolves."""
    store = urlsplit(s3_settings.s3_endpoint_url)
    settings = s3_settings.model_copy(
        update={"direct_endpoint_url": f"http://{EGRESS_NAME}:{store.port}"}
    )
    api = Api(await aiohttp_client(create_app(settings)), settings)
    port = api.client.port
    s3 = ("127.0.0.1", store.port)
    proxy = ForwardProxy(
        {
            f"mediagate-egress:{port}": ("127.0.0.1", port),
            f"{EGRESS_NAME}:{store.port}": s3,  # the parts' URLs
            f"127.0.0.1:{store.port}": s3,  # the download's redirect
        }
    )
    await proxy.start()
    try:
        cli = Cli(api, tmp_path)
        behind = {"MEDIAGATE_URL": f"http://mediagate-egress:{port}", "HTTP_PROXY": proxy.url}
        path = media_file(tmp_path, 5 * MiB + 4321, "clip.mp4")
        code, out, err = await cli.run("upload", "--json", "--chunk-size", "5", str(path), **behind)
        assert code == 0, err
        uploaded = json.loads(out)
        assert (uploaded["path"], uploaded["direct_chunks"]) == ("direct", 2)
        back = tmp_path / "back.mp4"
        code, _, err = await cli.run("download", uploaded["media_id"], "-o", str(back), **behind)
        assert code == 0, err
        assert back.read_bytes() == path.read_bytes()
    finally:
        await proxy.stop()
    dead = f"127.0.0.1:{free_port()}"
    code, _, err = await cli.run("ls", **{**behind, "HTTP_PROXY": f"http://{dead}"})
    assert code == 1
    assert f"the proxy {dead} (HTTP_PROXY/HTTPS_PROXY): connection refused" in err, err


async def test_upload_goes_direct_by_default_and_through_the_server_with_no_direct(
    aiohttp_client, s3_settings, s3_objects, bucket, tmp_path
):
    chunk_posts: list[str] = []

    @web.middleware
    async def count_chunks(request, handler):
        if "/chunk/" in request.path:
            chunk_posts.append(request.path)
        return await handler(request)

    app = create_app(s3_settings)
    app.middlewares.append(count_chunks)
    cli = Cli(Api(await aiohttp_client(app), s3_settings), tmp_path)
    path = media_file(tmp_path, 5 * MiB + 4321, "clip.mp4")

    code, out, err = await cli.run("upload", "--json", "-v", "--chunk-size", "5", str(path))
    assert code == 0, err
    direct = json.loads(out)
    assert (direct["path"], direct["sent_chunks"], direct["direct_chunks"]) == ("direct", 2, 2)
    assert chunk_posts == []  # the server relayed no chunk
    assert "clip.mp4: 2 chunk(s) straight into the bucket" in err

    code, out, err = await cli.run(
        "upload", "--no-direct", "--json", "-v", "--chunk-size", "5", str(path)
    )
    assert code == 0, err
    relayed = json.loads(out)
    assert (relayed["path"], relayed["direct_chunks"], len(chunk_posts)) == ("relay", 0, 2)
    assert "clip.mp4: 2 chunk(s) through the server (direct uploads not asked for)" in err
    for media in (direct, relayed):
        key = f"media/alice/{media['media_id']}/clip.mp4"
        assert await read_object(s3_objects, bucket, key) == path.read_bytes()


@pytest.mark.parametrize(
    ("path", "direct", "reason", "line"),
    [
        ("direct", 3, None, "3 chunk(s) straight into the bucket"),
        (
            "mixed",
            1,
            "the bucket did not take chunk 1: cut",
            "1 of 3 chunk(s) straight into the bucket, the rest through the server "
            "(the bucket did not take chunk 1: cut)",
        ),
        (
            "relay",
            0,
            "the server offers no direct uploads (501)",
            "3 chunk(s) through the server (the server offers no direct uploads (501))",
        ),
    ],
)
def test_verbose_says_which_way_the_chunks_went(path, direct, reason, line) -> None:
    media = Media.from_json(
        {
            "media_id": "m",
            "user_id": "u",
            "filename": "f",
            "content_type": "video/mp4",
            "size": 1,
            "storage": "s3",
            "created_at": "2026-12-06T00:00:00+00:00",
            "stream_url": "/s",
        }
    )
    result = UploadResult(media, "s", 3, 0, False, direct, path, reason)
    assert describe_path(result) == line


async def test_a_client_command_loads_none_of_the_servers_modules(tmp_path):
    # Their settings, logging and migration code cost a client ~0.2 s at every start.
    check = (
        "import sys\n"
        "from mediagate.cli import main\n"
        "main(['ls', '--server', 'http://127.0.0.1:9', '--token', 'x', '-q'])\n"
        "ours = {m for m in sys.modules if m.startswith('mediagate.')}\n"
        "allowed = ('mediagate.client', 'mediagate.cli', 'mediagate.arguments', "
        "'mediagate.filenames', 'mediagate.proxies')\n"
        "print(sorted(m for m in ours if not m.startswith(allowed)))\n"
        "print([m for m in ('pydantic', 'structlog') if m in sys.modules])\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", check, stdout=asyncio.subprocess.PIPE, cwd=tmp_path
    )
    out, _ = await process.communicate()
    assert out.decode().splitlines() == ["[]", "[]"]
