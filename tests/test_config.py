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
