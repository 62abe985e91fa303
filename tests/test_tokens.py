from __future__ import annotations

import subprocess
import sys
import time

import jwt as pyjwt
import pytest
from structlog.testing import capture_logs

from conftest import make_settings
from mediagate import tokens
from mediagate.core.links import StreamLinks

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


def test_mediagate_token_prints_a_token_the_server_accepts(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mediagate", "token", "alice", "--ttl", "120"],
        env={"MEDIAGATE_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    secret_file = tmp_path / "data" / tokens.SECRET_FILE
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert tokens.verify(secret_file.read_bytes().strip(), result.stdout.strip()) == "alice"


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
        env={"MEDIAGATE_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout
    assert result.stdout == "" and "user id" in result.stderr


async def test_a_token_whose_user_id_ends_in_a_newline_is_refused(local_api, tmp_path):
    secret = tokens.load_secret(local_api.settings)
    forged = pyjwt.encode({"sub": "alice\n", "exp": int(time.time()) + 60}, secret, "HS256")
    headers = {"Authorization": f"Bearer {forged}"}
    answer = await local_api.client.post(
        "/api/v1/media/upload/initiate", json={"filename": "a.mp4", "size": 3}, headers=headers
    )
    assert answer.status == 401
    assert answer.content_type == "application/problem+json"
    assert not [path for path in (tmp_path / "data").rglob("*") if "\n" in path.name]
