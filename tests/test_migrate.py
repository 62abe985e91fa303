"""`mediagate migrate`: local media into S3 (moto over HTTP), verified, resumable, never lost.

Local media are made the real way, uploaded through a mediagate server with
local storage; the migration then runs in-process or as `python -m mediagate
migrate`, and a server with cloud storage on, on the same data directory,
serves the result.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

import mediagate
from mediagate.catalog.base import CATALOG_FILE
from mediagate.catalog.connect import open_catalog
from mediagate.catalog.sqlite import SQLiteCatalog
from mediagate.cli import main
from mediagate.config import Settings
from mediagate.errors import StorageRejected
from mediagate.migrate.plan import Options, plan_migration
from mediagate.migrate.report import Report, Summary
from mediagate.migrate.service import Migrator, Stores, migrate_all
from mediagate.migrate.transfer import Expected, Uploader, md5_base64
from mediagate.models import Media, StorageKind
from mediagate.storage.base import NewObject, StoredObject
from mediagate.storage.local import LocalStore
from mediagate.storage.s3 import S3Store
from support.api import MiB, chunks_of, make_settings, read_object
from support.tier import S3_ACCESS_KEY, only_on_rgw

pytestmark = pytest.mark.store

# Sizes from nothing to multipart with a short last part, for three users.
FEW = [
    ("alice", "empty.bin", 0),
    ("alice", "clip.mp4", 9 * MiB + 3),
    ("bob", "note.txt", 1000),
    ("bob", "song.mp3", 3 * MiB + 7),
    ("carol", "movie.webm", 5 * MiB),
]
MIXED = [*FEW, ("carol", "film.mkv", 24 * MiB + 11)]


@dataclass(frozen=True)
class Uploaded:
    user: str
    filename: str
    data: bytes
    media_id: str

    @property
    def key(self) -> str:
        return f"media/{self.user}/{self.media_id}/{self.filename}"

    @property
    def checksum(self) -> str:
        return f"sha256:{hashlib.sha256(self.data).hexdigest()}"


async def upload(api, user: str, filename: str, data: bytes) -> Uploaded:
    api = api.as_user(user)
    created = await api.initiate(filename=filename, size=len(data))
    assert created.status == 201, await created.text()
    session = await created.json()
    assert session["storage"] == "local"
    for number, piece in enumerate(chunks_of(data, session["chunk_size"])):
        assert (await api.put_chunk(session["session_id"], number, piece)).status == 200
    done = await api.complete(session["session_id"])
    assert done.status == 201, await done.text()
    return Uploaded(user, filename, data, (await done.json())["media_id"])


async def upload_all(api, specs) -> dict[str, Uploaded]:
    rng = random.Random(5)
    items = [await upload(api, user, name, rng.randbytes(size)) for user, name, size in specs]
    return {item.media_id: item for item in items}


@pytest.fixture
async def library(local_api) -> dict[str, Uploaded]:
    return await upload_all(local_api, FEW)


@pytest.fixture
async def mixed_library(local_api) -> dict[str, Uploaded]:
    return await upload_all(local_api, MIXED)


async def migrate(settings: Settings, **options) -> Summary:
    summary = Summary()
    await migrate_all(settings, Options(**options), Report(summary))
    return summary


async def records(settings: Settings) -> dict[str, Media]:
    async with open_catalog(settings) as catalog:
        return {
            media.id: media
            for storage in StorageKind
            for media in await catalog.media_in_storage(
                storage, user_id=None, after=None, limit=1000
            )
        }


async def object_count(s3_objects, bucket: str) -> int:
    return (await s3_objects.list_objects_v2(Bucket=bucket)).get("KeyCount", 0)


async def unfinished_uploads(s3_objects, bucket: str) -> list:
    return (await s3_objects.list_multipart_uploads(Bucket=bucket)).get("Uploads", [])


async def assert_each_media_whole_in_one_place(settings, s3_objects, bucket, library) -> set:
    """Nothing lost, nothing added: each record's bytes are where the record says."""
    found = await records(settings)
    assert set(found) == set(library)
    for media_id, item in library.items():
        if found[media_id].storage is StorageKind.S3:
            assert await read_object(s3_objects, bucket, item.key) == item.data, item.key
        else:
            assert (settings.data_dir / item.key).read_bytes() == item.data, item.key
    return {media.storage for media in found.values()}


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        # The same mediagate as this test process's, wherever it was imported from.
        "PYTHONPATH": str(Path(mediagate.__file__).parents[1]),
        "MEDIAGATE_DATA_DIR": str(settings.data_dir),
        "USE_CLOUD_STORAGE": "true",
        "AWS_S3_BUCKET_NAME": settings.s3_bucket or "",
        "AWS_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        "MEDIAGATE_LOG_FORMAT": "json",
        **database_env(settings),
    }


def database_env(settings: Settings) -> dict[str, str]:
    if settings.database_url is None or settings.jwt_secret is None:
        return {}
    return {
        "MEDIAGATE_DATABASE_URL": settings.database_url.get_secret_value(),
        "MEDIAGATE_JWT_SECRET": settings.jwt_secret.get_secret_value(),
    }


async def start_cli(settings: Settings, *arguments: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mediagate",
        "migrate",
        *arguments,
        env=cli_env(settings),
        cwd=settings.data_dir.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish_cli(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def run_cli(settings: Settings, *arguments: str) -> tuple[int, str, str]:
    return await finish_cli(await start_cli(settings, *arguments))


async def test_dry_run_prints_the_plan_and_changes_nothing(
    library, s3_settings, s3_objects, bucket
):
    code, out, err = await run_cli(s3_settings, "--dry-run", "--json")

    assert code == 0, err
    plan = json.loads(out)
    total = sum(len(item.data) for item in library.values())
    assert (plan["dry_run"], plan["files"], plan["bytes"]) == (True, len(FEW), total)
    assert {job["media_id"] for job in plan["jobs"]} == set(library)
    assert {job["action"] for job in plan["jobs"]} == {"move"}
    assert {media.storage for media in (await records(s3_settings)).values()} == {StorageKind.LOCAL}
    with pytest.raises(ClientError):
        await s3_objects.head_bucket(Bucket=bucket)  # not even the bucket was created


async def test_the_migration_command_works_on_a_postgresql_catalog(
    start_api, postgres_server, tmp_path, moto_endpoint, bucket, s3_objects
):
    local = make_settings(tmp_path / "data", database_url=postgres_server.new_database())
    library = await upload_all(await start_api(local), FEW)
    settings = local.model_copy(
        update={"use_cloud_storage": True, "s3_bucket": bucket, "s3_endpoint_url": moto_endpoint}
    )

    code, out, err = await run_cli(settings, "--json")

    assert code == 0, err
    assert json.loads(out)["migrated"] == len(FEW)
    assert not (settings.data_dir / CATALOG_FILE).exists()  # the records live in PostgreSQL
    assert await assert_each_media_whole_in_one_place(settings, s3_objects, bucket, library) == {
        StorageKind.S3
    }


@pytest.mark.transport
async def test_migration_copies_byte_for_byte_and_the_server_serves_from_s3_throughout(
    mixed_library, start_api, s3_settings, s3_objects, bucket
):
    library = mixed_library
    server = await start_api(s3_settings)  # cloud storage on, same data directory
    answers: list[int] = []
    watching = asyncio.create_task(keep_requesting_streams(server, library, answers))

    summary = await migrate(s3_settings, batch_size=3)
    watching.cancel()

    assert (summary.migrated, summary.failed, summary.skipped) == (len(MIXED), 0, 0)
    assert summary.bytes == sum(size for _, _, size in MIXED) and summary.exit_code == 0
    assert answers and set(answers) <= {200, 302}, "a media was not servable mid-migration"
    found = await records(s3_settings)
    for media_id, item in library.items():
        assert await read_object(s3_objects, bucket, item.key) == item.data
        head = await s3_objects.head_object(Bucket=bucket, Key=item.key)
        assert head["Metadata"] == {"owner": item.user, "filename": item.filename}
        assert head["CacheControl"] == "max-age=31536000, immutable"
        assert head["ContentType"] == found[media_id].content_type
        assert (found[media_id].storage, found[media_id].checksum) == (
            StorageKind.S3,
            item.checksum,
        )
        assert (s3_settings.data_dir / item.key).exists()  # kept without --delete-local
        viewer = server.as_user(item.user)
        answer = await viewer.client.get(
            f"/api/v1/media/stream/{media_id}", headers=viewer.headers, allow_redirects=False
        )
        assert answer.status == 302 and bucket in answer.headers["Location"]

    again = await migrate(s3_settings, batch_size=3)
    assert (again.migrated, again.imported, again.failed, again.bytes) == (0, 0, 0, 0)
    assert await object_count(s3_objects, bucket) == len(MIXED)


async def keep_requesting_streams(server, library, answers: list[int]) -> None:
    while True:
        for media_id, item in library.items():
            viewer = server.as_user(item.user)
            answer = await viewer.client.head(
                f"/api/v1/media/stream/{media_id}", headers=viewer.headers, allow_redirects=False
            )
            answers.append(answer.status)
        await asyncio.sleep(0.05)


@pytest.mark.transport
async def test_verify_passes_and_fails_once_the_object_is_altered(
    library, s3_settings, s3_objects, bucket
):
    await migrate(s3_settings)
    item = next(item for item in library.values() if item.filename == "song.mp3")

    code, out, _ = await run_cli(s3_settings, "--verify", item.media_id, "--json")
    assert code == 0
    assert json.loads(out)["ok"] is True

    tampered = bytearray(item.data)
    tampered[1234] ^= 0xFF
    await s3_objects.put_object(Bucket=bucket, Key=item.key, Body=bytes(tampered))
    code, out, _ = await run_cli(s3_settings, "--verify", item.media_id)
    assert code == 1
    assert out.startswith("FAILED") and "SHA-256" in out


async def test_delete_local_removes_copies_only_once_they_are_in_s3(
    library, start_api, s3_settings, s3_objects, bucket
):
    first = await migrate(s3_settings, user_id="alice")
    assert (first.migrated, first.local_copies_deleted) == (2, 0)
    assert {
        media.user_id
        for media in (await records(s3_settings)).values()
        if media.storage is StorageKind.LOCAL
    } == {"bob", "carol"}

    second = await migrate(s3_settings, delete_local=True)

    # bob's and carol's are moved and deleted; alice's copies, kept by the first run, deleted too
    assert (second.migrated, second.local_copies_deleted, second.failed) == (3, 5, 0)
    assert [path for path in (s3_settings.data_dir / "media").rglob("*") if path.is_file()] == []
    assert await assert_each_media_whole_in_one_place(s3_settings, s3_objects, bucket, library) == {
        StorageKind.S3
    }
    server = await start_api(s3_settings)
    item = next(iter(library.values()))
    viewer = server.as_user(item.user)
    answer = await viewer.client.get(
        f"/api/v1/media/stream/{item.media_id}", headers=viewer.headers, allow_redirects=False
    )
    assert answer.status == 302


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
async def test_a_video_s_poster_moves_with_it(tmp_path, start_api, s3_settings, s3_objects, bucket):
    clip = tmp_path / "clip.mp4"
    await asyncio.to_thread(
        subprocess.run,
        "ffmpeg -v error -f lavfi -i testsrc=duration=1:size=160x120:rate=10 -c:v libx264 "
        f"-preset ultrafast -pix_fmt yuv420p {clip}".split(),
        check=True,
    )
    local = await start_api(make_settings(s3_settings.data_dir, probe=True))
    video = await upload(local, "alice", "clip.mp4", clip.read_bytes())
    poster_key = f"media/alice/{video.media_id}/.poster.jpg"
    local_poster = s3_settings.data_dir / poster_key
    poster = local_poster.read_bytes()
    assert poster[:3] == b"\xff\xd8\xff"

    summary = await migrate(s3_settings, delete_local=True)

    assert (summary.migrated, summary.failed) == (1, 0)
    assert await read_object(s3_objects, bucket, poster_key) == poster
    assert not local_poster.exists()
    server = await start_api(s3_settings)
    info = await (await server.info(video.media_id)).json()
    link = info["poster_url"].removeprefix(str(server.client.make_url("")))
    assert (await server.client.get(link, allow_redirects=False)).status == 302
    assert (await server.delete(video.media_id)).status == 204
    assert await object_count(s3_objects, bucket) == 0


@pytest.fixture
def proxied_settings(s3_settings, proxy) -> Settings:
    return s3_settings.model_copy(update={"s3_endpoint_url": proxy.url})


@pytest.mark.parametrize("interruption", ["s3-cut", "sigkill", "ctrl-c"])
async def test_an_interrupted_run_loses_nothing_and_a_second_run_finishes(
    library, proxy, proxied_settings, s3_settings, s3_objects, bucket, interruption
):
    process = await start_cli(proxied_settings, "--batch-size", "2")
    interrupt = {
        "s3-cut": lambda: asyncio.ensure_future(proxy.cut()),
        "sigkill": process.kill,
        "ctrl-c": lambda: process.send_signal(signal.SIGINT),
    }[interruption]
    proxy.call_after(6 * MiB, interrupt)  # of 17 MiB
    code, out, err = await finish_cli(process)

    assert code == {"s3-cut": 1, "sigkill": -signal.SIGKILL, "ctrl-c": 130}[interruption], err
    if interruption == "ctrl-c":
        assert out.startswith("interrupted:")
    places = await assert_each_media_whole_in_one_place(s3_settings, s3_objects, bucket, library)
    assert StorageKind.LOCAL in places  # the interruption came before the end

    again = await migrate(s3_settings)

    assert again.failed == 0 and again.migrated >= 1
    assert await assert_each_media_whole_in_one_place(s3_settings, s3_objects, bucket, library) == {
        StorageKind.S3
    }
    assert await object_count(s3_objects, bucket) == len(FEW)
    assert await unfinished_uploads(s3_objects, bucket) == []


async def test_a_file_changing_while_it_is_read_is_reported_and_not_switched(
    local_api, proxy, proxied_settings, s3_settings, s3_objects, bucket
):
    library = await upload_all(local_api, [("alice", "clip.mp4", 20 * MiB), ("bob", "a.txt", 10)])
    clip = next(item for item in library.values() if item.filename == "clip.mp4")
    before = (await records(s3_settings))[clip.media_id]

    def edit_the_clip() -> None:
        with open(s3_settings.data_dir / clip.key, "r+b") as file:
            file.write(b"edited")

    proxy.call_after(MiB, edit_the_clip)  # while its first part is on the way
    summary = await migrate(proxied_settings, batch_size=1)

    assert (summary.migrated, summary.failed, summary.exit_code) == (1, 1, 1)
    assert summary.failures[0]["item"] == clip.key
    assert "changed while it was being read" in summary.failures[0]["error"]
    assert (await records(s3_settings))[clip.media_id] == before  # still local, untouched
    with pytest.raises(ClientError):
        await s3_objects.head_object(Bucket=bucket, Key=clip.key)
    assert await unfinished_uploads(s3_objects, bucket) == []


@pytest.fixture
def legacy_tree(tmp_path: Path) -> dict[str, bytes]:
    """A legacy upload folder: nested files, odd names, and symbolic links pointing out."""
    rng = random.Random(9)
    legacy, outside = tmp_path / "legacy", tmp_path / "outside"
    (legacy / "sub" / "deeper").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"SECRET" * 100)
    files = {
        "a.mp4": legacy / "a.mp4",
        "b c.webm": legacy / "sub" / "b c.webm",
        "badname.mp4": Path(
            os.fsdecode(os.fsencode(legacy / "sub" / "deeper") + b"/bad\xffname.mp4")
        ),
        "weirdname.mov": legacy / "weird\nname.mov",
    }
    contents = {name: rng.randbytes(rng.randrange(1, 100_000)) for name in files}
    for name, path in files.items():
        path.write_bytes(contents[name])
    (legacy / "link.mp4").symlink_to(outside / "secret.txt")
    (legacy / "sub" / "linkdir").symlink_to(outside, target_is_directory=True)
    return contents


async def test_legacy_files_are_imported_once_and_symbolic_links_never_followed(
    legacy_tree, tmp_path, start_api, s3_settings, s3_objects, bucket
):
    legacy = tmp_path / "legacy"
    summary = await migrate(s3_settings, source=legacy, user_id="old-system")

    assert (summary.imported, summary.skipped, summary.failed) == (4, 2, 0)
    assert {skip["reason"] for skip in summary.skips} == {"symbolic link (not followed)"}
    imported = {media.filename: media for media in (await records(s3_settings)).values()}
    assert set(imported) == set(legacy_tree)
    for name, media in imported.items():
        assert media.user_id == "old-system" and media.storage is StorageKind.S3
        assert media.key == f"media/old-system/{media.id}/{name}"
        assert await read_object(s3_objects, bucket, media.key) == legacy_tree[name]
    assert imported["b c.webm"].content_type == "video/webm"
    assert await object_count(s3_objects, bucket) == 4  # nothing of the secret behind the links

    again = await migrate(s3_settings, source=legacy, user_id="someone-else")
    assert (again.imported, again.skipped, again.failed) == (0, 6, 0)
    assert await object_count(s3_objects, bucket) == 4

    cleanup = await migrate(s3_settings, source=legacy, delete_local=True)
    assert (cleanup.local_copies_deleted, cleanup.failed) == (4, 0)
    assert sorted(p.name for p in legacy.rglob("*")) == ["deeper", "link.mp4", "linkdir", "sub"]
    assert (tmp_path / "outside" / "secret.txt").read_bytes() == b"SECRET" * 100

    server = (await start_api(s3_settings)).as_user("old-system")
    info = await (await server.info(imported["a.mp4"].id)).json()
    assert (info["storage"], info["filename"], info["size"]) == (
        "s3",
        "a.mp4",
        len(legacy_tree["a.mp4"]),
    )


class CountingS3:
    """Stands in for S3Store and records how many requests were in flight at once."""

    def __init__(self) -> None:
        self.in_flight = self.peak = 0
        self.sizes: dict[str, int] = {}

    async def _request(self, key: str, size: int) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0.05)
        self.in_flight -= 1
        self.sizes[key] = self.sizes.get(key, 0) + size

    async def put_object(self, target, body, *, content_md5: str) -> StoredObject:
        size = len(body.getbuffer())
        await self._request(target.key, size)
        return StoredObject(size=size, etag="e")

    async def abort_uploads(self, key: str) -> None:
        pass

    async def start_checked_upload(self, target) -> str:
        return "upload"

    async def put_checked_part(self, key, upload_id, *, number: int, body, content_md5: str) -> str:
        await self._request(key, len(body.getbuffer()))
        return f"e{number}"

    async def complete_checked_upload(self, key, upload_id, etags) -> StoredObject:
        return StoredObject(size=self.sizes[key], etag="e")


@pytest.mark.parametrize("batch_size", [1, 3])
async def test_requests_in_flight_never_exceed_the_batch_size(tmp_path, batch_size):
    catalog = await SQLiteCatalog.open(tmp_path / CATALOG_FILE)
    local = LocalStore(tmp_path)
    for number, size in enumerate([11 * MiB, 11 * MiB, *[1000] * 8]):
        media = Media(
            id=f"m{number}",
            user_id="u",
            filename="f",
            content_type="application/octet-stream",
            size=size,
            checksum=None,
            storage=StorageKind.LOCAL,
            key=f"media/u/m{number}/f",
            created_at=datetime.now(UTC),
        )
        local.path(media.key).parent.mkdir(parents=True)
        local.path(media.key).write_bytes(b"x" * size)
        assert await catalog.add_media(media)
    s3 = CountingS3()
    summary = Summary()
    options = Options(batch_size=batch_size)
    try:
        plan = await plan_migration(catalog, local, options)
        await Migrator(Stores(catalog, local, s3), options, Report(summary)).run(plan.jobs)
    finally:
        await catalog.close()
    assert summary.migrated == 10
    assert s3.peak == batch_size


async def test_move_media_is_a_compare_and_set(tmp_path):
    catalog = await SQLiteCatalog.open(tmp_path / CATALOG_FILE)
    media = Media(
        id="m",
        user_id="u",
        filename="f",
        content_type="text/plain",
        size=1,
        checksum=None,
        storage=StorageKind.LOCAL,
        key="media/u/m/f",
        created_at=datetime.now(UTC),
    )
    try:
        assert await catalog.add_media(media)
        assert not await catalog.add_media(media)
        move = {"source": StorageKind.LOCAL, "target": StorageKind.S3, "checksum": "sha256:ab"}
        assert await catalog.move_media("m", **move)
        assert not await catalog.move_media("m", **move)  # a second migrator loses
        assert (await catalog.get_media("m")).checksum == "sha256:ab"
        await catalog.delete_media("m")
        assert not await catalog.move_media("m", **move)  # deleted meanwhile: nothing revived
        assert await catalog.get_media("m") is None
    finally:
        await catalog.close()


def configure_cli(tmp_path: Path, monkeypatch, **overrides: str) -> None:
    """A data directory with an (empty) catalog, and settings pointing at a closed port."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / CATALOG_FILE).touch()
    environment = {
        "MEDIAGATE_DATA_DIR": "data",
        "USE_CLOUD_STORAGE": "true",
        "AWS_S3_BUCKET_NAME": "some-bucket",
        "AWS_S3_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens there
        "MEDIAGATE_S3_MAX_ATTEMPTS": "1",
        **overrides,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    ("arguments", "environment", "message"),
    [
        ([], {"USE_CLOUD_STORAGE": "false"}, "set USE_CLOUD_STORAGE=true"),
        (["--user-id", "../etc"], {}, "not a valid user id"),
        (["--source", "/no/such/folder"], {}, "not a directory"),
        (["--source", "data"], {}, "overlaps the data directory"),
        (["--verify", "m", "--dry-run"], {}, "--verify checks one media"),
        (["--verify", "no-such-media"], {}, "there is no media no-such-media"),
        ([], {"MEDIAGATE_DATA_DIR": "elsewhere"}, "there is no catalog"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    tmp_path, monkeypatch, capsys, arguments, environment, message
):
    configure_cli(tmp_path, monkeypatch, **environment)

    assert main(["migrate", *arguments]) == 2

    err = capsys.readouterr().err
    assert err.startswith("mediagate migrate: ") and message in err
    assert err.count("\n") == 1


def test_s3_unreachable_at_the_start_fails_in_one_line_and_moves_nothing(
    tmp_path, monkeypatch, capsys
):
    configure_cli(tmp_path, monkeypatch)

    assert main(["migrate"]) == 1

    err = capsys.readouterr().err
    assert "mediagate migrate: S3 cannot be used (unreachable)" in err
    assert "Traceback" not in err


def test_a_dry_run_with_s3_unreachable_fails_in_one_line(tmp_path, monkeypatch):
    """Before: it printed a plan and exited 0, though a run would move nothing.
    (A process of its own: the CLI configures logging for the whole process.)"""
    configure_cli(tmp_path, monkeypatch)

    answer = subprocess.run(
        [sys.executable, "-m", "mediagate", "migrate", "--dry-run"],
        env={**os.environ, "PYTHONPATH": str(Path(mediagate.__file__).parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert answer.returncode == 1, answer.stdout
    assert "mediagate migrate: S3 cannot be used (unreachable)" in answer.stderr
    assert "Traceback" not in answer.stderr


@only_on_rgw
@pytest.mark.parametrize(
    ("key", "secret"),
    [("no-such-key", "whatever"), (S3_ACCESS_KEY, "not-the-secret")],
    ids=["unknown-key", "wrong-secret"],
)
async def test_a_dry_run_with_wrong_keys_fails_in_one_line(
    s3_settings, s3_objects, bucket, key, secret
):
    """Before: exit 0 and a plan. moto takes any keys, so the RGW tier shows it."""
    (s3_settings.data_dir).mkdir(parents=True)
    (s3_settings.data_dir / CATALOG_FILE).touch()
    await s3_objects.create_bucket(Bucket=bucket)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mediagate",
        "migrate",
        "--dry-run",
        env={**cli_env(s3_settings), "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret},
        cwd=s3_settings.data_dir.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    code, out, err = await finish_cli(process)

    assert code == 1, out
    assert "mediagate migrate: S3 cannot be used (invalid_credentials)" in err
    assert "Traceback" not in err


async def test_a_dry_run_with_no_bucket_yet_plans_and_creates_nothing(
    s3_settings, s3_objects, bucket
):
    """A missing bucket is no failure: the real run creates it."""
    (s3_settings.data_dir).mkdir(parents=True)
    (s3_settings.data_dir / CATALOG_FILE).touch()

    code, out, err = await run_cli(s3_settings, "--dry-run", "--json")

    assert code == 0, err
    assert json.loads(out)["files"] == 0
    with pytest.raises(ClientError):
        await s3_objects.head_bucket(Bucket=bucket)


@pytest.mark.parametrize("arguments", [["--batch-size", "0"], ["--batch-size", "many"]])
def test_a_bad_batch_size_is_refused_by_the_parser(capsys, arguments):
    with pytest.raises(SystemExit) as stopped:
        main(["migrate", *arguments])
    assert stopped.value.code == 2
    assert "--batch-size: must be a whole number of at least 1" in capsys.readouterr().err


def test_python_dash_m_mediagate_migrate_is_the_same_command():
    answer = subprocess.run(
        [sys.executable, "-m", "mediagate.migrate", "--help"],
        env={**os.environ, "PYTHONPATH": str(Path(mediagate.__file__).parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert answer.returncode == 0
    assert answer.stdout.startswith("usage: mediagate migrate")


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["migrate", "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--dry-run",
        "--batch-size",
        "--delete-local",
        "--verify",
        "--user-id",
        "--source",
        "--json",
    ):
        assert option in out
    assert "exit status" in out


def sent_body(request) -> bytes:
    body = request.body
    return bytes(body.getvalue() if hasattr(body, "getvalue") else body)


def md5_of(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


@pytest.mark.transport
async def test_every_request_carries_the_md5_of_the_bytes_it_sends(s3_settings, s3_objects, bucket):
    """Content-MD5, which AWS, RGW and MinIO check (moto does not): it must be there
    and right."""
    seen: list[tuple[str, bytes]] = []

    def capture(request, **_):
        if request.method == "PUT":
            seen.append((request.headers.get("Content-MD5", b"missing"), sent_body(request)))

    root = s3_settings.data_dir
    root.mkdir(parents=True, exist_ok=True)
    await s3_objects.create_bucket(Bucket=bucket)
    sizes = {"small": 1000, "large": 10 * MiB + 5}
    for name, size in sizes.items():
        (root / name).write_bytes(random.Random(size).randbytes(size))
    async with S3Store.connect(s3_settings) as s3:
        s3._stream.meta.events.register("before-send.s3", capture)
        uploader = Uploader(s3, part_size=5 * MiB, in_flight=2, on_sent=lambda _: None)
        for name, size in sizes.items():
            target = NewObject(key=name, content_type="x/y", owner="u", filename=name)
            uploaded = await uploader.upload(root / name, root, target, Expected(size=size))
            assert uploaded.size == size
        # A retry sends the same body again, whole, from its start.
        body = io.BytesIO(b"again" * 100)
        target = NewObject(key="again", content_type="x/y", owner="u", filename="again")
        for _ in range(2):
            stored = await s3.put_object(target, body, content_md5=md5_base64(b"again" * 100))
            assert stored.size == 500
    assert await read_object(s3_objects, bucket, "again") == b"again" * 100
    del seen[-2:]
    assert len(seen) == 1 + 3  # one PutObject, three parts
    for header, data in seen:
        header = header.decode() if isinstance(header, bytes) else header
        assert header == md5_of(data)


@only_on_rgw
@pytest.mark.parametrize("size", [1000, 10 * MiB + 5], ids=["whole", "multipart"])
async def test_bytes_damaged_on_the_way_are_refused_by_s3_and_nothing_appears(
    s3_settings, s3_objects, bucket, size
):
    """Before: the CRC32 header went unchecked by RGW 16 (and moto), and the damaged
    bytes were stored. One byte of each request body is flipped after its checksum
    was taken, as a bad NIC or proxy would."""

    def damage(request, **_):
        if request.method == "PUT" and (data := sent_body(request)):
            flipped = bytes([data[0] ^ 0xFF]) + data[1:]
            request.body = io.BytesIO(flipped)

    root = s3_settings.data_dir
    root.mkdir(parents=True, exist_ok=True)
    await s3_objects.create_bucket(Bucket=bucket)
    (root / "file").write_bytes(random.Random(size).randbytes(size))
    async with S3Store.connect(s3_settings) as s3:
        s3._stream.meta.events.register("before-send.s3", damage)
        uploader = Uploader(s3, part_size=5 * MiB, in_flight=2, on_sent=lambda _: None)
        target = NewObject(key="file", content_type="x/y", owner="u", filename="file")
        with pytest.raises(StorageRejected, match="BadDigest"):
            await uploader.upload(root / "file", root, target, Expected(size=size))
    assert await object_count(s3_objects, bucket) == 0
    assert await unfinished_uploads(s3_objects, bucket) == []
