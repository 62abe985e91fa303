"""CORS on the API for MEDIAGATE_CORS_ORIGINS: preflights, and every answer marked."""

from __future__ import annotations

import pytest
from aiohttp import web
from yarl import URL

from mediagate.web.cors import NATIVE_API, Cors

APP = "https://app.example"
PREFLIGHT = {
    "Origin": APP,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, x-chunk-sha256",
}


@pytest.fixture
async def cors_api(start_api, local_settings):
    return await start_api(local_settings.model_copy(update={"cors_origins": [APP]}))


def listed(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


async def test_a_preflight_from_an_allowed_origin_is_answered(cors_api):
    answer = await cors_api.client.options("/api/v1/media/upload/initiate", headers=PREFLIGHT)
    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Origin"] == APP
    methods = listed(answer.headers["Access-Control-Allow-Methods"])
    assert {"get", "head", "post", "delete"} <= methods
    assert {
        "authorization",
        "content-type",
        "content-md5",
        "x-chunk-sha256",
        "x-request-id",
        "range",
        "if-range",
        "if-none-match",
        "if-match",
        "if-modified-since",
        "if-unmodified-since",
    } <= listed(answer.headers["Access-Control-Allow-Headers"])
    assert int(answer.headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in answer.headers
    assert "Origin" in answer.headers["Vary"]


async def test_a_preflight_from_another_origin_is_refused(cors_api):
    headers = {**PREFLIGHT, "Origin": "https://evil.example"}
    answer = await cors_api.client.options("/api/v1/media/upload/initiate", headers=headers)
    assert answer.status == 403
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert "Access-Control-Allow-Origin" not in answer.headers


async def test_answers_and_errors_carry_the_origin_and_exposed_headers(cors_api):
    session = await (await cors_api.initiate(filename="a.mp4", size=4)).json()
    await cors_api.put_chunk(session["session_id"], 0, b"abcd")
    media = await (await cors_api.complete(session["session_id"])).json()
    origin = {"Origin": APP}
    answers = [
        await cors_api.client.get("/api/v1/media", headers={**cors_api.headers, **origin}),
        await cors_api.client.get("/api/v1/media", headers=origin),  # 401
        await cors_api.client.get(
            URL(media["stream_url"]).path_qs, headers={**origin, "Range": "bytes=1-2"}
        ),  # a file response, prepared by the handler itself
    ]
    assert [answer.status for answer in answers] == [200, 401, 206]
    for answer in answers:
        assert answer.headers["Access-Control-Allow-Origin"] == APP
        exposed = listed(answer.headers["Access-Control-Expose-Headers"])
        assert {
            "etag",
            "content-range",
            "content-length",
            "retry-after",
            "x-request-id",
            "location",
            "accept-ranges",
        } <= exposed
        assert "Origin" in answer.headers["Vary"]
        assert "Access-Control-Allow-Credentials" not in answer.headers


async def test_other_origins_and_paths_get_no_cors_headers(cors_api):
    other = await cors_api.client.get("/api/v1/media", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Origin" in other.headers["Vary"]  # a cache must not serve it to APP
    health = await cors_api.client.get("/healthz", headers={"Origin": APP})
    assert "Access-Control-Allow-Origin" not in health.headers


async def test_any_origin_with_a_star_and_never_credentials(start_api, local_settings):
    api = await start_api(local_settings.model_copy(update={"cors_origins": ["*"]}))
    preflight = await api.client.options("/api/v1/media", headers=PREFLIGHT)
    assert preflight.status == 204
    listing = await api.client.get(
        "/api/v1/media", headers={**api.headers, "Origin": "https://any.example"}
    )
    for answer in (preflight, listing):
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in answer.headers


async def test_without_cors_origins_there_is_no_cors(local_api):
    answer = await local_api.client.options("/api/v1/media", headers=PREFLIGHT)
    assert answer.status == 405
    assert "Access-Control-Allow-Origin" not in answer.headers


async def no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def test_another_route_family_extends_the_rule_for_its_prefix(aiohttp_client):
    """How tus adds PATCH and its Upload-* headers on its own paths, and only there."""
    tus = NATIVE_API.extended(
        "/api/v1/tus",
        methods={"PATCH"},
        request_headers={"Upload-Offset", "Tus-Resumable"},
        exposed_headers={"Upload-Offset"},
    )
    cors = Cors([APP], [NATIVE_API, tus])
    app = web.Application(middlewares=[cors.middleware])
    app.on_response_prepare.append(cors.on_response_prepare)
    app.router.add_route("PATCH", "/api/v1/tus/{id}", no_content)
    client = await aiohttp_client(app)

    preflight = await client.options(
        "/api/v1/tus/abc", headers={**PREFLIGHT, "Access-Control-Request-Method": "PATCH"}
    )
    assert "patch" in listed(preflight.headers["Access-Control-Allow-Methods"])
    assert {"upload-offset", "authorization"} <= listed(
        preflight.headers["Access-Control-Allow-Headers"]
    )
    patched = await client.patch("/api/v1/tus/abc", headers={"Origin": APP})
    assert "upload-offset" in listed(patched.headers["Access-Control-Expose-Headers"])
    native = await client.options("/api/v1/media", headers=PREFLIGHT)
    assert "patch" not in listed(native.headers["Access-Control-Allow-Methods"])
