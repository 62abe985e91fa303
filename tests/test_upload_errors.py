"""Every 4xx of the upload and media contract, as problem+json, never a 500."""

from __future__ import annotations

import asyncio
import base64
import json
import os

import pytest

from mediagate.storage.local import LocalStore
from mediagate.storage.s3 import S3Store
from support.api import CATALOGS, MiB, assert_problem, database_url_for, make_settings
from support.raw_http import RawConnection, raw_get, request_head


@pytest.fixture(params=CATALOGS)
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Every test here runs on the SQLite catalog and on the PostgreSQL one."""
    return database_url_for(request)


async def new_session(api, size: int = 5 * MiB + 10, **extra) -> str:
    answer = await api.initiate(size=size, chunk_size=5 * MiB, **extra)
    assert answer.status == 201
    return (await answer.json())["session_id"]


async def new_session_done(api) -> str:
    """A session with all its chunks in, ready to complete."""
    sid = await new_session(api, size=2)
    assert (await api.put_chunk(sid, 0, b"ok")).status == 200
    return sid


async def test_no_token_is_401_with_a_challenge(local_api):
    answer = await local_api.client.post("/api/v1/media/upload/initiate", json={})
    await assert_problem(answer, 401, "unauthorized")
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    ["Bearer not-a-jwt", "Basic YWxpY2U6cw==", "Bearer ", "Bearer " + "e30.e30.e30"],
)
async def test_bad_tokens_are_401(local_api, authorization):
    answer = await local_api.client.get("/api/v1/media", headers={"Authorization": authorization})
    await assert_problem(answer, 401, "unauthorized")


async def test_token_signed_with_another_secret_is_401(local_api):
    from mediagate import tokens

    forged = tokens.issue(b"some-other-secret-of-sufficient-length", "alice", 60)
    answer = await local_api.client.get(
        "/api/v1/media", headers={"Authorization": f"Bearer {forged}"}
    )
    await assert_problem(answer, 401, "unauthorized")


async def test_expired_token_is_401(local_api):
    from mediagate import tokens

    secret = local_api.settings.jwt_secret.get_secret_value().encode()
    old = tokens.issue(secret, "alice", 60, now=1_000_000)
    answer = await local_api.client.get("/api/v1/media", headers={"Authorization": f"Bearer {old}"})
    await assert_problem(answer, 401, "unauthorized")


async def test_another_users_session_and_media_are_404(local_api):
    sid = await new_session(local_api)
    completed = await local_api.complete(await new_session_done(local_api))
    media_id = (await completed.json())["media_id"]
    mallory = local_api.as_user("mallory")
    await assert_problem(await mallory.status(sid), 404, "not-found")
    await assert_problem(await mallory.put_chunk(sid, 0, b"abc"), 404, "not-found")
    await assert_problem(await mallory.complete(sid), 404, "not-found")
    await assert_problem(await mallory.abort(sid), 404, "not-found")
    await assert_problem(await mallory.info(media_id), 404, "not-found")
    await assert_problem(await mallory.delete(media_id), 404, "not-found")
    assert (await local_api.info(media_id)).status == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"size": 10}, 400, "bad-request"),  # no filename
        ({"filename": "a.mp4", "size": -1}, 400, "bad-request"),
        ({"filename": "a.mp4", "size": "big"}, 400, "bad-request"),
        ({"filename": "a.mp4", "size": 10, "sha256": "xyz"}, 400, "bad-request"),
        ({"filename": "a.mp4", "size": 10, "content_type": "not a type"}, 400, "bad-request"),
        ({"filename": "a", "size": 10, "content_type": "text/plain;"}, 400, "bad-request"),
        ({"filename": "a", "size": 10, "content_type": "text/x; a=1\r\nX: 1"}, 400, "bad-request"),
        ({"filename": "a.mp4", "size": 10, "chunk_size": 0}, 400, "bad-request"),
        ({"filename": "a.mp4", "size": 10_000 * 5 * 1024**3 + 1}, 413, "file-too-large"),
        ([1, 2, 3], 400, "bad-request"),
    ],
)
async def test_bad_initiate_bodies(local_api, body, status, code):
    answer = await local_api.client.post(
        "/api/v1/media/upload/initiate", json=body, headers=local_api.headers
    )
    await assert_problem(answer, status, code)


async def test_initiate_that_is_not_json_is_400(local_api):
    answer = await local_api.client.post(
        "/api/v1/media/upload/initiate", data=b"{nope", headers=local_api.headers
    )
    await assert_problem(answer, 400, "bad-request")


async def test_oversized_json_body_is_413(local_api):
    answer = await local_api.client.post(
        "/api/v1/media/upload/initiate",
        data=b'{"filename": "' + b"a" * 200_000 + b'"}',
        headers={**local_api.headers, "Content-Type": "application/json"},
    )
    await assert_problem(answer, 413, "request-entity-too-large")


async def test_requested_chunk_size_is_adjusted_to_the_limits(local_api):
    answer = await local_api.initiate(size=100 * MiB, chunk_size=1024)
    assert (await answer.json())["chunk_size"] == 5 * MiB


@pytest.mark.parametrize(
    ("number", "status", "code"),
    [("2", 400, "chunk-out-of-range"), ("-1", 400, "bad-request"), ("x", 400, "bad-request")],
)
async def test_chunk_number_outside_the_session(local_api, number, status, code):
    sid = await new_session(local_api)
    answer = await local_api.client.post(
        f"/api/v1/media/upload/{sid}/chunk/{number}", data=b"abc", headers=local_api.headers
    )
    await assert_problem(answer, status, code)


async def test_wrong_chunk_length_is_400_and_says_the_expected_size(local_api):
    sid = await new_session(local_api)
    body = await assert_problem(
        await local_api.put_chunk(sid, 1, b"too short"), 400, "chunk-length-mismatch"
    )
    assert body["expected_size"] == 10


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-MD5": "not base64!"},
        {"Content-MD5": base64.b64encode(b"short").decode()},
        {"X-Chunk-SHA256": "abc"},
    ],
)
async def test_malformed_digest_headers_are_400(local_api, headers):
    sid = await new_session(local_api)
    answer = await local_api.put_chunk(sid, 1, b"0123456789", headers)
    await assert_problem(answer, 400, "bad-request")


async def test_unknown_session_is_404(local_api):
    await assert_problem(await local_api.status("no-such-session"), 404, "not-found")
    await assert_problem(await local_api.put_chunk("no-such-session", 0, b"x"), 404, "not-found")


async def test_complete_with_missing_chunks_is_409_listing_them(local_api):
    sid = await new_session(local_api, size=3 * 5 * MiB)
    assert (await local_api.put_chunk(sid, 1, b"\0" * 5 * MiB)).status == 200
    body = await assert_problem(await local_api.complete(sid), 409, "missing-chunks")
    assert body["missing_chunks"] == [0, 2]


async def test_a_complete_whose_chunks_are_gone_is_409_and_open_again(local_api, local_settings):
    """The staging file removed behind the server's back (an operator's clean-up): no
    session finalizing for ever, no media under an id never handed out, and the reason."""
    sid = await new_session(local_api, size=5 * MiB + 10)
    assert (await local_api.put_chunk(sid, 0, b"a" * 5 * MiB)).status == 200
    assert (await local_api.put_chunk(sid, 1, b"b" * 10)).status == 200
    for staged in (local_settings.data_dir / ".staging").iterdir():
        if staged.is_file():
            staged.unlink()

    answer = await local_api.complete(sid)
    problem = await assert_problem(answer, 409, "upload-failed")
    assert str(local_settings.data_dir.resolve()) not in await answer.text()
    status = await (await local_api.status(sid)).json()
    assert status["state"] == "open" and status["received"] == []
    assert status["last_error"] == problem["detail"] and "sent again" in problem["detail"]
    listed = await (await local_api.client.get("/api/v1/media", headers=local_api.headers)).json()
    assert listed["items"] == []
    assert (await local_api.put_chunk(sid, 0, b"a" * 5 * MiB)).status == 200
    assert (await local_api.put_chunk(sid, 1, b"b" * 10)).status == 200
    assert (await local_api.complete(sid)).status == 201


async def test_chunks_after_complete_are_409_and_abort_too(local_api):
    sid = await new_session_done(local_api)
    assert (await local_api.complete(sid)).status == 201
    await assert_problem(await local_api.put_chunk(sid, 0, b"ok"), 409, "session-not-open")
    await assert_problem(await local_api.abort(sid), 409, "session-not-open")


TUS = {"Tus-Resumable": "1.0.0"}


async def new_tus_upload(api, **headers: str) -> str:
    answer = await api.client.post("/api/v1/tus", headers={**api.headers, **TUS, **headers})
    assert answer.status == 201
    return answer.headers["Location"].rsplit("/", 1)[-1]


async def test_native_chunks_and_complete_on_a_tus_upload_are_409(local_api):
    """A deferred-length tus upload given a native chunk past its later length used to
    stay finalizing for ever: the native API may not touch a tus upload's bytes."""
    sid = await new_tus_upload(local_api, **{"Upload-Defer-Length": "1"})
    for number in (0, 1):
        refused = await local_api.put_chunk(sid, number, b"\0" * local_api.settings.chunk_size)
        problem = await assert_problem(refused, 409, "wrong-protocol")
        assert f"/api/v1/tus/{sid}" in problem["detail"]
    await assert_problem(await local_api.complete(sid), 409, "wrong-protocol")
    await assert_problem(await local_api.abort(sid), 409, "wrong-protocol")
    status = await (await local_api.status(sid)).json()
    assert status["state"] == "open" and status["received"] == []

    patched = await local_api.client.patch(
        f"/api/v1/tus/{sid}",
        data=b"abc",
        headers={
            **local_api.headers,
            **TUS,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "0",
            "Upload-Length": "3",
        },
    )
    assert patched.status == 204
    status = await (await local_api.status(sid)).json()
    assert status["state"] == "completed"
    listed = await (await local_api.client.get("/api/v1/media", headers=local_api.headers)).json()
    [media] = listed["items"]
    assert media["state"] == "ready" and media["size"] == 3
    await assert_problem(await local_api.complete(sid), 409, "wrong-protocol")


async def test_unknown_route_and_method_are_problems(local_api):
    await assert_problem(await local_api.client.get("/nope"), 404, "not-found")
    answer = await local_api.client.put("/api/v1/media/upload/initiate")
    body = await assert_problem(answer, 405, "method-not-allowed")
    assert "POST" in answer.headers["Allow"]
    assert body["title"] == "Method Not Allowed"


@pytest.mark.parametrize("method", ["GET", "DELETE", "OPTIONS"])
async def test_initiate_allows_post_only(local_api, method):
    """`initiate` is no session id: GET or DELETE of it is 405, not a session lookup."""
    answer = await local_api.client.request(
        method, "/api/v1/media/upload/initiate", headers=local_api.headers
    )
    await assert_problem(answer, 405, "method-not-allowed")
    assert answer.headers["Allow"] == "POST"


async def test_bad_list_parameters_are_400(local_api):
    for query in ("limit=0", "limit=abc", "limit=1000", "cursor=%%%"):
        answer = await local_api.client.get(f"/api/v1/media?{query}", headers=local_api.headers)
        await assert_problem(answer, 400, "bad-request")


async def test_filenames_cannot_leave_the_data_directory(local_api, local_settings):
    sid = await new_session(local_api, size=2, filename="../../../etc/passwd\x00.mp4")
    assert (await local_api.put_chunk(sid, 0, b"ok")).status == 200
    info = (await (await local_api.complete(sid)).json())["info"]
    assert info["filename"] == "passwd.mp4"
    root = local_settings.data_dir.resolve()
    assert [p for p in root.rglob("passwd*") if not p.resolve().is_relative_to(root)] == []
    assert len(list(root.rglob("passwd.mp4"))) == 1


async def test_declared_size_above_max_upload_size_is_413(start_api, local_settings):
    api = await start_api(local_settings.model_copy(update={"max_upload_size": 1000}))
    problem = await assert_problem(await api.initiate(size=1001), 413, "file-too-large")
    assert problem["max_size"] == 1000
    assert (await api.initiate(size=1000)).status == 201


async def test_open_sessions_beyond_the_per_user_cap_are_429(start_api, local_settings):
    api = await start_api(local_settings.model_copy(update={"max_open_sessions_per_user": 2}))
    first = await new_session(api, size=2)
    await new_session(api, size=2)
    refused = await api.initiate(size=2)
    problem = await assert_problem(refused, 429, "too-many-sessions")
    assert problem["limit"] == 2 and int(refused.headers["Retry-After"]) > 0
    assert (await api.as_user("bob").initiate(size=2)).status == 201  # a cap per user
    assert (await api.abort(first)).status == 204
    third = await new_session(api, size=2)
    assert (await api.put_chunk(third, 0, b"ok")).status == 200
    assert (await api.complete(third)).status == 201  # completed: no longer open
    assert (await api.initiate(size=2)).status == 201


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'\xff\xfe{"filename": "a"}', "application/json"),  # not UTF-8
        (b'{"filename": "a", "size": 1}', "application/json; charset=bogus"),
        (b"[" * 50_000, "application/json"),  # nests deeper than the parser's stack
        (b'{"filename": "a", "size": ' + b"9" * 5000 + b"}", "application/json"),
    ],
    ids=["not-utf8", "unknown-charset", "deep-nesting", "5000-digit-number"],
)
async def test_initiate_body_that_cannot_be_decoded_is_400(local_api, body, content_type):
    answer = await local_api.client.post(
        "/api/v1/media/upload/initiate",
        data=body,
        headers={**local_api.headers, "Content-Type": content_type},
    )
    await assert_problem(answer, 400, "bad-request")


@pytest.mark.parametrize("field", ["size", "chunk_size"])
@pytest.mark.parametrize("value", [True, 10.0, "10"])
async def test_initiate_numbers_of_the_wrong_json_type_are_400(local_api, field, value):
    body = {"filename": "a.mp4", "size": 10, field: value}
    answer = await local_api.client.post(
        "/api/v1/media/upload/initiate", json=body, headers=local_api.headers
    )
    problem = await assert_problem(answer, 400, "bad-request")
    assert [error["field"] for error in problem["errors"]] == [field]


async def test_media_list_limit_that_is_a_digit_but_no_number_is_400(local_api):
    # "²".isdigit() is true, int("²") raises
    answer = await local_api.client.get("/api/v1/media?limit=%C2%B2", headers=local_api.headers)
    await assert_problem(answer, 400, "bad-request")


@pytest.mark.parametrize("created_at", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
async def test_media_list_cursor_with_a_date_out_of_range_is_400(local_api, created_at):
    cursor = base64.urlsafe_b64encode(json.dumps([created_at, "x"]).encode()).decode()
    answer = await local_api.client.get(
        "/api/v1/media", params={"cursor": cursor}, headers=local_api.headers
    )
    await assert_problem(answer, 400, "bad-request")


async def test_bearer_token_that_is_not_utf8_is_401(local_api):
    status, body = await raw_get(local_api, "/api/v1/media", b"Authorization: Bearer \xff\xfe\r\n")
    assert status == 401, body


async def _slow_body(data: bytes, release: asyncio.Event):
    yield data[: len(data) // 2]
    await release.wait()
    yield data[len(data) // 2 :]


async def test_abort_while_a_chunk_is_arriving_answers_the_chunk_4xx(local_api, tmp_path):
    data = os.urandom(1000)
    answer = await local_api.initiate(filename="a.bin", size=len(data))
    session_id = (await answer.json())["session_id"]
    release = asyncio.Event()
    chunk = asyncio.create_task(
        local_api.client.post(
            f"/api/v1/media/upload/{session_id}/chunk/0",
            data=_slow_body(data, release),
            headers=local_api.headers,
        )
    )
    await asyncio.sleep(0.3)  # the first half is in, the server waits for the rest
    assert (await local_api.abort(session_id)).status == 204
    release.set()
    await assert_problem(await chunk, 404, "not-found")  # was a 500 (FOREIGN KEY)
    assert list((tmp_path / "data" / ".staging").iterdir()) == []


def _hold_complete_upload(monkeypatch, store_class) -> tuple[asyncio.Event, asyncio.Event]:
    """Make `store_class.complete_upload` stop until released: complete's unlucky moment."""
    reached, release = asyncio.Event(), asyncio.Event()
    original = store_class.complete_upload

    async def held(self, *args, **kwargs):
        reached.set()
        await release.wait()
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(store_class, "complete_upload", held)
    return reached, release


async def test_abort_racing_a_local_complete_is_409_and_complete_wins(local_api, monkeypatch):
    await _abort_racing_complete(local_api, monkeypatch, LocalStore)


async def test_abort_racing_an_s3_complete_is_409_and_complete_wins(s3_api, monkeypatch):
    await _abort_racing_complete(s3_api, monkeypatch, S3Store)


async def _abort_racing_complete(api, monkeypatch, store_class) -> None:
    data = os.urandom(6 * MiB)
    answer = await api.initiate(filename="a.bin", size=len(data), chunk_size=5 * MiB)
    session_id = (await answer.json())["session_id"]
    assert (await api.put_chunk(session_id, 0, data[: 5 * MiB])).status == 200
    assert (await api.put_chunk(session_id, 1, data[5 * MiB :])).status == 200
    reached, release = _hold_complete_upload(monkeypatch, store_class)
    complete = asyncio.create_task(api.complete(session_id))
    await asyncio.wait_for(reached.wait(), 10)
    # Before: 204, the upload discarded under complete: a local complete then
    # answered 404 (naming a server path), an S3 one 202 "finalizing" for a
    # media that could never finish, with the S3 breaker tripped.
    await assert_problem(await api.abort(session_id), 409, "session-not-open")
    release.set()
    completed = await complete
    assert completed.status == 201, await completed.text()
    media_id = (await completed.json())["media_id"]
    streamed = await api.client.get(f"/api/v1/media/stream/{media_id}", headers=api.headers)
    if streamed.status == 302:  # S3: follow the presigned link
        streamed = await api.client.get(streamed.headers["Location"])
    assert await streamed.read() == data


async def test_a_json_body_that_stalls_is_408(start_api, tmp_path):
    api = await start_api(make_settings(tmp_path / "data", body_read_timeout=0.3))
    connection = await RawConnection.open(api.client)
    head = request_head(
        "POST",
        "/api/v1/media/upload/initiate",
        {**api.headers, "Content-Type": "application/json"},
        content_length=40,
    )
    await connection.send(head, b'{"filename": "a.mp4", ')
    status, problem = await connection.answer(seconds=5)
    connection.close()
    assert (status, problem["type"].rsplit("/", 1)[1]) == (408, "body-timeout")
