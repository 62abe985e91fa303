"""Every 4xx of the upload and media contract, as problem+json, never a 500."""

from __future__ import annotations

import base64

import pytest

from conftest import CATALOGS, MiB, database_url_for


@pytest.fixture(params=CATALOGS)
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Every test here runs on the SQLite catalog and on the PostgreSQL one."""
    return database_url_for(request)


PROBLEM = "application/problem+json"


async def new_session(api, size: int = 5 * MiB + 10, **extra) -> str:
    answer = await api.initiate(size=size, chunk_size=5 * MiB, **extra)
    assert answer.status == 201
    return (await answer.json())["session_id"]


async def new_session_done(api) -> str:
    """A session with all its chunks in, ready to complete."""
    sid = await new_session(api, size=2)
    assert (await api.put_chunk(sid, 0, b"ok")).status == 200
    return sid


async def assert_problem(answer, status: int, code: str) -> dict:
    assert answer.status == status, await answer.text()
    assert answer.headers["Content-Type"].startswith(PROBLEM)
    body = await answer.json()
    assert body["status"] == status
    assert body["type"].endswith(f"/{code}")
    assert body["title"] and body["detail"]
    assert answer.headers["X-Request-ID"] == body["request_id"]
    return body


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


async def test_chunks_after_complete_are_409_and_abort_too(local_api):
    sid = await new_session_done(local_api)
    assert (await local_api.complete(sid)).status == 201
    await assert_problem(await local_api.put_chunk(sid, 0, b"ok"), 409, "session-not-open")
    await assert_problem(await local_api.abort(sid), 409, "session-not-open")


async def test_unknown_route_and_method_are_problems(local_api):
    await assert_problem(await local_api.client.get("/nope"), 404, "not-found")
    answer = await local_api.client.put("/api/v1/media/upload/initiate")
    body = await assert_problem(answer, 405, "method-not-allowed")
    assert "POST" in answer.headers["Allow"]
    assert body["title"] == "Method Not Allowed"


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


async def test_a_problem_never_shows_the_servers_paths(local_api, local_settings):
    sid = await new_session_done(local_api)
    for staged in (local_settings.data_dir / ".staging").iterdir():
        staged.unlink()  # the staging file lost (an operator's clean-up, a bad disk)
    answer = await local_api.complete(sid)
    assert answer.status == 404
    assert str(local_settings.data_dir.resolve()) not in await answer.text()
