"""tus 1.0 at /api/v1/tus: the protocol as a table of requests (tusd's test shape), then
real clients (tuspy) through to the media API."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import random
import re
import signal
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import boto3
import pytest

from mediagate import tokens
from mediagate.config import S3_MAX_OBJECT_SIZE, Settings
from mediagate.core.tus import CHECKSUM_ALGORITHMS
from mediagate.errors import (
    BadRequest,
    ChecksumAlgorithmUnsupported,
    ChecksumMismatch,
    Problem,
)
from mediagate.web.api import document
from mediagate.web.app import create_app
from mediagate.web.keys import SERVICES
from mediagate.web.tus_headers import (
    media_name,
    parse_checksum,
    parse_concat,
    parse_metadata,
    parse_number,
    refuse_checksum_trailer,
)
from support.api import (
    CATALOGS,
    TOKEN_LIFETIME,
    Api,
    ApiFactory,
    MiB,
    database_url_for,
    make_settings,
)
from support.raw_http import RawConnection, request_head
from support.server_process import ServerProcess
from support.tcp_proxy import CuttableProxy
from support.tier import tier_s3_env
from support.tus import OCTETS, TUS, create_upload, fetch_media, offset_of, patch, stall_patch

pytestmark = pytest.mark.store

ANY = object()  # the header must be present, whatever its value
ABSENT = object()


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {b64(hashlib.new(algorithm, data).digest())}"


# --- headers, pure ---------------------------------------------------------

METADATA_CASES = [
    (None, {}),
    ("", {}),
    (f"filename {b64('a.mp4')}", {"filename": "a.mp4"}),
    (f"filename {b64('a.mp4')},is_confidential", {"filename": "a.mp4", "is_confidential": ""}),
    (f"name {b64('ü.txt')} , type {b64('text/plain')}", {"name": "ü.txt", "type": "text/plain"}),
]


@pytest.mark.parametrize(("header", "parsed"), METADATA_CASES)
def test_metadata_is_parsed(header: str | None, parsed: dict[str, str]) -> None:
    assert parse_metadata(header) == parsed


@pytest.mark.parametrize(
    "header", ["filename not-base64!", f"a {b64('x')},a {b64('y')}", f",filename {b64('x')}"]
)
def test_bad_metadata_is_400(header: str) -> None:
    with pytest.raises(BadRequest):
        parse_metadata(header)


@pytest.mark.parametrize(
    "header",
    [
        *(case for case, _ in METADATA_CASES[1:]),
        "filename not-base64!",
        f",filename {b64('x')}",
        "filename YQ",  # unpadded
        "filename YQ==YQ==",  # padding inside
        "file,name",
        f"filename\t{b64('x')}",
        f"  filename   {b64('x')}  ",
    ],
)
def test_the_documented_metadata_grammar_is_the_parsers(header: str) -> None:
    """The OpenAPI pattern and the parser share one grammar (web/tus_headers.py): what
    the pattern refuses is a 400, what it takes parses (keys distinct aside)."""
    operation = document(10)["paths"]["/api/v1/tus"]["post"]
    [pattern] = [
        parameter["schema"]["pattern"]
        for parameter in operation["parameters"]
        if parameter["name"] == "Upload-Metadata"
    ]
    try:
        parse_metadata(header)
    except BadRequest:
        parsed = False
    else:
        parsed = True
    assert parsed == bool(re.search(pattern, header)), header


@pytest.mark.parametrize(
    ("metadata", "name", "content_type"),
    [
        ({"filename": "clip.mp4", "filetype": "video/mp4"}, "clip.mp4", "video/mp4"),
        ({"name": "clip.mov", "type": "video/quicktime"}, "clip.mov", "video/quicktime"),
        ({"filename": "clip.mp4"}, "clip.mp4", "video/mp4"),
        ({"filename": "a.bin", "filetype": "not a type"}, "a.bin", "application/octet-stream"),
        ({}, "", "application/octet-stream"),  # named from its id, by core/tus.py
    ],
)
def test_media_name_from_metadata(metadata: dict[str, str], name: str, content_type: str) -> None:
    assert media_name(metadata) == (name, content_type)


@pytest.mark.parametrize("value", ["-1", "1.5", "", "12345678901234567890123", "٣"])
def test_bad_numbers_are_400(value: str) -> None:
    with pytest.raises(BadRequest):
        parse_number("Upload-Length", value)


@pytest.mark.parametrize("value", ["crc32 AAAAAA==", "sha1 not-base64", "sha1", "sha1 "])
def test_bad_checksums_are_400(value: str) -> None:
    with pytest.raises(Problem) as raised:
        parse_checksum(value)
    assert raised.value.status == 400


def test_the_unsupported_checksum_answer_names_the_offered_algorithms() -> None:
    offered = ChecksumAlgorithmUnsupported.headers["Tus-Checksum-Algorithm"]
    assert offered == ",".join(CHECKSUM_ALGORITHMS)


@pytest.mark.parametrize(
    "value",
    [
        f"sha1 {b64(b'short')}",
        f"md5 {b64(hashlib.sha1(b'x').digest())}",
        f"sha256 {b64(hashlib.md5(b'x').digest())}",
    ],
)
def test_a_digest_of_the_wrong_length_is_a_mismatch(value: str) -> None:
    # "If the hash does not match, the Server MUST respond with 460": no body can.
    with pytest.raises(ChecksumMismatch):
        parse_checksum(value)


@pytest.mark.parametrize(
    "value", ["final;/api/v1/tus/é", "final;/api/v1/tus/a\u00a0/api/v1/tus/b", "partial\x7f"]
)
def test_an_upload_concat_that_is_not_ascii_is_400(value: str) -> None:
    # HEAD echoes the header as received: it must be one a response can carry.
    with pytest.raises(BadRequest):
        parse_concat(value)


@pytest.mark.parametrize(
    ("trailer", "refused"),
    [
        (None, False),
        ("", False),
        ("Expires", False),
        ("Upload-Checksum", True),
        ("upload-checksum", True),
        ("Expires, Upload-Checksum ", True),
        ("Upload-Checksums", False),
    ],
)
def test_a_body_announcing_an_upload_checksum_trailer_is_refused(
    trailer: str | None, refused: bool
) -> None:
    if refused:
        with pytest.raises(BadRequest):
            refuse_checksum_trailer(trailer)
    else:
        refuse_checksum_trailer(trailer)


# --- the protocol, as a table ------------------------------------------------


@dataclass
class Case:
    name: str
    method: str
    # "/api/v1/tus" or an upload made for the case: {fresh} (11 bytes, none sent),
    # {half} (5 of 11 sent), {done}, {gone} (terminated), {foreign} (bob's),
    # {unknown}, {deferred} (Upload-Defer-Length, none sent).
    path: str
    headers: dict[str, str | None] = field(default_factory=dict)  # None removes a default
    body: bytes = b""
    status: int = 204
    expect: dict[str, Any] = field(default_factory=dict)
    offset_after: int | None = None  # HEAD's Upload-Offset once the request is done
    answer_body: bytes | None = None

    def __str__(self) -> str:
        return self.name


HELLO = b"hello world"
META = f"filename {b64('hello.txt')},filetype {b64('text/plain')}"

# Cases that are a sentence of the tus document are in tests/test_tus_spec.py, quoted.
CASES = [
    # OPTIONS: discovery, no Tus-Resumable needed or sent.
    Case(
        "options",
        "OPTIONS",
        "/api/v1/tus",
        headers={"Tus-Resumable": None, "Authorization": None},
        expect={
            "Tus-Version": "1.0.0",
            "Tus-Extension": "creation,creation-with-upload,creation-defer-length,"
            "termination,expiration,checksum,concatenation,concatenation-unfinished",
            "Tus-Max-Size": str(S3_MAX_OBJECT_SIZE),
            "Tus-Checksum-Algorithm": "sha1,md5,sha256",
            "Tus-Resumable": ABSENT,
        },
    ),
    Case(
        "options on an upload",
        "OPTIONS",
        "{fresh}",
        headers={"Authorization": None},
        expect={"Tus-Version": "1.0.0"},
    ),
    # Creation.
    Case(
        "create",
        "POST",
        "/api/v1/tus",
        headers={"Upload-Length": "11", "Upload-Metadata": META},
        status=201,
        expect={
            "Location": ANY,
            "Upload-Offset": "0",
            "Upload-Expires": ANY,
            "Tus-Resumable": "1.0.0",
        },
    ),
    Case(
        "create without a token",
        "POST",
        "/api/v1/tus",
        headers={"Upload-Length": "11", "Authorization": None},
        status=401,
        expect={"Tus-Resumable": "1.0.0", "Content-Type": "application/problem+json"},
    ),
    Case(
        "create deferred",
        "POST",
        "/api/v1/tus",
        headers={"Upload-Defer-Length": "1"},
        status=201,
        expect={"Upload-Offset": "0"},
    ),
    # HEAD.
    Case(
        "head",
        "HEAD",
        "{half}",
        status=200,
        expect={
            "Upload-Offset": "5",
            "Upload-Length": "11",
            "Upload-Metadata": META,
            "Cache-Control": "no-store",
            "Tus-Resumable": "1.0.0",
            "Upload-Expires": ANY,
            "Upload-Media-Id": ABSENT,
        },
    ),
    Case(
        "head done: it names its media",
        "HEAD",
        "{done}",
        status=200,
        expect={
            "Upload-Offset": "11",
            "Upload-Length": "11",
            "Upload-Media-Id": ANY,
            "Link": ANY,
        },
    ),
    Case("head another user's", "HEAD", "{foreign}", status=404),
    # PATCH.
    Case(
        "patch to the end",
        "PATCH",
        "{half}",
        headers={"Upload-Offset": "5", **OCTETS},
        body=b" world",
        expect={"Upload-Offset": "11", "Upload-Expires": ABSENT, "Upload-Media-Id": ANY},
        offset_after=11,
    ),
    Case(
        # "If the offsets do not match, the Server MUST respond with the 409 Conflict status
        # code" - and with the offset, so that the client resumes without a HEAD.
        "patch at a wrong offset",
        "PATCH",
        "{half}",
        headers={"Upload-Offset": "4", **OCTETS},
        body=b"o wor",
        status=409,
        expect={"Upload-Offset": "5", "Tus-Resumable": "1.0.0"},
        offset_after=5,
    ),
    Case(
        "patch without Upload-Offset",
        "PATCH",
        "{half}",
        headers=OCTETS,
        body=b" wor",
        status=400,
        offset_after=5,
    ),
    Case(
        "patch past the length",
        "PATCH",
        "{half}",
        headers={"Upload-Offset": "5", **OCTETS},
        body=b" world and more",
        status=413,
        offset_after=5,
    ),
    Case(
        "patch with a good sha1",
        "PATCH",
        "{half}",
        headers={"Upload-Offset": "5", "Upload-Checksum": checksum("sha1", b" wor"), **OCTETS},
        body=b" wor",
        offset_after=9,
    ),
    Case(
        "patch with a wrong md5",
        "PATCH",
        "{half}",
        headers={"Upload-Offset": "5", "Upload-Checksum": checksum("md5", b"other"), **OCTETS},
        body=b" wor",
        status=460,
        offset_after=5,
    ),
    Case(
        # A valid base64 value that no sha1 has: the body cannot match it.
        "patch with a sha1 of the wrong length: 460, nothing kept",
        "PATCH",
        "{half}",
        headers={"Upload-Offset": "5", "Upload-Checksum": f"sha1 {b64(b'short')}", **OCTETS},
        body=b" wor",
        status=460,
        expect={"Content-Type": "application/problem+json"},
        offset_after=5,
    ),
    Case(
        "patch with a good sha256",
        "PATCH",
        "{half}",
        headers={"Upload-Offset": "5", "Upload-Checksum": checksum("sha256", b" wor"), **OCTETS},
        body=b" wor",
        offset_after=9,
    ),
    Case(
        "patch with an unknown checksum algorithm",
        "PATCH",
        "{half}",
        headers={"Upload-Offset": "5", "Upload-Checksum": "crc32 AAAAAA==", **OCTETS},
        body=b" wor",
        status=400,
        expect={"Tus-Checksum-Algorithm": "sha1,md5,sha256"},
        offset_after=5,
    ),
    Case(
        "patch a done upload with nothing",
        "PATCH",
        "{done}",
        headers={"Upload-Offset": "11", **OCTETS},
        expect={"Upload-Offset": "11"},
    ),
    Case(
        "patch a done upload with more",
        "PATCH",
        "{done}",
        headers={"Upload-Offset": "11", **OCTETS},
        body=b"!",
        status=413,
    ),
    Case(
        "patch another user's",
        "PATCH",
        "{foreign}",
        headers={"Upload-Offset": "0", **OCTETS},
        body=b"x",
        status=404,
    ),
    Case("delete another user's", "DELETE", "{foreign}", status=404),
    # GET is not tus: the finished upload's file, as tusd serves it (no Tus-Resumable).
    Case(
        "get a done upload: its file",
        "GET",
        "{done}",
        headers={"Tus-Resumable": None},
        status=200,
        expect={"Content-Disposition": ANY, "ETag": ANY, "Tus-Resumable": ABSENT},
        answer_body=HELLO,
    ),
    Case(
        "get a range of a done upload",
        "GET",
        "{done}",
        headers={"Tus-Resumable": None, "Range": "bytes=6-"},
        status=206,
        expect={"Content-Range": "bytes 6-10/11"},
        answer_body=b"world",
    ),
    Case(
        "get an unfinished upload",
        "GET",
        "{half}",
        status=409,
        expect={"Content-Type": "application/problem+json"},
        offset_after=5,
    ),
    Case("get without a token", "GET", "{done}", headers={"Authorization": None}, status=401),
    Case("get another user's", "GET", "{foreign}", status=404),
    Case("put is not tus", "PUT", "{half}", status=405, expect={"Allow": ANY}),
]


async def prepare(api: Api, path: str) -> str:
    if not path.startswith("{"):
        return path
    kind = path.strip("{}")
    if kind == "unknown":
        return f"/api/v1/tus/{uuid.uuid4()}"
    owner = api.as_user("bob") if kind == "foreign" else api
    if kind == "deferred":
        answer = await owner.client.post(
            "/api/v1/tus", headers={**owner.headers, **TUS, "Upload-Defer-Length": "1"}
        )
        return answer.headers["Location"].split(str(api.client.make_url("")))[-1]
    upload = await create_upload(owner, **{"Upload-Metadata": META})
    if kind == "half":
        assert (await patch(api, upload, 0, HELLO[:5])).status == 204
    if kind == "done":
        assert (await patch(api, upload, 0, HELLO)).status == 204
    if kind == "gone":
        answer = await api.client.delete(f"/api/v1/tus/{upload}", headers={**api.headers, **TUS})
        assert answer.status == 204
    return f"/api/v1/tus/{upload}"


async def test_protocol_table(local_api: Api) -> None:
    for case in CASES:
        path = await prepare(local_api, case.path)
        headers = {**local_api.headers, **TUS, **case.headers}
        sent = {name: value for name, value in headers.items() if value is not None}
        answer = await local_api.client.request(case.method, path, headers=sent, data=case.body)
        assert answer.status == case.status, (case.name, await answer.text())
        for name, expected in case.expect.items():
            got = answer.headers.get(name)
            if expected is ANY:
                assert got, (case.name, name)
            elif expected is ABSENT:
                assert got is None, (case.name, name, got)
            else:
                assert got == expected, (case.name, name, got)
        if case.offset_after is not None:
            assert await offset_of(local_api, path.rsplit("/", 1)[-1]) == case.offset_after, case
        if case.answer_body is not None:
            assert await answer.read() == case.answer_body, case.name


async def test_location_follows_public_url_or_the_host(
    start_api: ApiFactory, tmp_path: Path
) -> None:
    api = await start_api(make_settings(tmp_path / "a", public_url="https://media.example/"))
    answer = await api.client.post(
        "/api/v1/tus", headers={**api.headers, **TUS, "Upload-Length": "1"}
    )
    assert answer.headers["Location"].startswith("https://media.example/api/v1/tus/")
    plain = await start_api(make_settings(tmp_path / "b"))
    answer = await plain.client.post(
        "/api/v1/tus",
        headers={**plain.headers, **TUS, "Upload-Length": "1", "Host": "media.example:8443"},
    )
    assert answer.status == 201
    assert answer.headers["Location"].startswith("http://media.example:8443/api/v1/tus/")
    refused = await plain.client.post(
        "/api/v1/tus",
        headers={**plain.headers, **TUS, "Upload-Length": "1", "Host": "bad host/\\x"},
    )
    assert refused.status == 400  # as on every path: no link can be built on it


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Type": "application/octet-stream"}, 415),
        ({"Content-Type": "text/plain"}, 415),
        ({**OCTETS, "Upload-Checksum": f"sha1 {b64(b'short')}"}, 460),
    ],
)
async def test_a_creation_refused_for_its_body_creates_nothing(
    local_api: Api, headers: dict[str, str], status: int
) -> None:
    answer = await local_api.client.post(
        "/api/v1/tus",
        headers={**local_api.headers, **TUS, "Upload-Length": "11", **headers},
        data=b"hello",
    )
    assert answer.status == status, await answer.text()
    assert answer.content_type == "application/problem+json"
    assert "Location" not in answer.headers
    assert await local_api.client.app[SERVICES].catalog.count_open_sessions("alice") == 0


async def test_an_expired_upload_is_410_then_swept(aiohttp_client: Any, tmp_path: Path) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    settings = make_settings(tmp_path / "data")
    app = create_app(settings, clock=lambda: now[0])
    api = Api(await aiohttp_client(app), settings)
    upload = await create_upload(api)
    assert (await patch(api, upload, 0, b"hel")).status == 204
    staging = tmp_path / "data" / ".staging"
    assert [path for path in staging.iterdir() if path.is_file()]
    now[0] += timedelta(days=2)
    head = await api.client.head(f"/api/v1/tus/{upload}", headers={**api.headers, **TUS})
    assert head.status == 410
    assert (await patch(api, upload, 3, b"lo")).status == 410
    assert await app[SERVICES].engine.expire_sessions() == 1
    assert not [path for path in staging.iterdir() if path.is_file()]


def named(filename: str) -> dict[str, str]:
    return {"Upload-Metadata": f"filename {b64(filename)}"}


@pytest.fixture(params=["local", "s3"])
def store_settings(request: pytest.FixtureRequest) -> Settings:
    return request.getfixturevalue(f"{request.param}_settings")


@pytest.fixture
async def store_api(start_api: ApiFactory, store_settings: Settings) -> Api:
    return await start_api(store_settings)


async def test_parts_cut_at_any_offset_come_back_byte_for_byte(store_api: Api) -> None:
    api = store_api
    store = "s3" if api.settings.use_cloud_storage else "local"
    data = bytes(range(256)) * (12 * MiB // 256) + b"tail"
    name = f"cut-{store}.bin"
    upload = await create_upload(
        api, len(data), **{"Upload-Metadata": f"filename {b64(name)},filetype {b64('video/mp4')}"}
    )
    # Across part boundaries (8 MiB parts): short, spanning, exactly to a boundary, the rest.
    cuts = [0, 3, 5 * MiB, 8 * MiB, 8 * MiB + 1, 11 * MiB, len(data)]
    for start, end in itertools.pairwise(cuts):
        answer = await patch(api, upload, start, data[start:end])
        assert answer.status == 204, await answer.text()
        assert int(answer.headers["Upload-Offset"]) == end
    info, body = await fetch_media(api, name)
    assert info["filename"] == name
    assert info["content_type"] == "video/mp4"
    assert info["storage"] == store
    assert info["size"] == len(data)
    assert body == data


async def test_a_wrong_checksum_across_parts_keeps_nothing(local_api: Api) -> None:
    data = bytes(range(256)) * (20 * MiB // 256)
    upload = await create_upload(local_api, len(data), **named("checked.bin"))
    assert (await patch(local_api, upload, 0, data[: 3 * MiB])).status == 204
    bad = checksum("sha1", b"not the body")
    answer = await patch(
        local_api, upload, 3 * MiB, data[3 * MiB : 19 * MiB], **{"Upload-Checksum": bad}
    )
    assert answer.status == 460
    assert await offset_of(local_api, upload) == 3 * MiB
    good = checksum("sha1", data[3 * MiB :])
    answer = await patch(local_api, upload, 3 * MiB, data[3 * MiB :], **{"Upload-Checksum": good})
    assert answer.status == 204
    _, body = await fetch_media(local_api, "checked.bin")
    assert body == data


async def test_a_chunked_body_of_unknown_length(local_api: Api) -> None:
    data = bytes(range(256)) * (10 * MiB // 256)
    upload = await create_upload(local_api, len(data), **named("chunked.bin"))

    async def pieces() -> Any:
        for start in range(0, len(data), MiB):
            yield data[start : start + MiB]

    answer = await local_api.client.patch(
        f"/api/v1/tus/{upload}",
        data=pieces(),
        headers={**local_api.headers, **TUS, **OCTETS, "Upload-Offset": "0"},
    )
    assert answer.status == 204, await answer.text()
    _, body = await fetch_media(local_api, "chunked.bin")
    assert body == data


def chunked_with_trailer(data: bytes, trailer: str) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + f"\r\n0\r\n{trailer}\r\n\r\n".encode()


@pytest.mark.parametrize("method", ["PATCH", "POST"])
async def test_a_checksum_trailer_is_refused_and_nothing_kept(local_api: Api, method: str) -> None:
    # aiohttp's parsers drop a chunked body's trailers: an Upload-Checksum sent there
    # could never be checked, so a body announcing one is 400 before a byte counts.
    upload = await create_upload(local_api, 11, **named("trailer.bin"))
    assert (await patch(local_api, upload, 0, b"hello")).status == 204
    path, headers = f"/api/v1/tus/{upload}", {"Upload-Offset": "5"}
    if method == "POST":
        path, headers = "/api/v1/tus", {"Upload-Length": "6"}
    for digest in (checksum("sha1", b" world"), checksum("sha1", b"not it")):
        connection = await RawConnection.open(local_api.client)
        try:
            head = request_head(
                method,
                path,
                {
                    **local_api.headers,
                    **TUS,
                    **OCTETS,
                    **headers,
                    "Transfer-Encoding": "chunked",
                    "Trailer": "Upload-Checksum",
                },
            )
            await connection.send(
                head + chunked_with_trailer(b" world", f"Upload-Checksum: {digest}")
            )
            status, problem = await connection.answer()
        finally:
            connection.close()
        assert status == 400, problem
        assert problem is not None and "trailer" in problem["detail"]
    assert await offset_of(local_api, upload) == 5
    listed = await local_api.client.get("/api/v1/media", headers=local_api.headers)
    assert [item["filename"] for item in (await listed.json())["items"]] == []


# --- a real client: tuspy (sync, so it runs in a thread beside the server) ---


def tus_client(api: Api) -> Any:
    from tusclient.client import TusClient

    return TusClient(str(api.client.make_url("/api/v1/tus")), headers=api.headers)


def file_of(tmp_path: Path, name: str, size: int) -> tuple[Path, bytes]:
    data = random.Random(size).randbytes(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize(
    ("size", "chunk_size", "checked"),
    [
        (1, None, False),
        (0, None, False),
        (7 * MiB, MiB, False),
        (23 * MiB, None, False),
        (9 * MiB + 5, 2 * MiB, True),
    ],
    ids=["1-byte", "0-byte", "7MiB-in-1MiB-patches", "23MiB-in-one-patch", "sha1-checked"],
)
async def test_tuspy_uploads_come_back_byte_for_byte(
    store_api: Api, tmp_path: Path, size: int, chunk_size: int | None, checked: bool
) -> None:
    name = f"tuspy-{size}.mp4"
    path, data = file_of(tmp_path, name, size)
    uploader = tus_client(store_api).uploader(
        str(path),
        chunk_size=chunk_size or sys.maxsize,
        metadata={"filename": name, "filetype": "video/mp4"},
        upload_checksum=checked,
    )
    await asyncio.to_thread(uploader.upload)
    info, body = await fetch_media(store_api, name)
    assert (info["size"], info["content_type"]) == (size, "video/mp4")
    assert info["storage"] == ("s3" if store_api.settings.use_cloud_storage else "local")
    assert body == data


async def test_tuspy_finds_its_media_and_the_upload_url_serves_the_file(
    store_api: Api, tmp_path: Path
) -> None:
    """Issue 16 item 5: the last PATCH names the media, and GET on the upload URL serves
    the file as the stream endpoint does (a 302 to S3, followed here)."""
    api = store_api
    path, data = file_of(tmp_path, "found.mp4", 6 * MiB + 3)
    uploader = tus_client(api).uploader(
        str(path), chunk_size=2 * MiB, metadata={"filename": "found.mp4"}
    )
    await asyncio.to_thread(uploader.upload)
    media_id = uploader.request.response_headers["upload-media-id"]
    info = await (await api.info(media_id)).json()
    assert (info["filename"], info["size"]) == ("found.mp4", len(data))

    async def got(**headers: str) -> tuple[int, bytes]:
        answer = await api.client.session.get(
            uploader.url, headers={**api.headers, **headers}, allow_redirects=False
        )
        if answer.status == 302:  # S3: to a presigned GET, which takes no token
            assert api.settings.use_cloud_storage
            answer = await api.client.session.get(answer.headers["Location"], headers=headers)
        return answer.status, await answer.read()

    assert await got() == (200, data)
    assert await got(Range="bytes=5-9") == (206, data[5:10])
    streamed = await api.client.get(f"/api/v1/media/stream/{media_id}", headers=api.headers)
    assert await streamed.read() == data


async def test_a_finished_upload_names_its_media_everywhere(local_api: Api) -> None:
    api = local_api
    tus_headers = {**api.headers, **TUS}
    upload = await create_upload(api, 11, **named("named.txt"))
    assert (await (await api.status(upload)).json())["media_id"] is None
    half = await patch(api, upload, 0, HELLO[:5])
    assert "Upload-Media-Id" not in half.headers and "Link" not in half.headers
    done = await patch(api, upload, 5, HELLO[5:])
    media_id = done.headers["Upload-Media-Id"]
    head = await api.client.head(f"/api/v1/tus/{upload}", headers=tus_headers)
    assert head.headers["Upload-Media-Id"] == media_id
    assert head.headers["Link"] == done.headers["Link"]
    target, _, relation = done.headers["Link"].partition(">; ")
    assert relation == 'rel="describedby"'
    info = await api.client.session.get(target.removeprefix("<"), headers=api.headers)
    assert (await info.json())["media_id"] == media_id
    assert (await (await api.status(upload)).json())["media_id"] == media_id
    # A creation-with-upload that completes the upload names it at once.
    made = await api.client.post(
        "/api/v1/tus",
        headers={**tus_headers, **OCTETS, "Upload-Length": "11", **named("made.txt")},
        data=HELLO,
    )
    assert made.status == 201
    assert (await api.info(made.headers["Upload-Media-Id"])).status == 200


async def test_a_page_on_another_origin_reads_the_media_id_and_gets_the_file(
    start_api: ApiFactory, local_settings: Settings
) -> None:
    page = "https://app.example"
    api = await start_api(local_settings.model_copy(update={"cors_origins": [page]}))
    upload = await create_upload(api, 11)
    done = await patch(api, upload, 0, HELLO, Origin=page)
    exposed = {
        item.strip().lower() for item in done.headers["Access-Control-Expose-Headers"].split(",")
    }
    assert {"upload-media-id", "link"} <= exposed
    preflight = await api.client.options(
        f"/api/v1/tus/{upload}",
        headers={
            "Origin": page,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, range",
        },
    )
    assert preflight.status == 204
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]
    got = await api.client.get(f"/api/v1/tus/{upload}", headers={**api.headers, "Origin": page})
    assert got.headers["Access-Control-Allow-Origin"] == page
    assert await got.read() == HELLO


MP4_HEAD = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"


@pytest.mark.parametrize(
    ("head", "filetype", "extension", "content_type"),
    [
        (MP4_HEAD, None, ".mp4", "video/mp4"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", None, ".png", "image/png"),
        (b"just some words", None, "", "application/octet-stream"),
        (MP4_HEAD, "video/x-special", ".mp4", "video/x-special"),  # a declared type stays
    ],
    ids=["mp4", "png", "unknown", "declared-type"],
)
async def test_an_upload_without_a_filename_is_named_from_its_id_and_its_bytes(
    store_api: Api, head: bytes, filetype: str | None, extension: str, content_type: str
) -> None:
    api = store_api
    data = head + bytes(range(256)) * 4
    metadata = {"Upload-Metadata": f"filetype {b64(filetype)}"} if filetype else {}
    upload = await create_upload(api, len(data), **metadata)
    assert (await patch(api, upload, 0, data[:100])).status == 204
    done = await patch(api, upload, 100, data[100:])
    info = await (await api.info(done.headers["Upload-Media-Id"])).json()
    assert (info["filename"], info["content_type"]) == (upload + extension, content_type)
    got = await api.client.get(f"/api/v1/tus/{upload}", headers=api.headers, allow_redirects=False)
    if got.status == 302:  # S3: the key stays as chosen at creation, the download is named
        settings = api.settings
        s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name="us-east-1")
        (stored,) = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix="media/alice/")["Contents"]
        assert stored["Key"].endswith(f"/{upload}")
        assert f'filename="{upload}{extension}"' in unquote(got.headers["Location"])
    else:
        assert f'filename="{upload}{extension}"' in got.headers["Content-Disposition"]
        assert await got.read() == data


async def test_tuspy_without_a_filename_and_a_final_of_unnamed_partials(
    local_api: Api, tmp_path: Path
) -> None:
    path = tmp_path / "clip"
    path.write_bytes(MP4_HEAD + bytes(5000))
    uploader = tus_client(local_api).uploader(str(path), chunk_size=1000, metadata={})
    await asyncio.to_thread(uploader.upload)
    media_id = uploader.request.response_headers["upload-media-id"]
    info = await (await local_api.info(media_id)).json()
    assert info["filename"] == uploader.url.rsplit("/", 1)[-1] + ".mp4"
    # A final without a name: from its id, and the bytes its partials join into.
    first = await partial_upload(local_api, b"\x89PNG\r\n\x1a\n")
    second = await partial_upload(local_api, b"rest of it")
    made = await create_final(local_api, [first, second])
    assert made.status == 201, await made.text()
    final = made.headers["Location"].rsplit("/", 1)[-1]
    info = await (await local_api.info(made.headers["Upload-Media-Id"])).json()
    assert (info["filename"], info["content_type"]) == (f"{final}.png", "image/png")


async def test_the_upload_url_of_an_unfinished_upload_is_409(local_api: Api) -> None:
    upload = await create_upload(local_api, 11)
    assert (await patch(local_api, upload, 0, HELLO[:5])).status == 204
    answer = await local_api.client.get(f"/api/v1/tus/{upload}", headers=local_api.headers)
    assert answer.status == 409
    problem = await answer.json()
    assert problem["type"].endswith("/upload-incomplete")
    assert problem["offset"] == 5
    assert "5 of 11" in problem["detail"]


async def test_tuspy_resumes_with_a_new_uploader(store_api: Api, tmp_path: Path) -> None:
    path, data = file_of(tmp_path, "resumed.bin", 13 * MiB + 7)
    client = tus_client(store_api)
    first = client.uploader(str(path), chunk_size=3 * MiB, metadata={"filename": "resumed.bin"})
    await asyncio.to_thread(first.upload, 4 * MiB)  # gives up mid-part, after two PATCHes
    assert first.offset == 4 * MiB
    second = await asyncio.to_thread(client.uploader, str(path), url=first.url)
    assert second.offset == 4 * MiB  # asked the server (HEAD)
    await asyncio.to_thread(second.upload)
    _, body = await fetch_media(store_api, "resumed.bin")
    assert body == data


async def test_tuspy_with_a_wrong_checksum_gets_460(local_api: Api, tmp_path: Path) -> None:
    from tusclient.exceptions import TusUploadFailed
    from tusclient.uploader import Uploader

    class WrongSha1(Uploader):  # configuration, not code: an algorithm that lies
        CHECKSUM_ALGORITHM_PAIR = ("sha1", lambda data: hashlib.sha1(data + b"!"))

    path, _ = file_of(tmp_path, "wrong.bin", 6 * MiB)
    uploader = WrongSha1(str(path), client=tus_client(local_api), upload_checksum=True)
    with pytest.raises(TusUploadFailed) as failure:
        await asyncio.to_thread(uploader.upload)
    assert failure.value.status_code == 460
    assert await offset_of(local_api, uploader.url.rsplit("/", 1)[-1]) == 0


async def test_a_deferred_length_is_set_by_a_later_patch(local_api: Api) -> None:
    data = random.Random(1).randbytes(9 * MiB + 3)
    answer = await local_api.client.post(
        "/api/v1/tus",
        headers={**local_api.headers, **TUS, "Upload-Defer-Length": "1", **named("later.bin")},
    )
    upload = answer.headers["Location"].rsplit("/", 1)[-1]
    assert (await patch(local_api, upload, 0, data[: 6 * MiB])).status == 204
    answer = await patch(
        local_api, upload, 6 * MiB, data[6 * MiB :], **{"Upload-Length": str(len(data))}
    )
    assert answer.status == 204, await answer.text()
    _, body = await fetch_media(local_api, "later.bin")
    assert body == data


async def test_a_deferred_length_can_end_where_the_tail_does(local_api: Api) -> None:
    answer = await local_api.client.post(
        "/api/v1/tus",
        headers={**local_api.headers, **TUS, "Upload-Defer-Length": "1", **named("short.txt")},
    )
    upload = answer.headers["Location"].rsplit("/", 1)[-1]
    assert (await patch(local_api, upload, 0, b"abc")).status == 204
    answer = await patch(local_api, upload, 3, b"", **{"Upload-Length": "3"})
    assert answer.status == 204, await answer.text()
    assert (await fetch_media(local_api, "short.txt"))[1] == b"abc"


# --- what a cut PATCH keeps ------------------------------------------------------


async def eventually_fetched(api: Api, filename: str) -> bytes:
    """The media's bytes once it is ready (a spilled part may first wait to move to S3)."""
    async with asyncio.timeout(20):
        while True:
            listed = await (await api.client.get("/api/v1/media", headers=api.headers)).json()
            if any(m["filename"] == filename and m["state"] == "ready" for m in listed["items"]):
                return (await fetch_media(api, filename))[1]
            await asyncio.sleep(0.2)


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    """A body of unknown length: aiohttp sends it with chunked transfer encoding."""
    for start in range(0, len(data), 256 * 1024):
        yield data[start : start + 256 * 1024]


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def bucket_view(settings: Settings, upload: str) -> tuple[list[int], list[str]]:
    """The sizes of the upload's parts in S3 so far, and the keys of its tail objects."""
    s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name="us-east-1")
    (listed,) = s3.list_multipart_uploads(Bucket=settings.s3_bucket)["Uploads"]
    parts = s3.list_parts(Bucket=settings.s3_bucket, Key=listed["Key"], UploadId=listed["UploadId"])
    tails = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=f"media/.tus-tails/{upload}/")
    return (
        [part["Size"] for part in parts.get("Parts", [])],
        [item["Key"] for item in tails.get("Contents", [])],
    )


async def test_terminating_a_finished_upload_deletes_its_media(store_api: Api) -> None:
    """termination: "the Server SHOULD free up all resources" - a finished upload's
    resource is its file, deleted as DELETE /api/v1/media/delete/{id} deletes it."""
    api = store_api
    upload = await create_upload(api, 11, **named("terminated.txt"))
    assert (await patch(api, upload, 0, HELLO)).status == 204
    info, body = await fetch_media(api, "terminated.txt")
    assert body == HELLO
    stream = await api.client.get(
        f"/api/v1/media/stream/{info['media_id']}", headers=api.headers, allow_redirects=False
    )
    on_disk = [path for path in api.settings.data_dir.rglob("terminated.txt") if path.is_file()]
    assert stream.status == 302 or on_disk

    answer = await api.client.delete(f"/api/v1/tus/{upload}", headers={**api.headers, **TUS})
    assert answer.status == 204, await answer.text()
    head = await api.client.head(f"/api/v1/tus/{upload}", headers={**api.headers, **TUS})
    assert head.status == 404
    assert (await api.info(info["media_id"])).status == 404
    assert (await api.status(upload)).status == 404
    if stream.status == 302:  # the object itself is gone
        settings = api.settings
        s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name="us-east-1")
        listed = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix="media/alice/")
        assert listed["KeyCount"] == 0, listed
    assert not [path for path in on_disk if path.exists()]
    again = await api.client.delete(f"/api/v1/tus/{upload}", headers={**api.headers, **TUS})
    assert again.status == 404


async def test_terminating_a_finished_upload_whose_media_was_deleted(local_api: Api) -> None:
    upload = await create_upload(local_api, 11, **named("twice.txt"))
    assert (await patch(local_api, upload, 0, HELLO)).status == 204
    info, _ = await fetch_media(local_api, "twice.txt")
    assert (await local_api.delete(info["media_id"])).status == 204
    answer = await local_api.client.delete(
        f"/api/v1/tus/{upload}", headers={**local_api.headers, **TUS}
    )
    assert answer.status == 204
    assert (await local_api.status(upload)).status == 404


async def test_terminating_a_finalizing_upload_deletes_it_and_its_spilled_part(
    start_api: ApiFactory, proxy: CuttableProxy, proxied_settings: Settings
) -> None:
    api = await start_api(proxied_settings)
    data = bytes(range(256)) * (10 * MiB // 256) + b"0123456789"
    upload = await create_upload(api, len(data), **named("waiting.bin"))
    assert (await patch(api, upload, 0, data[: 5 * MiB])).status == 204  # a part in S3
    await proxy.cut()
    # The rest spilled to disk, completed: finalizing until S3 is back.
    assert (await patch(api, upload, 5 * MiB, data[5 * MiB :])).status == 204
    listed = await (await api.client.get("/api/v1/media", headers=api.headers)).json()
    (media,) = listed["items"]
    assert media["state"] == "finalizing"
    staging = proxied_settings.data_dir / ".staging"
    assert files_under(staging)

    answer = await api.client.delete(f"/api/v1/tus/{upload}", headers={**api.headers, **TUS})
    assert answer.status == 204, await answer.text()
    assert (await api.info(media["media_id"])).status == 404
    assert (await api.status(upload)).status == 404
    assert not files_under(staging)
    await proxy.restore()
    await api.client.app[SERVICES].engine.finish_finalizing()
    assert (await api.info(media["media_id"])).status == 404  # nothing finished it meanwhile


async def test_s3_patches_ending_mid_part_keep_no_byte_on_local_disk(
    start_api: ApiFactory, s3_settings: Settings
) -> None:
    """Issue 14 item 2: parts of any size go to S3 as they arrive, the rest waits in the
    bucket; nothing of a tus upload is written under the data directory."""
    api = await start_api(s3_settings)
    data_dir = s3_settings.data_dir
    data = random.Random(2).randbytes(23 * MiB + 11)
    upload = await create_upload(api, len(data), **named("parts.bin"))
    # (end of the PATCH, chunked?, part sizes in S3 after it, a tail object after it)
    steps = [
        (3 * MiB, False, [], True),
        (9 * MiB, True, [5 * MiB], True),
        (20 * MiB + 1, False, [5 * MiB, 8 * MiB, 7 * MiB + 1], False),
        (22 * MiB, True, [5 * MiB, 8 * MiB, 7 * MiB + 1], True),
    ]
    offset = 0
    for end, is_chunked, parts, tail in steps:
        body = chunked(data[offset:end]) if is_chunked else data[offset:end]
        answer = await api.client.patch(
            f"/api/v1/tus/{upload}",
            data=body,
            headers={**api.headers, **TUS, **OCTETS, "Upload-Offset": str(offset)},
        )
        assert answer.status == 204, await answer.text()
        assert int(answer.headers["Upload-Offset"]) == end
        offset = end
        assert files_under(data_dir / ".staging") == []
        sizes, tails = bucket_view(s3_settings, upload)
        assert sizes == parts
        assert len(tails) == (1 if tail else 0)
    s3 = boto3.client("s3", endpoint_url=s3_settings.s3_endpoint_url, region_name="us-east-1")
    # As a crash between storing a new tail and recording it leaves one behind.
    orphan = f"media/.tus-tails/{upload}/{offset}-3"
    s3.put_object(Bucket=s3_settings.s3_bucket, Key=orphan, Body=b"abc")
    answer = await patch(api, upload, offset, data[offset:])
    assert answer.status == 204, await answer.text()
    info, body = await fetch_media(api, "parts.bin")
    assert info["storage"] == "s3"
    assert body == data
    assert files_under(data_dir / ".staging") == []
    assert all(name.startswith("catalog.sqlite3") for name in files_under(data_dir))
    left = s3.list_objects_v2(Bucket=s3_settings.s3_bucket, Prefix="media/.tus-tails/")
    assert left.get("KeyCount", 0) == 0


async def test_bodies_of_unknown_length_hold_a_bounded_memory_per_user(
    start_api: ApiFactory, s3_settings: Settings
) -> None:
    """Issue 14 item 2: a chunked PATCH is gathered one 5 MiB part at a time in memory;
    one user's such PATCHes hold at most MEDIAGATE_TUS_MEMORY_PER_USER at once."""
    api = await start_api(s3_settings.model_copy(update={"tus_memory_per_user": 8 * MiB}))
    data = random.Random(4).randbytes(12 * MiB)
    first, second = [await create_upload(api, len(data)) for _ in range(2)]
    go_on = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield data[:MiB]
        await go_on.wait()
        yield data[MiB:]

    def chunked_patch(who: Api, upload: str, body: AsyncIterator[bytes]) -> Any:
        return who.client.patch(
            f"/api/v1/tus/{upload}",
            data=body,
            headers={**who.headers, **TUS, **OCTETS, "Upload-Offset": "0"},
        )

    async with asyncio.timeout(30):
        while True:  # until the stalled PATCH is in first and holds its 5 MiB
            holding = asyncio.create_task(chunked_patch(api, first, stalled()))
            await asyncio.sleep(0.2)
            refused = await chunked_patch(api, second, chunked(data))
            if refused.status == 429 and not holding.done():
                break
            assert refused.status in (204, 429), await refused.text()
            go_on.set()
            await holding
            go_on.clear()
            first, second = [await create_upload(api, len(data)) for _ in range(2)]
    assert (await refused.json())["type"].endswith("/too-much-held")
    assert "Retry-After" in refused.headers
    assert await offset_of(api, second) == 0
    # With Content-Length nothing is held; another user has memory of their own.
    assert (await patch(api, second, 0, data)).status == 204
    bob = api.as_user("bob")
    theirs = await create_upload(bob, len(data))
    assert (await chunked_patch(bob, theirs, chunked(data))).status == 204
    go_on.set()
    assert (await holding).status == 204
    again = await create_upload(api, len(data))
    assert (await chunked_patch(api, again, chunked(data))).status == 204
    assert await offset_of(api, again) == len(data)


@pytest.mark.parametrize(
    ("cut_after", "durable"),
    [(4 * MiB, 3 * MiB), (10 * MiB, 8 * MiB)],
    ids=["in-the-part-joined-with-the-tail", "in-a-whole-part-from-the-body"],
)
async def test_s3_cut_during_a_patch_keeps_the_durable_offset(
    start_api: ApiFactory,
    proxy: CuttableProxy,
    proxied_settings: Settings,
    cut_after: int,
    durable: int,
) -> None:
    api = await start_api(proxied_settings)
    data = random.Random(cut_after).randbytes(20 * MiB + 5)
    name = f"cut-{cut_after}.bin"
    upload = await create_upload(api, len(data), **named(name))
    assert (await patch(api, upload, 0, data[: 3 * MiB])).status == 204  # a spooled tail
    proxy.cut_after(cut_after)
    answer = await patch(api, upload, 3 * MiB, data[3 * MiB :])
    assert answer.status == 503, await answer.text()
    assert await offset_of(api, upload) == durable
    await proxy.restore()
    async with asyncio.timeout(20):
        # As a tus client does: 503 (the tail in the bucket cannot be read while S3
        # recovers) is retried after a while.
        while True:
            await asyncio.sleep(0.3)  # past the breaker's back-off
            offset = await offset_of(api, upload)
            answer = await patch(api, upload, offset, data[offset:])
            if answer.status != 503:
                break
    assert answer.status == 204, await answer.text()
    assert await eventually_fetched(api, name) == data


async def send_patch_and_stall(
    server: ServerProcess, upload: str, offset: int, body: bytes, sent: int
) -> asyncio.StreamWriter:
    """A PATCH declaring all of `body` that sends only its first `sent` bytes, then stalls."""
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = (
        f"PATCH /api/v1/tus/{upload} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {len(body)}\r\nUpload-Offset: {offset}\r\n"
        f"Authorization: Bearer {CRASH_TOKEN}\r\nTus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\n\r\n"
    )
    writer.write(head.encode() + body[:sent])
    await writer.drain()
    return writer


CRASH_SECRET = "tus-crash-secret-long-enough-for-hs256"
CRASH_TOKEN = tokens.issue(CRASH_SECRET.encode(), "alice", TOKEN_LIFETIME)


@pytest.fixture(params=["local", "s3"])
def server_env(request: pytest.FixtureRequest, moto_endpoint: str, bucket: str) -> dict[str, str]:
    env = {"MEDIAGATE_JWT_SECRET": CRASH_SECRET}
    if request.param == "s3":
        env |= {
            "USE_CLOUD_STORAGE": "true",
            "AWS_S3_BUCKET_NAME": bucket,
            **tier_s3_env(moto_endpoint),
        }
    return env


async def test_sigkill_mid_patch_then_head_and_resume(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    data = random.Random(9).randbytes(20 * MiB + 77)
    headers = {"Authorization": f"Bearer {CRASH_TOKEN}", **TUS}
    server = ServerProcess(tmp_path / "data", server_env)

    async def head(client: aiohttp.ClientSession) -> int:
        async with client.head(f"/api/v1/tus/{upload}") as answer:
            assert answer.status == 200
            return int(answer.headers["Upload-Offset"])

    async def kill(stalled: asyncio.StreamWriter) -> None:
        server.signal(signal.SIGKILL)
        assert await server.wait() == -signal.SIGKILL
        stalled.transport.abort()
        await server.start()

    await server.start()
    try:
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            async with client.post(
                "/api/v1/tus",
                headers={"Upload-Length": str(len(data)), **named("killed.bin")},
            ) as answer:
                upload = answer.headers["Location"].rsplit("/", 1)[-1]
            async with client.patch(
                f"/api/v1/tus/{upload}",
                data=data[: 3 * MiB],
                headers={**OCTETS, "Upload-Offset": "0"},
            ) as answer:
                assert answer.status == 204
            # Killed while the next part streams on: the part before it (on S3 the tail
            # and the body's head, 8 MiB; on disk 3 + 8 MiB) is kept, exactly.
            stalled = await send_patch_and_stall(server, upload, 3 * MiB, data[3 * MiB :], 9 * MiB)
            async with asyncio.timeout(20):
                while (durable := await head(client)) == 3 * MiB:
                    await asyncio.sleep(0.05)
            assert durable in (8 * MiB, 11 * MiB)
            await asyncio.sleep(0.2)
            await kill(stalled)
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            assert await head(client) == durable
            # Killed while a short remainder arrives: it counts only once it all came.
            rest = data[durable : durable + 4 * MiB]
            stalled = await send_patch_and_stall(server, upload, durable, rest, 5 * MiB // 2)
            await asyncio.sleep(0.5)
            await kill(stalled)
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            offset = await head(client)
            assert offset == durable
            async with client.patch(
                f"/api/v1/tus/{upload}",
                data=data[offset:],
                headers={**OCTETS, "Upload-Offset": str(offset)},
            ) as answer:
                assert answer.status == 204, await answer.text()
            async with client.get("/api/v1/media") as answer:
                (media,) = (await answer.json())["items"]
            async with client.get(f"/api/v1/media/stream/{media['media_id']}") as stream:
                assert await stream.read() == data
    finally:
        await server.stop()


def recorded_chunks(data_dir: Path) -> int:
    """How many chunk rows the server's SQLite catalog holds, pending ones too."""
    with contextlib.closing(sqlite3.connect(data_dir / "catalog.sqlite3")) as db:
        return int(db.execute("SELECT count(*) FROM chunks").fetchone()[0])


async def test_sigkill_mid_checksummed_patch_counts_none_of_its_parts(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    """Issue 14 item 1: the parts of a checksummed PATCH count only once it matched."""
    data = random.Random(1).randbytes(7 * MiB)
    flipped = bytearray(data)
    flipped[MiB] ^= 0xFF  # in part 0
    headers = {"Authorization": f"Bearer {CRASH_TOKEN}", **TUS}
    env = {**server_env, "MEDIAGATE_CHUNK_SIZE": str(5 * MiB)}
    server = ServerProcess(tmp_path / "data", env)
    await server.start()
    try:
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            async with client.post(
                "/api/v1/tus", headers={"Upload-Length": str(len(data)), **named("checked.bin")}
            ) as answer:
                upload = answer.headers["Location"].rsplit("/", 1)[-1]
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = (
            f"PATCH /api/v1/tus/{upload} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Length: {len(data)}\r\nUpload-Offset: 0\r\n"
            f"Upload-Checksum: {checksum('sha256', data)}\r\n"
            f"Authorization: Bearer {CRASH_TOKEN}\r\nTus-Resumable: 1.0.0\r\n"
            "Content-Type: application/offset+octet-stream\r\n\r\n"
        )
        writer.write(head.encode() + bytes(flipped[: 6 * MiB]))
        await writer.drain()
        async with asyncio.timeout(20):
            while not recorded_chunks(tmp_path / "data"):  # part 0 is in the store
                await asyncio.sleep(0.05)
        server.signal(signal.SIGKILL)
        assert await server.wait() == -signal.SIGKILL
        writer.transport.abort()
        await server.start()
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            async with client.head(f"/api/v1/tus/{upload}") as answer:
                assert answer.status == 200
                assert answer.headers["Upload-Offset"] == "0"
            async with client.patch(
                f"/api/v1/tus/{upload}",
                data=data,
                headers={
                    **OCTETS,
                    "Upload-Offset": "0",
                    "Upload-Checksum": checksum("sha256", data),
                },
            ) as answer:
                assert answer.status == 204, await answer.text()
            async with client.get("/api/v1/media") as answer:
                (media,) = (await answer.json())["items"]
            async with client.get(f"/api/v1/media/stream/{media['media_id']}") as stream:
                assert await stream.read() == data
    finally:
        await server.stop()


# --- a stalled PATCH: timed out, or taken over by a newer request ------------------


def problem_type(problem: dict[str, Any] | None) -> str:
    assert problem is not None
    return str(problem["type"]).rsplit("/", 1)[-1]


async def test_patches_of_known_length_by_one_user_overlap(local_api: Api) -> None:
    """Two PATCHes with Content-Length of one user at once: the one ending second is
    answered 204, not 500 (the first's end once dropped the user's held-bytes count)."""
    api = local_api
    data = random.Random(5).randbytes(3000)
    first, second = [await create_upload(api, len(data)) for _ in range(2)]
    stalled = await stall_patch(api, first, 0, data, 1000)
    assert (await patch(api, second, 0, data)).status == 204
    await stalled.send(data[1000:])
    status, _ = await stalled.answer()
    stalled.close()
    assert status == 204
    assert await offset_of(api, first) == len(data)


async def test_a_stalled_patch_is_answered_408_after_the_body_read_timeout(
    start_api: ApiFactory, tmp_path: Path
) -> None:
    api = await start_api(make_settings(tmp_path / "data", body_read_timeout=0.5))
    data = random.Random(1).randbytes(3000)
    upload = await create_upload(api, len(data), **named("stalled.bin"))
    stalled = await stall_patch(api, upload, 0, data, 1000)
    status, problem = await stalled.answer(seconds=5)
    assert (status, problem_type(problem)) == (408, "body-timeout")
    stalled.close()

    offset = await offset_of(api, upload)  # what arrived is kept, as any cut PATCH keeps it
    assert offset <= 1000
    assert (await patch(api, upload, offset, data[offset:])).status == 204
    assert (await fetch_media(api, "stalled.bin"))[1] == data


async def test_a_stalled_creation_with_upload_is_answered_after_the_body_read_timeout(
    start_api: ApiFactory, tmp_path: Path
) -> None:
    api = await start_api(make_settings(tmp_path / "data", body_read_timeout=0.5))
    data = random.Random(2).randbytes(3000)
    connection = await RawConnection.open(api.client)
    head = request_head(
        "POST",
        "/api/v1/tus",
        {**api.headers, **TUS, **OCTETS, "Upload-Length": str(len(data)), **named("c.bin")},
        content_length=len(data),
    )
    await connection.send(head, data[:1000], pause=0.3)
    status, _ = await connection.answer(seconds=5)  # the upload exists all the same
    assert status == 201
    connection.close()


async def test_a_newer_patch_takes_over_from_a_stalled_one_at_once(store_api: Api) -> None:
    api = store_api  # the default body read timeout: 60 s
    data = random.Random(3).randbytes(16 * MiB + 5)  # two parts of 8 MiB and a byte
    upload = await create_upload(api, len(data), **named("resumed.bin"))
    stalled = await stall_patch(api, upload, 0, data, 8 * MiB + 100)

    async with asyncio.timeout(10):  # not the body read timeout
        # The client reconnects, asks where it is, and sends the rest from there.
        offset = await offset_of(api, upload)
        answer = await patch(api, upload, offset, data[offset:])
        status, problem = await stalled.answer()
    assert (status, problem_type(problem)) == (409, "upload-superseded")
    stalled.close()
    assert offset >= 8 * MiB  # the part that arrived whole is kept
    if answer.status == 409:  # the stalled PATCH's last bytes were kept after the HEAD
        offset = await offset_of(api, upload)
        answer = await patch(api, upload, offset, data[offset:])
    assert answer.status == 204, await answer.text()
    assert await eventually_fetched(api, "resumed.bin") == data
    assert len(api.client.app[SERVICES].engine.locks) == 0


async def test_delete_takes_over_from_a_stalled_patch_at_once(local_api: Api) -> None:
    data = random.Random(4).randbytes(3000)
    upload = await create_upload(local_api, len(data))
    stalled = await stall_patch(local_api, upload, 0, data, 1000)

    async with asyncio.timeout(10):
        answer = await local_api.client.delete(
            f"/api/v1/tus/{upload}", headers={**local_api.headers, **TUS}
        )
        assert answer.status == 204, await answer.text()
        status, problem = await stalled.answer()
    assert (status, problem_type(problem)) == (409, "upload-superseded")
    stalled.close()
    headers = {**local_api.headers, **TUS}
    assert (await local_api.client.head(f"/api/v1/tus/{upload}", headers=headers)).status == 404


# --- concatenation -------------------------------------------------------------------


async def partial_upload(api: Api, data: bytes, *, finish: bool = True) -> str:
    upload = await create_upload(api, len(data), **{"Upload-Concat": "partial"})
    if finish:
        assert (await patch(api, upload, 0, data)).status == 204
    return upload


async def create_final(api: Api, uploads: list[str], **headers: str) -> Any:
    urls = " ".join(f"/api/v1/tus/{upload}" for upload in uploads)
    return await api.client.post(
        "/api/v1/tus",
        headers={**api.headers, **TUS, "Upload-Concat": f"final;{urls}", **headers},
    )


@pytest.mark.parametrize(
    ("sizes", "parts"),
    [([6 * MiB, 5 * MiB, MiB + 3], 3), ([MiB, 6 * MiB], 1), ([3, 0, 4], 1)],
    ids=["each-partial-one-copied-part", "a-small-partial-first", "tiny"],
)
async def test_partials_concatenate_into_one_media(
    store_api: Api, sizes: list[int], parts: int
) -> None:
    pieces = [random.Random(size).randbytes(size) for size in sizes]
    uploads = [await partial_upload(store_api, piece) for piece in pieces]
    head = await store_api.client.head(
        f"/api/v1/tus/{uploads[0]}", headers={**store_api.headers, **TUS}
    )
    assert head.headers["Upload-Concat"] == "partial"
    answer = await create_final(store_api, uploads, **named("joined.mp4"))
    assert answer.status == 201, await answer.text()
    assert answer.headers["Upload-Offset"] == str(sum(sizes))
    final = answer.headers["Location"].rsplit("/", 1)[-1]
    head = await store_api.client.head(f"/api/v1/tus/{final}", headers={**store_api.headers, **TUS})
    assert head.headers["Upload-Concat"].startswith("final;/api/v1/tus/")
    assert head.headers["Upload-Length"] == str(sum(sizes))
    info, body = await fetch_media(store_api, "joined.mp4")
    assert body == b"".join(pieces)
    if store_api.settings.use_cloud_storage:
        # S3's multipart ETag counts the parts: copied partials (UploadPartCopy) are one
        # part each, where bytes sent through the server are cut into 8 MiB parts.
        assert info["checksum"].endswith(f"-{parts}")
    listed = await (await store_api.client.get("/api/v1/media", headers=store_api.headers)).json()
    assert [m["filename"] for m in listed["items"]] == ["joined.mp4"]  # partials are gone
    refused = await patch(store_api, final, sum(sizes), b"more")
    assert refused.status == 403


async def test_a_final_needs_partials_of_known_length(local_api: Api) -> None:
    done = await partial_upload(local_api, b"abc")
    plain = await create_upload(local_api, 1)
    created = await local_api.client.post(
        "/api/v1/tus",
        headers={
            **local_api.headers,
            **TUS,
            "Upload-Concat": "partial",
            "Upload-Defer-Length": "1",
        },
    )
    deferred = created.headers["Location"].split("/api/v1/tus/")[-1]
    assert (await create_final(local_api, [done, plain])).status == 400
    refused = await create_final(local_api, [done, deferred])
    assert refused.status == 400
    assert "Upload-Length" in (await refused.json())["detail"]
    assert (await create_final(local_api, [done], **{"Upload-Length": "3"})).status == 400
    other = await partial_upload(local_api.as_user("bob"), b"x")
    assert (await create_final(local_api, [done, other])).status == 404


async def final_head(api: Api, final: str) -> Any:
    answer = await api.client.head(f"/api/v1/tus/{final}", headers={**api.headers, **TUS})
    assert answer.status == 200
    return answer.headers


async def test_a_final_of_unfinished_partials_waits_then_completes_with_the_last(
    store_api: Api,
) -> None:
    first = await partial_upload(store_api, b"hello")
    second = await partial_upload(store_api, b" world", finish=False)
    third = await partial_upload(store_api, b"!!!", finish=False)
    answer = await create_final(store_api, [first, second, third], **named("waited.txt"))
    assert answer.status == 201, await answer.text()
    final = answer.headers["Location"].split("/api/v1/tus/")[-1]
    # Its length is known (the partials' lengths are); its offset is the partials
    # finished in order from the first.
    assert answer.headers["Upload-Offset"] == "5"
    headers = await final_head(store_api, final)
    assert (headers["Upload-Offset"], headers["Upload-Length"]) == ("5", "14")
    assert "Upload-Media-Id" not in headers
    assert (await patch(store_api, final, 5, b" world")).status == 403
    unfinished = await store_api.client.get(f"/api/v1/tus/{final}", headers=store_api.headers)
    assert unfinished.status == 409

    assert (await patch(store_api, third, 0, b"!!!")).status == 204
    assert (await final_head(store_api, final))["Upload-Offset"] == "5"  # the second is not
    assert (await patch(store_api, second, 0, b" wo")).status == 204
    assert (await final_head(store_api, final))["Upload-Offset"] == "5"

    assert (await patch(store_api, second, 3, b"rld")).status == 204  # the last one: made
    headers = await final_head(store_api, final)
    assert (headers["Upload-Offset"], headers["Upload-Length"]) == ("14", "14")
    assert "Upload-Media-Id" in headers
    assert (await fetch_media(store_api, "waited.txt"))[1] == b"hello world!!!"
    assert await media_names(store_api) == ["waited.txt"]  # the partials went into it
    assert await store_api.client.app[SERVICES].catalog.count_open_sessions("alice") == 0


async def test_a_partial_finished_on_another_instance_completes_its_final(
    start_api: ApiFactory, catalog_settings: Settings
) -> None:
    api = await start_api(catalog_settings)
    # On PostgreSQL, the final is made on one instance and its partial finished on another.
    other = await start_api(catalog_settings) if catalog_settings.database_url else api
    first = await partial_upload(api, b"abc")
    second = await partial_upload(api, b"defg", finish=False)
    answer = await create_final(api, [first, second], **named("across.bin"))
    assert answer.status == 201, await answer.text()
    final = answer.headers["Location"].split("/api/v1/tus/")[-1]
    # A partial a waiting final took goes into no other final.
    assert (await create_final(other, [second], **named("other.bin"))).status == 409
    assert (await patch(other, second, 0, b"defg")).status == 204
    headers = await final_head(api, final)
    assert (headers["Upload-Offset"], headers["Upload-Length"]) == ("7", "7")
    assert (await fetch_media(api, "across.bin"))[1] == b"abcdefg"
    assert await media_names(api) == ["across.bin"]


async def test_a_final_whose_last_partial_finished_while_s3_was_away_is_made_by_a_head(
    start_api: ApiFactory, proxy: CuttableProxy, proxied_settings: Settings
) -> None:
    api = await start_api(proxied_settings)
    data = bytes(range(256)) * (10 * MiB // 256) + b"0123456789"
    first = await partial_upload(api, b"abc")
    second = await partial_upload(api, data, finish=False)
    assert (await patch(api, second, 0, data[: 5 * MiB])).status == 204  # a part in S3
    answer = await create_final(api, [first, second], **named("later.bin"))
    assert answer.status == 201, await answer.text()
    final = answer.headers["Location"].split("/api/v1/tus/")[-1]
    await proxy.cut()
    # The rest spilled to disk: the partial is finalizing, so its final cannot be made yet.
    assert (await patch(api, second, 5 * MiB, data[5 * MiB :])).status == 204
    headers = await final_head(api, final)
    assert headers["Upload-Offset"] == "3"
    assert "Upload-Media-Id" not in headers

    await proxy.restore()
    await asyncio.sleep(0.3)  # past the breaker's back-off
    assert await api.client.app[SERVICES].engine.finish_finalizing() == 1
    headers = await final_head(api, final)  # this HEAD makes it
    length = str(3 + len(data))
    assert (headers["Upload-Offset"], headers["Upload-Length"]) == (length, length)
    assert "Upload-Media-Id" in headers
    assert await eventually_fetched(api, "later.bin") == b"abc" + data
    assert await media_names(api) == ["later.bin"]


async def media_names(api: Api) -> list[str]:
    listed = await (await api.client.get("/api/v1/media", headers=api.headers)).json()
    return sorted(media["filename"] for media in listed["items"])


async def test_a_partial_named_twice_is_400_before_anything_is_made(local_api: Api) -> None:
    first = await partial_upload(local_api, b"abc")
    refused = await create_final(local_api, [first, first], **named("twice.bin"))
    assert refused.status == 400
    assert first in (await refused.json())["detail"]
    assert await media_names(local_api) == [first]  # the partial (named by its id), no final
    assert await local_api.client.app[SERVICES].catalog.count_open_sessions("alice") == 0

    made = await create_final(local_api, [first], **named("once.bin"))
    assert made.status == 201
    assert (await fetch_media(local_api, "once.bin"))[1] == b"abc"


@pytest.fixture(params=CATALOGS)
def catalog_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", database_url=database_url_for(request))


async def test_finals_racing_for_partials_make_one_media(
    start_api: ApiFactory, catalog_settings: Settings
) -> None:
    api = await start_api(catalog_settings)
    # On PostgreSQL, two instances sharing the catalog and the data directory.
    apis = [api, await start_api(catalog_settings)] if catalog_settings.database_url else [api]
    first, second, third = [await partial_upload(api, data) for data in (b"abc", b"de", b"f")]
    lists = [[first, second]] * 4 + [[second, third]] * 2
    answers = await asyncio.gather(
        *(
            create_final(apis[n % len(apis)], uploads, **named(f"final-{n}.bin"))
            for n, uploads in enumerate(lists)
        )
    )
    statuses = [answer.status for answer in answers]
    assert statuses.count(201) == 1, statuses  # every final needs the second partial
    for answer in answers:
        if answer.status != 201:
            assert answer.status in (400, 409), await answer.text()
            assert answer.headers["Content-Type"].startswith("application/problem+json")
    [made] = [n for n, answer in enumerate(answers) if answer.status == 201]
    left = first if lists[made] == [second, third] else third
    assert await media_names(api) == sorted([left, f"final-{made}.bin"])  # one partial left
    expected = b"abcde" if lists[made] == [first, second] else b"def"
    assert (await fetch_media(api, f"final-{made}.bin"))[1] == expected
    assert await api.client.app[SERVICES].catalog.count_open_sessions("alice") == 0


async def test_a_final_that_fails_midway_leaves_its_partials_free(
    start_api: ApiFactory, proxy: CuttableProxy, proxied_settings: Settings
) -> None:
    api = await start_api(proxied_settings)
    first, second = [await partial_upload(api, data) for data in (b"abc", b"de")]
    await proxy.cut()  # the partials cannot be read back
    failed = await create_final(api, [first, second], **named("joined.bin"))
    assert failed.status == 503, await failed.text()
    assert await api.client.app[SERVICES].catalog.count_open_sessions("alice") == 0  # nothing kept

    await proxy.restore()
    await asyncio.sleep(0.3)  # past the breaker's back-off
    made = await create_final(api, [first, second], **named("joined.bin"))
    assert made.status == 201, await made.text()
    assert await eventually_fetched(api, "joined.bin") == b"abcde"
