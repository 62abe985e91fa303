from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mediagate import tokens
from mediagate.config import GiB, MiB, SettingsError, format_size, load_settings, parse_size
from support.server_process import ServerProcess, free_port


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in (
        "USE_CLOUD_STORAGE",
        "AWS_S3_BUCKET_NAME",
        "MEDIAGATE_PORT",
        "MEDIAGATE_JWT_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)


def test_guide_names_and_dotenv_are_read(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(
        "USE_CLOUD_STORAGE=true\nAWS_S3_BUCKET_NAME=my-media\nSIGNED_URL_EXPIRY=600\n"
        "MEDIAGATE_CORS_ORIGINS=https://a.example, https://b.example\n"
    )
    monkeypatch.setenv("MEDIAGATE_PORT", "9090")
    settings = load_settings()
    assert settings.use_cloud_storage is True
    assert settings.s3_bucket == "my-media"
    assert settings.signed_url_expiry == 600
    assert settings.port == 9090
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MEDIAGATE_PORT", "eighty"),
        ("SIGNED_URL_EXPIRY", "-5"),
        ("USE_CLOUD_STORAGE", "maybe"),
        ("MEDIAGATE_KEY_PREFIX", "../up"),
        ("MEDIAGATE_JWT_SECRET", ""),
        ("MEDIAGATE_JWT_SECRET", "x" * 31),
        ("MEDIAGATE_MAX_UPLOAD_SIZE", "0"),
        ("MEDIAGATE_MAX_OPEN_SESSIONS_PER_USER", "0"),
        ("MEDIAGATE_CHUNK_SIZE", "16"),  # bytes: S3 refuses parts under 5 MiB
        ("MEDIAGATE_CHUNK_SIZE", "4MiB"),
        ("MEDIAGATE_CHUNK_SIZE", "6GiB"),  # S3 refuses parts over 5 GiB
        ("MEDIAGATE_CHUNK_SIZE", "16M"),  # MiB or MB? not guessed
        ("MEDIAGATE_MAX_UPLOAD_SIZE", "ten gigs"),
        ("MEDIAGATE_MAX_UPLOAD_SIZE", "0.5B"),
        ("MEDIAGATE_MAX_UPLOAD_SIZE", "60TiB"),  # more than S3's largest object
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert name in message and "\n" not in message


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("16777216", 16 * MiB),
        ("16MiB", 16 * MiB),
        ("16 MiB", 16 * MiB),
        ("16mib", 16 * MiB),
        ("1.5GiB", 3 * GiB // 2),
        ("500MB", 500_000_000),
        ("2 kB", 2000),
        ("3KiB", 3072),
        ("1TiB", 1024 * GiB),
        ("7B", 7),
        (" 8MiB ", 8 * MiB),
    ],
)
def test_sizes_are_read_with_iec_and_si_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "-1MiB", "16M", "16 mebibytes", "0.1KiB", "1e6"])
def test_sizes_that_are_no_sizes_are_refused(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("size", "text"),
    [(300, "300 B"), (8 * MiB, "8 MiB"), (3 * GiB // 2, "1.5 GiB"), (2**60, "1048576 TiB")],
)
def test_sizes_are_told_in_iec_units(size, text):
    assert format_size(size) == text


def test_size_settings_take_units(monkeypatch):
    monkeypatch.setenv("MEDIAGATE_CHUNK_SIZE", "16MiB")
    monkeypatch.setenv("MEDIAGATE_MAX_UPLOAD_SIZE", "2 GB")
    settings = load_settings()
    assert (settings.chunk_size, settings.max_upload_size) == (16 * MiB, 2_000_000_000)


def test_a_chunk_size_in_bytes_below_s3s_smallest_part_says_so(monkeypatch):
    monkeypatch.setenv("MEDIAGATE_CHUNK_SIZE", "16")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "MEDIAGATE_CHUNK_SIZE='16'" in str(raised.value)
    assert "16 B" in str(raised.value) and "5 MiB to 5 GiB" in str(raised.value)


def test_a_refused_secret_is_not_echoed(monkeypatch):
    monkeypatch.setenv("MEDIAGATE_JWT_SECRET", "short-but-secret")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "short-but-secret" not in str(raised.value)


@pytest.mark.parametrize(
    "bucket",
    [
        "rt",
        "My-Media",
        "media_files",
        "-media",
        "media-",
        "a..b",
        "192.168.1.1",
        "x" * 64,
        "media\n",
    ],
)
def test_cloud_storage_refuses_a_bucket_name_s3_would_refuse(monkeypatch, bucket):
    monkeypatch.setenv("USE_CLOUD_STORAGE", "true")
    monkeypatch.setenv("AWS_S3_BUCKET_NAME", bucket)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "AWS_S3_BUCKET_NAME" in str(raised.value) and "lowercase" in str(raised.value)


@pytest.mark.parametrize("bucket", ["abc", "my-media.example", "b" * 63])
def test_valid_bucket_names_are_taken(monkeypatch, bucket):
    monkeypatch.setenv("USE_CLOUD_STORAGE", "true")
    monkeypatch.setenv("AWS_S3_BUCKET_NAME", bucket)
    assert load_settings().s3_bucket == bucket


def test_cloud_storage_needs_a_bucket(monkeypatch):
    monkeypatch.setenv("USE_CLOUD_STORAGE", "true")
    with pytest.raises(SettingsError, match="AWS_S3_BUCKET_NAME"):
        load_settings()


def test_cli_reports_a_bad_setting_in_one_line_and_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mediagate", "token", "alice"],
        env={"MEDIAGATE_PORT": "eighty", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "MEDIAGATE_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def run_mediagate(tmp_path: Path, *arguments: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mediagate", *arguments],
        env={
            "PATH": "/usr/bin:/bin",
            "MEDIAGATE_DATA_DIR": str(tmp_path / "data"),
            "MEDIAGATE_PORT": str(free_port()),
            **env,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_refused_in_one_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


@pytest.mark.parametrize("command", [("serve",), ("token", "alice")])
@pytest.mark.parametrize("secret", ["", "too-short"])
def test_serve_and_token_refuse_an_empty_or_short_secret(tmp_path, command, secret):
    result = run_mediagate(tmp_path, *command, MEDIAGATE_JWT_SECRET=secret)
    assert_refused_in_one_line(result, "MEDIAGATE_JWT_SECRET", "32 bytes")


@pytest.mark.parametrize("command", [("serve",), ("token", "alice")])
def test_a_truncated_generated_secret_file_is_refused(tmp_path, command):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / tokens.SECRET_FILE).write_bytes(b"abc\n")
    result = run_mediagate(tmp_path, *command)
    assert_refused_in_one_line(result, tokens.SECRET_FILE, "MEDIAGATE_JWT_SECRET")


def test_a_secret_file_that_cannot_be_read_is_refused(tmp_path):
    (tmp_path / "data" / tokens.SECRET_FILE).mkdir(parents=True)
    result = run_mediagate(tmp_path, "token", "alice")
    assert_refused_in_one_line(result, tokens.SECRET_FILE, "MEDIAGATE_JWT_SECRET")


@pytest.mark.parametrize("inside", [False, True], ids=["is-a-file", "below-a-file"])
@pytest.mark.parametrize("command", [("serve",), ("token", "alice")])
def test_a_data_dir_that_is_a_file_is_refused(tmp_path, command, inside):
    (tmp_path / "not-a-dir").write_text("")
    data_dir = tmp_path / "not-a-dir" / "data" if inside else tmp_path / "not-a-dir"
    result = run_mediagate(tmp_path, *command, MEDIAGATE_DATA_DIR=str(data_dir))
    assert_refused_in_one_line(result, "MEDIAGATE_DATA_DIR", "not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only directory")
def test_a_data_dir_that_is_not_writable_is_refused(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o500)
    result = run_mediagate(tmp_path, "serve")
    assert_refused_in_one_line(result, "MEDIAGATE_DATA_DIR", "cannot write", "writable")


def test_serve_refuses_a_host_that_does_not_resolve(tmp_path):
    result = run_mediagate(tmp_path, "serve", MEDIAGATE_HOST="nonexistent.invalid")
    assert_refused_in_one_line(result, "MEDIAGATE_HOST", "does not resolve")


def test_serve_refuses_a_port_in_use_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = run_mediagate(tmp_path, "serve", MEDIAGATE_HOST="127.0.0.1", MEDIAGATE_PORT=port)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]  # after the start-up log
    assert last.startswith("mediagate: cannot listen on") and "MEDIAGATE_PORT" in last
    assert "server.started" not in result.stderr  # it never served


def test_serve_refuses_an_invalid_bucket_name(tmp_path):
    result = run_mediagate(tmp_path, "serve", USE_CLOUD_STORAGE="true", AWS_S3_BUCKET_NAME="rt")
    assert_refused_in_one_line(result, "AWS_S3_BUCKET_NAME='rt'")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MEDIAGATE_PUBLIC_URL", "media.example.com"),
        ("MEDIAGATE_PUBLIC_URL", "ftp://media.example.com"),
        ("MEDIAGATE_PUBLIC_URL", "https://user@media.example.com"),
        ("MEDIAGATE_PUBLIC_URL", "https://media.example.com:99999"),
        ("MEDIAGATE_PUBLIC_URL", "https://media.example.com/?x=1"),
        ("MEDIAGATE_CORS_ORIGINS", "https://app.example.com/page"),
        ("MEDIAGATE_CORS_ORIGINS", "app.example.com"),
    ],
)
def test_links_and_origins_that_could_never_work_are_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_public_url_with_a_path_and_origins_with_a_slash_are_fine(monkeypatch):
    monkeypatch.setenv("MEDIAGATE_PUBLIC_URL", "https://example.com:8443/media/")
    monkeypatch.setenv("MEDIAGATE_CORS_ORIGINS", "https://app.example.com/, http://[::1]:3000, *")
    settings = load_settings()
    assert settings.public_url == "https://example.com:8443/media"
    assert settings.cors_origins == ["https://app.example.com", "http://[::1]:3000", "*"]


def test_a_database_url_needs_a_jwt_secret_and_keeps_its_password_out_of_errors(monkeypatch):
    monkeypatch.delenv("MEDIAGATE_JWT_SECRET", raising=False)
    monkeypatch.setenv("MEDIAGATE_DATABASE_URL", "postgresql://mediagate:pw@db/mediagate")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "MEDIAGATE_JWT_SECRET" in str(raised.value) and "\n" not in str(raised.value)

    monkeypatch.setenv("MEDIAGATE_JWT_SECRET", "a-secret-shared-by-every-instance")
    assert load_settings().database_url is not None

    monkeypatch.setenv("MEDIAGATE_DATABASE_URL", "mysql://mediagate:hunter2@db/mediagate")
    with pytest.raises(SettingsError, match="MEDIAGATE_DATABASE_URL") as raised:
        load_settings()
    assert "hunter2" not in str(raised.value)


def test_serve_with_a_shared_catalog_and_no_jwt_secret_refuses_to_start(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mediagate", "serve"],
        env={"MEDIAGATE_DATABASE_URL": "postgresql://db/mediagate", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "MEDIAGATE_JWT_SECRET" in result.stderr


def test_an_empty_database_url_means_sqlite(monkeypatch):
    monkeypatch.setenv("MEDIAGATE_DATABASE_URL", "")
    assert load_settings().database_url is None


async def test_a_second_server_on_one_sqlite_data_dir_is_refused_in_one_line(tmp_path):
    first = ServerProcess(tmp_path / "data", {"MEDIAGATE_JWT_SECRET": "s" * 32})
    await first.start()
    try:
        second = await asyncio.to_thread(run_mediagate, tmp_path, "serve")
        assert_refused_in_one_line(second, "MEDIAGATE_DATA_DIR", f"pid {first.process.pid}")
        assert "another mediagate serve" in second.stderr
    finally:
        await first.stop()  # SIGKILL: the kernel drops the lock with the process
    again = ServerProcess(tmp_path / "data", {"MEDIAGATE_JWT_SECRET": "s" * 32})
    await again.start()
    await again.stop()


WHSEC = "whsec_" + "a" * 32  # base64 of 24 bytes


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"MEDIAGATE_WEBHOOK_URL": "https://app.example/hooks"}, "MEDIAGATE_WEBHOOK_SECRET"),
        (
            {"MEDIAGATE_WEBHOOK_URL": "app.example/hooks", "MEDIAGATE_WEBHOOK_SECRET": WHSEC},
            "MEDIAGATE_WEBHOOK_URL='app.example/hooks'",
        ),
        (
            {
                "MEDIAGATE_WEBHOOK_URL": "https://a.example/h, ftp://b.example/h",
                "MEDIAGATE_WEBHOOK_SECRET": WHSEC,
            },
            "ftp://b.example/h",
        ),
        ({"MEDIAGATE_WEBHOOK_SECRET": "not-whsec"}, "whsec_"),
        ({"MEDIAGATE_WEBHOOK_SECRET": "whsec_" + "a" * 8}, "24 bytes"),
        ({"MEDIAGATE_WEBHOOK_SECRET": "whsec_!!!!"}, "base64"),
        ({"MEDIAGATE_WEBHOOK_RETRY_FOR": "0"}, "MEDIAGATE_WEBHOOK_RETRY_FOR"),
    ],
)
def test_webhook_settings_refused_say_why(monkeypatch, env, said):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert said in str(raised.value)
    assert "not-whsec" not in str(raised.value)  # the secret is never echoed


def test_webhook_urls_are_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("MEDIAGATE_WEBHOOK_URL", "https://a.example/h, http://127.0.0.1:9/h")
    monkeypatch.setenv("MEDIAGATE_WEBHOOK_SECRET", WHSEC)
    settings = load_settings()
    assert settings.webhook_urls == ["https://a.example/h", "http://127.0.0.1:9/h"]
    assert settings.webhook_retry_for == 24 * 3600
