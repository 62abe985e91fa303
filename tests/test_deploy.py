"""Checks of deploy/ that run without a Docker engine.

Static checks parse the files; `nginx -t` and `systemd-analyze verify` run when
those tools are installed and are skipped otherwise.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mediagate.config import env_names

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
README = (DEPLOY / "README.md").read_text()

# The env names from shared/DESIGN.md (plus MEDIAGATE_LOG_FORMAT and
# MEDIAGATE_PUBLIC_URL). To be replaced by the fields of mediagate.config.Settings.
KNOWN_SETTINGS = frozenset(env_names().values())
# Set in the image for Python itself, not for mediagate.
IMAGE_ONLY_ENV = frozenset({"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"})
MAX_CHUNK = 5 * 1024**3  # S3's largest part


# --- helpers -------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out: list[tuple[str, str]] = []
    for line in joined.splitlines():
        if line.strip():
            instr, _, args = line.strip().partition(" ")
            if instr.upper() == "FROM":
                out = []  # keep the last stage only
            out.append((instr.upper(), args.strip()))
    return out


def instr(name: str) -> str:
    (args,) = [a for i, a in dockerfile() if i == name]
    return args


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for i, args in dockerfile():
        if i == "ENV":
            env.update(kv.split("=", 1) for kv in shlex.split(args))
    return env


def healthcheck_argv() -> list[str]:
    args = instr("HEALTHCHECK")
    return json.loads(args[args.index("CMD ") + 4 :])


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def interpolate(value: str) -> str:
    """Compose interpolation with the defaults (no variables set)."""
    value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
    return value.replace("$$", "$")


def env_file_keys(text: str) -> set[str]:
    """KEY=value lines, including commented-out suggestions (#KEY=)."""
    return set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", text, re.M))


def unit() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (DEPLOY / "mediagate.service").read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def nginx_tree(text: str) -> list:
    """Parse nginx syntax into [(words, children|None)]; raises on bad braces."""
    tokens = re.findall(r"\"[^\"]*\"|'[^']*'|#[^\n]*|[{};]|[^\s{};\"'#]+", text)
    stack: list[list] = [[]]
    words: list[str] = []
    for tok in tokens:
        if tok.startswith("#"):
            continue
        if tok == "{":
            block: list = []
            stack[-1].append((words, block))
            stack.append(block)
            words = []
        elif tok == "}":
            assert not words and len(stack) > 1, "unbalanced '}'"
            stack.pop()
        elif tok == ";":
            stack[-1].append((words, None))
            words = []
        else:
            words.append(tok)
    assert len(stack) == 1 and not words, "unclosed '{' or missing ';'"
    return stack[0]


def walk(tree: list, parents: tuple = ()):
    for words, children in tree:
        yield parents, words
        if children is not None:
            yield from walk(children, (*parents, tuple(words)))


def nginx_size(value: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(value[:-1]) * units[value[-1].lower()] if value[-1].isalpha() else int(value)


# --- compose -------------------------------------------------------------------


def test_compose_services_and_volumes():
    c = compose()
    assert set(c["services"]) == {"minio", "create-bucket", "mediagate"}
    used = {
        v.split(":", 1)[0]
        for s in c["services"].values()
        for v in s.get("volumes", [])
        if not v.startswith((".", "/"))
    }
    assert used == set(c["volumes"]) == {"minio-data", "mediagate-data"}
    mg = c["services"]["mediagate"]
    assert mg["volumes"] == [f"mediagate-data:{json.loads(instr('VOLUME'))[0]}"]
    assert (DEPLOY / mg["build"]["context"]).resolve() == ROOT
    assert (ROOT / mg["build"]["dockerfile"]) == DEPLOY / "Dockerfile"


def test_compose_ports_bound_to_loopback():
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


def test_compose_start_is_health_gated():
    services = compose()["services"]
    assert services["minio"]["healthcheck"]["test"]
    assert services["create-bucket"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert services["create-bucket"]["restart"] == "no"
    assert services["mediagate"]["depends_on"] == {
        "minio": {"condition": "service_healthy"},
        "create-bucket": {"condition": "service_completed_successfully"},
    }
    for service in services.values():
        for target, cond in service.get("depends_on", {}).items():
            if cond["condition"] == "service_healthy":
                dep = services[target]
                # mediagate's healthcheck would come from the Dockerfile.
                assert "healthcheck" in dep or "build" in dep, target
    # mediagate inherits the image's HEALTHCHECK
    assert "healthcheck" not in services["mediagate"]
    assert services["mediagate"]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_compose_mediagate_points_at_minio_and_its_bucket():
    services = compose()["services"]
    env = {k: interpolate(str(v)) for k, v in services["mediagate"]["environment"].items()}
    minio = {k: interpolate(v) for k, v in services["minio"]["environment"].items()}
    mc = {k: interpolate(v) for k, v in services["create-bucket"]["environment"].items()}
    assert env["USE_CLOUD_STORAGE"] == "true"
    assert env["AWS_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["AWS_S3_BUCKET_NAME"] == mc["BUCKET"]
    assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"] == mc["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert len(minio["MINIO_ROOT_PASSWORD"]) >= 8  # MinIO refuses shorter ones
    script = " ".join(services["create-bucket"]["command"])
    assert "http://minio:9000" in script and 'mc mb --ignore-existing "local/$$BUCKET"' in script


# --- env names -----------------------------------------------------------------


def test_every_env_name_set_is_a_known_setting():
    sources = {
        "docker-compose.yml (mediagate)": set(compose()["services"]["mediagate"]["environment"]),
        "Dockerfile ENV": set(dockerfile_env()) - IMAGE_ONLY_ENV,
        "mediagate.service Environment=": {
            kv.split("=", 1)[0] for v in unit()["Environment"] for kv in shlex.split(v)
        },
        "mediagate.env.example": env_file_keys((DEPLOY / "mediagate.env.example").read_text()),
    }
    for source, names in sources.items():
        assert names, source
        assert names <= KNOWN_SETTINGS, (source, names - KNOWN_SETTINGS)


def test_readme_env_example_is_the_file():
    example = (DEPLOY / "mediagate.env.example").read_text()
    assert f"```sh\n{example}```" in README


# --- Dockerfile ----------------------------------------------------------------


def test_dockerfile_runtime_image():
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim", instr("FROM"))
    assert re.search(r"^ARG PYTHON_VERSION=3\.1[12]$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert instr("USER").split(":")[0] not in {"root", "0"}
    assert instr("EXPOSE") == "8080"
    assert instr("STOPSIGNAL") == "SIGTERM"
    env = dockerfile_env()
    assert env["MEDIAGATE_HOST"] == "0.0.0.0"
    assert env["MEDIAGATE_PORT"] == "8080"
    assert json.loads(instr("VOLUME")) == [env["MEDIAGATE_DATA_DIR"]] == ["/var/lib/mediagate"]


def test_healthcheck_needs_no_curl_and_hits_healthz():
    argv = healthcheck_argv()
    assert argv[:2] == ["python", "-c"]
    assert "/healthz" in argv[2] and "MEDIAGATE_PORT" in argv[2]
    compile(argv[2], "<healthcheck>", "exec")


def test_readme_shows_the_image_commands():
    command = json.loads(instr("ENTRYPOINT")) + json.loads(instr("CMD"))
    assert command == ["mediagate", "serve"]
    assert f"`{' '.join(command)}`" in README
    (shown,) = re.findall(r"`(docker exec mediagate python -c .*)`", README)
    assert shlex.split(shown)[3:] == healthcheck_argv()
    header = (DEPLOY / "Dockerfile").read_text().splitlines()[1].lstrip("# ")
    assert f"\n{header}\n" in README


def test_readme_compose_commands_and_paths():
    header = (DEPLOY / "docker-compose.yml").read_text().splitlines()[1].lstrip("# ")
    assert f"\n{header}\n" in README
    for path in set(re.findall(r"\bdeploy/[\w.-]+", README)) - {"deploy/.env"}:
        assert (ROOT / path).is_file(), path


def test_stop_timeouts_agree():
    compose_grace = compose()["services"]["mediagate"]["stop_grace_period"]
    (docker_run,) = set(re.findall(r"--stop-timeout (\d+)", README))
    (systemd,) = unit()["TimeoutStopSec"]
    assert compose_grace == f"{docker_run}s" and systemd == docker_run


# --- systemd -------------------------------------------------------------------


def test_systemd_unit_is_hardened_and_matches_readme():
    u = unit()
    expected = {
        "User": "mediagate",
        "EnvironmentFile": "/etc/mediagate/env",
        "StateDirectory": "mediagate",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/mediagate",
        "NoNewPrivileges": "yes",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
    }
    for key, value in expected.items():
        assert u.get(key) == [value], key
    assert int(u["LimitNOFILE"][0]) >= 4096
    env = dict(kv.split("=", 1) for kv in shlex.split(u["Environment"][0]))
    assert env["MEDIAGATE_DATA_DIR"] == u["ReadWritePaths"][0]
    exec_start = shlex.split(u["ExecStart"][0])
    assert exec_start[1:] == ["serve"]
    venv_bin = exec_start[0].rsplit("/", 1)[0]
    assert f"{venv_bin}/pip install ." in README
    assert f"{venv_bin}/mediagate token" in README
    assert "deploy/mediagate.env.example /etc/mediagate/env" in README


def test_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    # verify insists that ExecStart exists: point it at a stub, check the rest.
    stub = tmp_path / "mediagate"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    text = (DEPLOY / "mediagate.service").read_text()
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={stub}", text, flags=re.M)
    service = tmp_path / "mediagate.service"
    service.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(service)], capture_output=True, text=True, timeout=60
    )
    # Bad or unknown settings are only warnings (exit 0) that name the file.
    problems = [ln for ln in result.stderr.splitlines() if "mediagate.service" in ln]
    assert result.returncode == 0 and not problems, result.stderr


# --- nginx ---------------------------------------------------------------------


def test_nginx_config_static():
    tree = nginx_tree((DEPLOY / "nginx.conf").read_text())
    directives = list(walk(tree))

    def values(name: str, inside: str | None = None) -> list[list[str]]:
        return [
            words[1:]
            for parents, words in directives
            if words[0] == name and (inside is None or any(inside in " ".join(p) for p in parents))
        ]

    assert ["off"] in values("proxy_request_buffering")
    assert values("proxy_buffering", "location /api/v1/media/stream/") == [["off"]]
    (body_size,) = values("client_max_body_size")
    assert nginx_size(body_size[0]) >= MAX_CHUNK
    assert values("proxy_http_version") == [["1.1"]]
    assert values("proxy_set_header") and not values("proxy_set_header", "location")
    assert ["Connection", '""'] in values("proxy_set_header")
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"):
        assert header in {v[0] for v in values("proxy_set_header")}
    assert ["Range", "$http_range"] in values("proxy_set_header")
    assert ["If-Range", "$http_if_range"] in values("proxy_set_header")
    upload_timeout = values("proxy_read_timeout", "location /api/v1/media/upload/")
    assert int(upload_timeout[0][0].rstrip("s")) >= 300
    # upstream targets mediagate's default port
    assert values("server", "upstream mediagate") == [["127.0.0.1:8080"]]
    assert values("keepalive", "upstream mediagate")


def test_nginx_brace_check_catches_errors():
    with pytest.raises(AssertionError):
        nginx_tree("server { location / { }")
    with pytest.raises(AssertionError):
        nginx_tree("server { } }")


def test_nginx_t(tmp_path):
    nginx, openssl = shutil.which("nginx"), shutil.which("openssl")
    if not nginx or not openssl:
        pytest.skip("nginx or openssl is not installed: `nginx -t` not run")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=media.example.com", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    site = (DEPLOY / "nginx.conf").read_text()
    site = site.replace("/etc/ssl/mediagate/fullchain.pem", str(cert))
    site = site.replace("/etc/ssl/mediagate/privkey.pem", str(key))
    (tmp_path / "mediagate.conf").write_text(site)
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/error.log;\n"
        "events {}\n"
        "http {\n"
        "    access_log off;\n"
        f"    client_body_temp_path {tmp_path}/body;\n"
        f"    proxy_temp_path {tmp_path}/proxy;\n"
        f"    include {tmp_path}/mediagate.conf;\n"
        "}\n"
    )
    result = subprocess.run(
        [nginx, "-t", "-e", "stderr", "-p", f"{tmp_path}/", "-c", str(main)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


# --- several instances: compose with PostgreSQL, MinIO, two instances, nginx ----

INSTANCES = ("mediagate-a", "mediagate-b")
# The PostgreSQL catalog's setting (issue 9 item 1).
CATALOG_URL = "MEDIAGATE_DATABASE_URL"


def instances_compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.instances.yml").read_text())


def test_instances_compose_services_and_shared_volume():
    c = instances_compose()
    services = c["services"]
    assert set(services) == {
        *("postgres", "minio", "create-bucket", "db-upgrade", "nginx", *INSTANCES)
    }
    used = {
        v.split(":", 1)[0]
        for s in services.values()
        for v in s.get("volumes", [])
        if not v.startswith((".", "/"))
    }
    assert used == set(c["volumes"]) == {"postgres-data", "minio-data", "mediagate-data"}
    a, b = (services[name] for name in INSTANCES)
    assert a == b, "the two instances must run with the same settings"
    # One data directory for both: local media, spilled chunks and tus tails.
    assert a["volumes"] == [f"mediagate-data:{json.loads(instr('VOLUME'))[0]}"]
    assert (ROOT / a["build"]["dockerfile"]) == DEPLOY / "Dockerfile"
    assert (DEPLOY / a["build"]["context"]).resolve() == ROOT
    assert "ports" not in a, "instances are reached through nginx only"
    assert a["stop_grace_period"] == compose()["services"]["mediagate"]["stop_grace_period"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


def test_instances_share_catalog_secret_bucket_and_public_url():
    services = instances_compose()["services"]
    env = services["mediagate-a"]["environment"]
    names = set(env)
    assert names <= KNOWN_SETTINGS | {CATALOG_URL}, names - KNOWN_SETTINGS
    # Required, never generated per data directory: tokens must work on both.
    assert re.fullmatch(r"\$\{MEDIAGATE_JWT_SECRET:\?[^}]+\}", env["MEDIAGATE_JWT_SECRET"])
    values = {k: interpolate(str(v)) for k, v in env.items() if k != "MEDIAGATE_JWT_SECRET"}
    postgres = {k: interpolate(v) for k, v in services["postgres"]["environment"].items()}
    user, password, database = (postgres[f"POSTGRES_{key}"] for key in ("USER", "PASSWORD", "DB"))
    assert values[CATALOG_URL] == f"postgresql://{user}:{password}@postgres:5432/{database}"
    minio = {k: interpolate(v) for k, v in services["minio"]["environment"].items()}
    mc = {k: interpolate(v) for k, v in services["create-bucket"]["environment"].items()}
    assert values["AWS_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert values["AWS_S3_BUCKET_NAME"] == mc["BUCKET"]
    assert values["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert values["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    # Links point at nginx, the one published address.
    (published,) = services["nginx"]["ports"]
    assert values["MEDIAGATE_PUBLIC_URL"] == "http://" + published.rsplit(":", 1)[0]


def test_instances_start_in_order():
    services = instances_compose()["services"]
    done = {"condition": "service_completed_successfully"}
    healthy = {"condition": "service_healthy"}
    assert services["postgres"]["healthcheck"]["test"]
    # The schema is upgraded once, before the instances start, not by both at once.
    assert services["db-upgrade"]["depends_on"] == {"postgres": healthy}
    assert services["db-upgrade"]["command"] == ["db", "upgrade"]
    assert services["db-upgrade"]["restart"] == "no"
    for name in INSTANCES:
        assert services[name]["depends_on"] == {"create-bucket": done, "db-upgrade": done}
    # nginx waits for the image's HEALTHCHECK of both.
    assert services["nginx"]["depends_on"] == dict.fromkeys(INSTANCES, healthy)


def test_instances_nginx_balances_over_both():
    services = instances_compose()["services"]
    (mount,) = services["nginx"]["volumes"]
    source, target, mode = mount.split(":")
    assert (DEPLOY / source).resolve() == DEPLOY / "nginx-instances.conf"
    assert target.startswith("/etc/nginx/conf.d/") and mode == "ro"
    tree = nginx_tree((DEPLOY / "nginx-instances.conf").read_text())
    directives = list(walk(tree))

    def values(name: str, inside: str | None = None) -> list[list[str]]:
        return [
            words[1:]
            for parents, words in directives
            if words[0] == name and (inside is None or any(inside in " ".join(p) for p in parents))
        ]

    port = dockerfile_env()["MEDIAGATE_PORT"]
    upstream = values("server", "upstream mediagate")
    assert [words[0] for words in upstream] == [f"{name}:{port}" for name in INSTANCES]
    assert values("keepalive", "upstream mediagate")
    (published,) = services["nginx"]["ports"]
    assert [published.rsplit(":", 1)[1]] in values("listen")
    # What deploy/nginx.conf sets for streamed chunks and ranges holds here too.
    assert values("proxy_request_buffering") == [["off"]]
    assert values("proxy_buffering", "location /api/v1/media/stream/") == [["off"]]
    (body_size,) = values("client_max_body_size")
    assert nginx_size(body_size[0]) >= MAX_CHUNK
    assert ["Connection", '""'] in values("proxy_set_header")
    assert not values("proxy_set_header", "location")
    assert int(values("proxy_read_timeout", "location /api/v1/media/upload/")[0][0][:-1]) >= 300
    # A draining instance answers 503: the request goes to the other one.
    assert "http_503" in values("proxy_next_upstream")[0]
    assert "non_idempotent" not in values("proxy_next_upstream")[0]


def test_readme_shows_the_instances_compose_command():
    command = (DEPLOY / "docker-compose.instances.yml").read_text().splitlines()[2].lstrip("# ")
    assert f"\n{command}\n" in README


def test_instances_nginx_t(tmp_path):
    nginx = shutil.which("nginx")
    if not nginx:
        pytest.skip("nginx is not installed: `nginx -t` not run")
    site = (DEPLOY / "nginx-instances.conf").read_text()
    for index, name in enumerate(INSTANCES):  # the names resolve inside compose only
        site = site.replace(f"{name}:", f"127.0.0.{index + 1}:")
    (tmp_path / "instances.conf").write_text(site)
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/error.log;\n"
        "events {}\n"
        "http {\n"
        "    access_log off;\n"
        f"    client_body_temp_path {tmp_path}/body;\n"
        f"    proxy_temp_path {tmp_path}/proxy;\n"
        f"    include {tmp_path}/instances.conf;\n"
        "}\n"
    )
    result = subprocess.run(
        [nginx, "-t", "-e", "stderr", "-p", f"{tmp_path}/", "-c", str(main)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
