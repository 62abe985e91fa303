from __future__ import annotations

import subprocess
import sys

import pytest

from mediagate.config import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("USE_CLOUD_STORAGE", "AWS_S3_BUCKET_NAME", "MEDIAGATE_PORT"):
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
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert name in message and "\n" not in message


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
