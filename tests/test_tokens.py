from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import jwt
import pytest
from structlog.testing import capture_logs

from mediagate import tokens
from mediagate.core.links import StreamLinks
from support.api import make_settings
from support.server_process import ServerProcess

SECRET = b"a-secret-that-is-long-enough-for-hs256"


def test_issued_tokens_verify_to_their_user():
    assert tokens.verify(SECRET, tokens.issue(SECRET, "user123", 60)) == "user123"


@pytest.mark.parametrize(
    "token",
    [
        tokens.issue(SECRET, "alice", 60, now=1_000),  # long expired
        tokens.issue(b"another-secret-that-is-long-enough", "alice", 60),
        "garbage",
    ],
)
def test_bad_tokens_are_refused(token):
    with pytest.raises(tokens.InvalidToken):
        tokens.verify(SECRET, token)


def test_unsafe_user_ids_get_no_token():
    with pytest.raises(ValueError):
        tokens.issue(SECRET, "../etc", 60)


def mediagate_token(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mediagate", "token", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_mediagate_token_signs_with_the_secret_the_server_made(tmp_path):
    # The server's data directory comes from the .env of the directory it runs in.
    here = tmp_path / "site"
    here.mkdir()
    (here / ".env").write_text("MEDIAGATE_DATA_DIR=store\n")
    server = ServerProcess(here / "store", {})
    await server.start()
    try:
        result = mediagate_token(here, "alice", "--ttl", "120")
        assert result.returncode == 0, result.stderr
        async with aiohttp.ClientSession() as client:
            headers = {"Authorization": f"Bearer {result.stdout.strip()}"}
            async with client.get(f"{server.base}/api/v1/media", headers=headers) as answer:
                assert answer.status == 200
    finally:
        await server.stop()


def test_mediagate_token_refuses_where_no_server_has_a_secret(tmp_path):
    result = mediagate_token(tmp_path, "alice")

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"mediagate: no JWT secret: MEDIAGATE_JWT_SECRET is not set and "
        f"{tmp_path / 'data' / tokens.SECRET_FILE} does not exist (no server has started on this "
        "data directory); run this where the server runs, with its MEDIAGATE_DATA_DIR (or in the "
        "directory holding its ./data), or pass --create-secret to make the secret a server "
        "started here will use"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing made that no server uses


def test_mediagate_token_create_secret_makes_the_one_a_server_will_use(tmp_path):
    result = mediagate_token(
        tmp_path, "alice", "--create-secret", MEDIAGATE_DATA_DIR=str(tmp_path / "data")
    )
    assert result.returncode == 0, result.stderr
    secret_file = tmp_path / "data" / tokens.SECRET_FILE
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert tokens.verify(secret_file.read_bytes().strip(), result.stdout.strip()) == "alice"


@pytest.mark.parametrize(
    ("token", "reason", "message"),
    [
        ("garbage", tokens.MALFORMED, "not a mediagate token"),
        ("caf\u00e9", tokens.MALFORMED, "not a mediagate token"),
        (
            jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"),  # no expiry
            tokens.MALFORMED,
            "not a mediagate token",
        ),
        (
            jwt.encode({"sub": "../x", "exp": 2**32}, SECRET, algorithm="HS256"),
            tokens.MALFORMED,
            "not a mediagate token (its subject is not a user id)",
        ),
        (
            tokens.issue(b"another-secret-that-is-long-enough", "alice", 60),
            tokens.BAD_SIGNATURE,
            "the token is signed for another server (not with this server's secret)",
        ),
        (
            tokens.issue(SECRET, "alice", 60, now=1_000_000_000),
            tokens.EXPIRED,
            "the token expired at 2001-09-09 01:47 UTC",
        ),
    ],
)
def test_a_refused_token_says_why_in_words(token, reason, message):
    with pytest.raises(tokens.InvalidToken) as raised:
        tokens.verify(SECRET, token)
    assert (raised.value.reason, str(raised.value)) == (reason, message)


async def test_the_401_problem_says_why(local_api):
    for token, reason in [
        (None, "missing"),
        ("garbage", "malformed"),
        (tokens.issue(b"another-secret-that-is-long-enough", "alice", 60), "bad-signature"),
    ]:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        answer = await local_api.client.get("/api/v1/media", headers=headers)
        problem = await answer.json()
        assert (answer.status, problem["type"].rsplit("/", 1)[1]) == (401, "unauthorized")
        assert problem["reason"] == reason


def test_stream_links_expire_and_resist_tampering():
    links = StreamLinks(SECRET, lifetime=60)
    expires, signature = links.sign("media-1", now=1_000)
    assert links.is_valid("media-1", str(expires), signature, now=1_030)
    assert not links.is_valid("media-1", str(expires), signature, now=1_061)
    assert not links.is_valid("media-2", str(expires), signature, now=1_030)
    assert not links.is_valid("media-1", str(expires + 1000), signature, now=1_030)
    assert not links.is_valid("media-1", "soon", signature, now=1_030)


async def test_first_start_with_a_generated_secret_logs_how_to_get_a_token(start_api, tmp_path):
    settings = make_settings(tmp_path / "data", jwt_secret=None)
    with capture_logs() as logs:
        first = await start_api(settings)
    hints = [entry for entry in logs if entry["event"] == "auth.secret_generated"]
    assert len(hints) == 1
    assert hints[0]["get_a_token"] == (
        f"MEDIAGATE_DATA_DIR={(tmp_path / 'data').resolve()} mediagate token USER"
    )
    await first.client.close()

    with capture_logs() as logs:
        await start_api(settings)  # a restart: the secret is the one from before
    assert "auth.secret_generated" not in [entry["event"] for entry in logs]


def test_mediagate_token_refuses_a_user_id_with_a_trailing_newline(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mediagate", "token", "alice\n"],
        env={
            "MEDIAGATE_DATA_DIR": str(tmp_path / "data"),
            "MEDIAGATE_JWT_SECRET": "s" * 32,  # so that only the user id can be refused
            "PATH": "/usr/bin:/bin",
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout
    assert result.stdout == "" and "user id" in result.stderr


async def test_a_token_whose_user_id_ends_in_a_newline_is_refused(local_api, tmp_path):
    secret = tokens.load_secret(local_api.settings)
    forged = jwt.encode({"sub": "alice\n", "exp": int(time.time()) + 60}, secret, "HS256")
    headers = {"Authorization": f"Bearer {forged}"}
    answer = await local_api.client.post(
        "/api/v1/media/upload/initiate", json={"filename": "a.mp4", "size": 3}, headers=headers
    )
    assert answer.status == 401
    assert answer.content_type == "application/problem+json"
    assert not [path for path in (tmp_path / "data").rglob("*") if "\n" in path.name]
