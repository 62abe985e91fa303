"""Direct uploads (web/direct.py, core/direct.py): parts PUT straight to S3 (moto) at URLs
mediagate signs, over real HTTP; the server lists, checks and records them."""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import ClientSession

from mediagate.config import Settings
from mediagate.core import upload_grants
from mediagate.core.direct import _unplanned_chunks
from mediagate.core.engine import utc_now
from mediagate.core.upload_grants import UploadGrants
from mediagate.errors import ChunkLengthMismatch, FileTooLarge, MissingChunks
from mediagate.models import StorageKind
from mediagate.storage.base import ListedPart
from mediagate.web.app import create_app
from mediagate.web.keys import SERVICES
from support.api import CATALOGS, Api, MiB, database_url_for, md5_header
from support.tier import ON_RGW, plain_client
from support.tus import fetch_media

BASE = "/api/v1/companion"
PART = 5 * MiB


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> str | None:
    """SQLite, unless a test asks for both catalogs (indirect parametrize)."""
    return database_url_for(request) if hasattr(request, "param") else None


def data_of(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


async def create(api: Api, name: str = "clip.mp4", base: str = BASE, **body: Any) -> Any:
    answer = await api.client.post(
        f"{base}/s3/multipart",
        json={"filename": name, "type": "video/mp4", "metadata": {"name": name}, **body},
        headers=api.headers,
    )
    return answer


async def sign(api: Api, upload: dict[str, Any], number: int, **query: str) -> Any:
    return await api.client.get(
        f"{BASE}/s3/multipart/{upload['uploadId']}/{number}",
        params={"key": upload["key"], **query},
        headers=api.headers,
    )


async def put_parts(
    api: Api, upload: dict[str, Any], data: bytes, size: int = PART
) -> list[dict[str, Any]]:
    """Every part of `data` PUT to the URL the server signs, as Uppy does; Uppy's parts list."""
    parts = []
    async with plain_client() as s3:
        for number, start in enumerate(range(0, len(data), size), start=1):
            signed = await sign(api, upload, number)
            assert signed.status == 200, await signed.text()
            url = (await signed.json())["url"]
            async with s3.put(url, data=data[start : start + size]) as put:
                assert put.status == 200, await put.text()
                parts.append({"PartNumber": number, "ETag": put.headers["ETag"]})
    return parts


async def complete(api: Api, upload: dict[str, Any], parts: list[dict[str, Any]] | None) -> Any:
    return await api.client.post(
        f"{BASE}/s3/multipart/{upload['uploadId']}/complete",
        params={"key": upload["key"]},
        json={"parts": parts} if parts is not None else {},
        headers=api.headers,
    )


async def no_multipart_uploads(s3_objects: Any, bucket: str) -> bool:
    listed = await s3_objects.list_multipart_uploads(Bucket=bucket)
    return listed.get("Uploads", []) == []


@pytest.mark.parametrize("database_url", CATALOGS, indirect=True)
@pytest.mark.store
async def test_parts_put_straight_to_s3_make_a_media_like_any_other(
    s3_api: Api, s3_objects: Any, bucket: str
) -> None:
    data = data_of(2 * PART + 12345)
    answer = await create(s3_api)
    assert answer.status == 200
    upload = await answer.json()
    assert upload["key"].startswith("media/alice/") and upload["key"].endswith("/clip.mp4")
    parts = await put_parts(s3_api, upload, data)

    listed = await s3_api.client.get(
        f"{BASE}/s3/multipart/{upload['uploadId']}",
        params={"key": upload["key"]},
        headers=s3_api.headers,
    )
    assert [(p["PartNumber"], p["Size"]) for p in await listed.json()] == [
        (1, PART),
        (2, PART),
        (3, 12345),
    ]
    done = await complete(s3_api, upload, parts)
    assert done.status == 200, await done.text()
    media = await done.json()
    assert media["location"].startswith("http") and "signature=" in media["location"]
    assert media["info"]["size"] == len(data) and media["info"]["storage"] == "s3"
    info, body = await fetch_media(s3_api, "clip.mp4")
    assert info["media_id"] == media["media_id"] and body == data
    assert await no_multipart_uploads(s3_objects, bucket)
    # Completing again (the answer was lost) answers the same media.
    again = await complete(s3_api, upload, parts)
    assert (await again.json())["media_id"] == media["media_id"]


@pytest.mark.store
async def test_abort_leaves_no_parts_and_forgets_the_upload(
    s3_api: Api, s3_objects: Any, bucket: str
) -> None:
    upload = await (await create(s3_api)).json()
    await put_parts(s3_api, upload, data_of(PART + 1))
    assert not await no_multipart_uploads(s3_objects, bucket)
    aborted = await s3_api.client.delete(
        f"{BASE}/s3/multipart/{upload['uploadId']}",
        params={"key": upload["key"]},
        headers=s3_api.headers,
    )
    assert aborted.status == 204
    assert await no_multipart_uploads(s3_objects, bucket)
    assert (await sign(s3_api, upload, 1)).status == 404


async def test_another_user_can_neither_sign_list_complete_nor_abort(s3_api: Api) -> None:
    upload = await (await create(s3_api)).json()
    mallory = s3_api.as_user("mallory")
    path = f"{BASE}/s3/multipart/{upload['uploadId']}"
    query = {"key": upload["key"]}
    answers = [
        await sign(mallory, upload, 1),
        await mallory.client.get(path, params=query, headers=mallory.headers),
        await mallory.client.post(path + "/complete", params=query, headers=mallory.headers),
        await mallory.client.delete(path, params=query, headers=mallory.headers),
    ]
    for answer in answers:
        assert answer.status == 404
        assert answer.content_type == "application/problem+json"
    assert (await sign(s3_api, upload, 1)).status == 200  # still alice's, untouched


async def test_a_key_other_than_the_one_created_is_refused(s3_api: Api) -> None:
    upload = await (await create(s3_api)).json()
    forged = {**upload, "key": "media/bob/elsewhere/clip.mp4"}
    assert (await sign(s3_api, forged, 1)).status == 404


# Each bad request, and the problem it gets: (case, status, problem code).
BAD_REQUESTS = [
    ("no token", 401, "unauthorized"),
    ("part 0", 400, "bad-request"),
    ("part 10001", 400, "bad-request"),
    ("bad json", 400, "bad-request"),
    ("single request", 501, "direct-upload-not-offered"),
]


async def test_bad_requests_are_problems(s3_api: Api) -> None:
    upload = await (await create(s3_api)).json()
    client, headers = s3_api.client, s3_api.headers
    for case, status, code in BAD_REQUESTS:
        if case == "no token":
            answer = await client.post(f"{BASE}/s3/multipart", json={"filename": "x"})
        elif case.startswith("part"):
            answer = await sign(s3_api, upload, int(case.split()[1]))
        elif case == "bad json":
            answer = await client.post(f"{BASE}/s3/multipart", data=b"{", headers=headers)
        else:
            query = {"filename": "x", "type": "video/mp4"}
            answer = await client.get(f"{BASE}/s3/params", params=query, headers=headers)
        assert answer.status == status, case
        assert answer.content_type == "application/problem+json", case
        assert (await answer.json())["type"].endswith("/" + code), case


async def test_a_local_only_server_offers_no_direct_uploads(local_api: Api) -> None:
    answer = await create(local_api)
    assert answer.status == 501
    problem = await answer.json()
    assert problem["type"].endswith("/direct-upload-not-offered")
    assert "/api/v1/media/upload/initiate" in problem["detail"]


async def test_with_s3_down_direct_uploads_are_refused_for_the_relay(
    start_api: Any, unreachable_s3: Settings
) -> None:
    api = await start_api(unreachable_s3)
    answer = await create(api)
    assert answer.status == 503
    assert answer.headers["Retry-After"]
    assert (await answer.json())["type"].endswith("/direct-upload-unavailable")
    # Nothing left behind: the session the engine put on local disk is gone.
    assert (await (await api.client.get("/api/v1/media", headers=api.headers)).json())[
        "items"
    ] == []


async def test_complete_checks_the_parts_against_s3(s3_api: Api) -> None:
    upload = await (await create(s3_api)).json()
    parts = await put_parts(s3_api, upload, data_of(2 * PART))
    claimed = [parts[0], {"PartNumber": 2, "ETag": '"0123456789abcdef0123456789abcdef"'}]
    answer = await complete(s3_api, upload, claimed)
    assert answer.status == 409
    assert (await answer.json())["missing_chunks"] == [1]
    assert (await complete(s3_api, upload, parts)).status == 200


async def test_uneven_parts_are_refused_and_the_session_stays_open(s3_api: Api) -> None:
    upload = await (await create(s3_api)).json()
    async with plain_client() as s3:
        for number, size in ((1, PART), (2, PART + 1), (3, 10)):
            url = (await (await sign(s3_api, upload, number)).json())["url"]
            async with s3.put(url, data=b"x" * size) as put:
                assert put.status == 200
    answer = await complete(s3_api, upload, None)
    assert answer.status == 400
    assert (await answer.json())["type"].endswith("/chunk-length-mismatch")
    assert (await sign(s3_api, upload, 2)).status == 200  # open: part 2 may be sent again


async def test_an_expired_direct_upload_is_aborted_in_s3(
    aiohttp_client: Any, s3_settings: Settings, s3_objects: Any, bucket: str
) -> None:
    now = [utc_now()]
    api = Api(await aiohttp_client(create_app(s3_settings, clock=lambda: now[0])), s3_settings)
    upload = await (await create(api)).json()
    await put_parts(api, upload, data_of(10))
    now[0] += timedelta(seconds=s3_settings.session_ttl + 1)
    assert await api.client.app[SERVICES].engine.expire_sessions() == 1
    assert await no_multipart_uploads(s3_objects, bucket)
    assert (await sign(api, upload, 1)).status == 410


async def test_a_grant_in_the_path_stands_in_for_the_token(s3_api: Api) -> None:
    granted = await s3_api.client.post(f"{BASE}/grant", headers=s3_api.headers)
    assert granted.status == 201
    endpoint = (await granted.json())["companion_endpoint"]
    base = "/" + endpoint.split("/", 3)[3]
    answer = await s3_api.client.post(
        f"{base}/s3/multipart", json={"filename": "granted.mp4", "type": "video/mp4"}
    )
    assert answer.status == 200
    upload = await answer.json()
    signed = await s3_api.client.get(
        f"{base}/s3/multipart/{upload['uploadId']}/1", params={"key": upload["key"]}
    )
    assert signed.status == 200
    forged = base[: -len("x")] + ("y" if base.endswith("x") else "x")
    refused = await s3_api.client.post(f"{forged}/s3/multipart", json={"filename": "a"})
    assert refused.status == 401


def test_grants_name_their_user_and_when_they_were_valid() -> None:
    grants = UploadGrants(b"s" * 32, 60)
    grant, expires = grants.issue("ålice/1", now=1000)
    assert expires == 1060
    read = grants.read(grant)
    assert read is not None and read.user_id == "ålice/1"
    assert read.fresh(now=1060) and not read.fresh(now=1061)
    at = lambda seconds: datetime.fromtimestamp(seconds, UTC)  # noqa: E731
    assert read.could_have_started(at(1000)) and read.could_have_started(at(1060))
    skew = upload_grants.CLOCK_SKEW
    assert not read.could_have_started(at(1060 + skew + 1))
    assert not read.could_have_started(at(1000 - skew - 1))
    assert UploadGrants(b"t" * 32, 60).read(grant) is None
    user, expiry, signature = grant.split(".")
    assert grants.read(f"{user}.{int(expiry) + 100}.{signature}") is None
    for junk in ("", "...", "a.b.c", "é.1.x", grant + "x"):
        assert grants.read(junk) is None


async def test_an_expired_grant_goes_on_with_the_uploads_it_could_have_started(
    aiohttp_client: Any, s3_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uppy keeps its endpoint for the whole upload, which may outlast the grant: the
    upload goes on, but the grant starts nothing new, nor opens a later upload."""
    now = [time.time()]
    monkeypatch.setattr(upload_grants, "time", SimpleNamespace(time=lambda: now[0]))
    clock = lambda: datetime.fromtimestamp(now[0], UTC)  # noqa: E731
    s3_api = Api(await aiohttp_client(create_app(s3_settings, clock=clock)), s3_settings)
    granted = await s3_api.client.post(f"{BASE}/grant", headers=s3_api.headers)
    base = "/" + (await granted.json())["companion_endpoint"].split("/", 3)[3]
    started = await (await create(s3_api, "started.mp4", base=base)).json()
    now[0] += s3_api.settings.signed_url_expiry + upload_grants.CLOCK_SKEW + 1

    later = await (await create(s3_api, "later.mp4")).json()  # with the bearer token
    assert (await create(s3_api, "new.mp4", base=base)).status == 401
    signed = {}
    for upload in (started, later):
        signed[upload["key"]] = await s3_api.client.get(
            f"{base}/s3/multipart/{upload['uploadId']}/1", params={"key": upload["key"]}
        )
    assert signed[later["key"]].status == 401
    assert signed[started["key"]].status == 200

    data = data_of(10)
    url = (await signed[started["key"]].json())["url"]
    async with plain_client() as s3, s3.put(url, data=data) as put:
        assert put.status == 200
    done = await s3_api.client.post(
        f"{base}/s3/multipart/{started['uploadId']}/complete", params={"key": started["key"]}
    )
    assert done.status == 200, await done.text()
    _, body = await fetch_media(s3_api, "started.mp4")
    assert body == data


def parts(*sizes: int) -> list[ListedPart]:
    return [ListedPart(n, size, f'"{n}"') for n, size in enumerate(sizes)]


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        (parts(), []),
        (parts(7), [(0, 7, 0)]),
        (parts(5, 5, 2), [(0, 5, 0), (1, 5, 5), (2, 2, 10)]),
        (parts(5, 5, 5), [(0, 5, 0), (1, 5, 5), (2, 5, 10)]),
        ([ListedPart(0, 5, "a"), ListedPart(2, 5, "c")], MissingChunks),
        ([ListedPart(1, 5, "b")], MissingChunks),
        (parts(5, 4, 2), ChunkLengthMismatch),
        (parts(5, 6), ChunkLengthMismatch),
        (parts(60, 50), FileTooLarge),
    ],
)
def test_parts_of_unknown_size_become_chunks(listed: list[ListedPart], expected: Any) -> None:
    if isinstance(expected, type):
        with pytest.raises(expected):
            _unplanned_chunks(listed, StorageKind.S3, max_size=100)
    else:
        chunks = _unplanned_chunks(listed, StorageKind.S3, max_size=100)
        assert [(c.number, c.size, c.start) for c in chunks] == expected


@pytest.mark.store
async def test_with_a_size_parts_are_planned_md5_checked_and_may_go_through_the_server(
    s3_api: Api,
) -> None:
    data = data_of(2 * PART + 100)
    answer = await create(s3_api, "sized.mp4", size=len(data))
    upload = await answer.json()
    assert (upload["chunk_size"], upload["total_chunks"]) == (8 * MiB, 2)
    size = upload["chunk_size"]
    first = data[:size]
    md5 = base64.b64encode(hashlib.md5(first).digest()).decode()
    wrong = await sign(s3_api, upload, 1, size=str(size + 1))
    assert wrong.status == 400
    signed = await sign(s3_api, upload, 1, size=str(size), md5=md5)
    url = (await signed.json())["url"]
    async with ClientSession() as s3:
        headers = {"Content-MD5": md5}
        async with s3.put(url, data=b"\xff" + first[1:], headers=headers) as put:
            # S3 and RGW check the bytes against the signed MD5; moto checks no Content-MD5.
            assert put.status == (400 if ON_RGW else 200)
        async with s3.put(url, data=first, headers=headers) as put:
            assert put.status == 200
    # The rest through the server, as a client cut off from the bucket sends it.
    for number in range(1, upload["total_chunks"]):
        chunk = data[number * size : (number + 1) * size]
        relayed = await s3_api.put_chunk(upload["uploadId"], number, chunk, md5_header(chunk))
        assert relayed.status == 200, await relayed.text()
    done = await complete(s3_api, upload, None)
    assert done.status == 200, await done.text()
    _, body = await fetch_media(s3_api, "sized.mp4")
    assert body == data


async def test_a_direct_upload_relayed_whole_completes_with_s3_away(
    start_api: Any, s3_settings: Settings, proxy: Any
) -> None:
    api = await start_api(s3_settings.model_copy(update={"s3_endpoint_url": proxy.url}))
    data = data_of(PART + 10)
    upload = await (await create(api, "relayed.mp4", size=len(data), chunk_size=PART)).json()
    await proxy.cut()  # S3 gone for the server too: the chunks spill to its disk
    for number in range(upload["total_chunks"]):
        chunk = data[number * PART : (number + 1) * PART]
        assert (await api.put_chunk(upload["uploadId"], number, chunk)).status == 200
    done = await complete(api, upload, None)
    assert done.status == 200, await done.text()
    info = (await done.json())["info"]
    # Every chunk on the server's disk: the media is a local one, as for the native API.
    assert (info["state"], info["storage"]) == ("ready", "local")
    _, body = await fetch_media(api, "relayed.mp4")
    assert body == data
