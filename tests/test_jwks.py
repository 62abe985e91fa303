"""The identity provider's tokens (MEDIAGATE_JWT_JWKS_URL): a real JWKS server on loopback,
keys generated here, tokens sent to a real mediagate app over HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from yarl import URL

from mediagate import tokens
from mediagate.config import SettingsError, load_settings
from mediagate.jwks import MAX_AGE, MAX_DOCUMENT_BYTES, IdentityKeys, KeySetError, parse_key_set
from support.api import TOKEN_LIFETIME, Api, make_settings
from support.identity_provider import AUDIENCE, ISSUER, IdentityServer, Key
from support.server_process import ServerProcess

RSA_KEY, EC_KEY, ED_KEY = Key.rsa("rsa-1"), Key.ec("ec-1"), Key.ed25519("ed-1")


@pytest.fixture
async def identity(aiohttp_server) -> IdentityServer:
    return await IdentityServer.start(aiohttp_server, [RSA_KEY, EC_KEY, ED_KEY])


@pytest.fixture
def identity_api(start_api, tmp_path, identity):
    async def start(**overrides: Any) -> Api:
        overrides = {
            "jwt_jwks_url": identity.url,
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            "jwt_jwks_refetch_interval": 60,
            **overrides,
        }
        return await start_api(make_settings(tmp_path / "data", **overrides))

    return start


async def get_media(api: Api, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    answer = await api.client.get("/api/v1/media", headers=headers)
    body = await answer.json(content_type=None)
    return answer.status, body


def hs256_with(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """An HS256 token signed by hand: PyJWT refuses to take a public key as an HMAC secret."""

    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', **header})}.{part(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


@pytest.mark.parametrize("key", [RSA_KEY, EC_KEY, ED_KEY], ids=lambda key: key.algorithm)
async def test_the_identity_providers_tokens_are_taken(identity_api, key):
    api = await identity_api()
    status, body = await get_media(api, key.sign(sub="bob@example.com"))
    assert status == 200, body


async def test_an_upload_belongs_to_the_providers_user_and_its_stream_link_plays(identity_api):
    api = await identity_api(jwt_user_claim="email")
    api.headers = {"Authorization": f"Bearer {EC_KEY.sign(email='carol@example.com')}"}
    data = b"0123456789" * 100
    session = await (await api.initiate(filename="clip.mp4", size=len(data))).json()
    assert (await api.put_chunk(session["session_id"], 0, data)).status == 200
    media = await (await api.complete(session["session_id"])).json()

    listing = await (await api.client.get("/api/v1/media", headers=api.headers)).json()
    assert [item["media_id"] for item in listing["items"]] == [media["media_id"]]
    theirs = api.as_user("carol@example.com")  # mediagate's own token for the same user id
    assert (await theirs.info(media["media_id"])).status == 200
    played = await api.client.get(URL(media["stream_url"]).path_qs)  # no token at all
    assert (played.status, await played.read()) == (200, data)


NOW = int(time.time())


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (RSA_KEY.sign(iss="https://evil.example.com/"), tokens.WRONG_ISSUER),
        (RSA_KEY.sign(iss=None), tokens.WRONG_ISSUER),
        (EC_KEY.sign(aud="another-app"), tokens.WRONG_AUDIENCE),
        (ED_KEY.sign(iat=NOW - 7200, exp=NOW - 3600), tokens.EXPIRED),
        (RSA_KEY.sign(nbf=NOW + 3600), tokens.NOT_YET_VALID),
        (RSA_KEY.sign(sub="../etc"), tokens.USER_ID),
        (RSA_KEY.sign(sub="alice\n"), tokens.USER_ID),
        (RSA_KEY.sign(sub=42), tokens.USER_ID),
        (RSA_KEY.sign(sub=None), tokens.USER_ID),
        (Key("rsa-1", "RS256", Key.rsa("x").private).sign(), tokens.BAD_SIGNATURE),
        (Key.rsa("rsa-unknown").sign(), tokens.UNKNOWN_KEY),
        (jwt.encode({"sub": "alice"}, Key.rsa("x").private, "RS256"), tokens.UNKNOWN_KEY),
        (
            jwt.encode({"sub": "alice"}, None, "none", headers={"kid": "rsa-1"}),
            tokens.WRONG_ALGORITHM,
        ),
        (
            jwt.encode({"sub": "alice"}, RSA_KEY.private, "RS512", headers={"kid": "rsa-1"}),
            tokens.WRONG_ALGORITHM,
        ),
        (  # the algorithm-confusion attack: the public key as an HMAC secret
            hs256_with(
                RSA_KEY.private.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
                {"kid": "rsa-1"},
                {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": NOW + TOKEN_LIFETIME},
            ),
            tokens.WRONG_ALGORITHM,
        ),
        (  # the same, naming no key: checked against mediagate's own secret
            hs256_with(
                json.dumps(RSA_KEY.jwk()).encode(),
                {},
                {"sub": "alice", "exp": NOW + TOKEN_LIFETIME},
            ),
            tokens.BAD_SIGNATURE,
        ),
    ],
    ids=[
        "wrong-issuer",
        "no-issuer",
        "wrong-audience",
        "expired",
        "not-yet-valid",
        "path-user-id",
        "newline-user-id",
        "number-user-id",
        "no-user-id",
        "forged-signature",
        "unknown-kid",
        "no-kid",
        "alg-none",
        "rs512",
        "hs256-with-public-key",
        "hs256-with-jwk-no-kid",
    ],
)
async def test_a_refused_provider_token_is_a_401_that_says_why(identity_api, token, reason):
    api = await identity_api()
    status, problem = await get_media(api, token)
    assert (status, problem.get("reason")) == (401, reason), problem
    assert problem["type"].endswith("/unauthorized")
    assert problem["detail"] and "Traceback" not in problem["detail"]


async def test_a_key_rotation_needs_no_restart(identity_api, identity):
    api = await identity_api(jwt_jwks_refetch_interval=0.5)
    assert (await get_media(api, RSA_KEY.sign()))[0] == 200

    rotated = Key.rsa("rsa-2")
    identity.keys = [rotated, EC_KEY]
    await asyncio.sleep(0.6)  # the refetch interval since the last fetch
    assert (await get_media(api, rotated.sign()))[0] == 200
    assert identity.hits == 2
    status, problem = await get_media(api, RSA_KEY.sign())  # the retired key is gone
    assert (status, problem["reason"]) == (401, tokens.UNKNOWN_KEY)


async def test_tokens_with_made_up_key_ids_fetch_the_key_set_once(identity_api, identity):
    api = await identity_api(jwt_jwks_refetch_interval=60)
    made_up = [Key.rsa(f"kid-{uuid.uuid4()}") for _ in range(3)]
    answers = await asyncio.gather(*(get_media(api, made_up[n % 3].sign()) for n in range(30)))

    assert {(status, problem["reason"]) for status, problem in answers} == {
        (401, tokens.UNKNOWN_KEY)
    }
    assert identity.hits == 1
    assert (await get_media(api, EC_KEY.sign()))[0] == 200  # the keys it did fetch serve
    assert identity.hits == 1


async def test_mediagate_s_own_tokens_work_beside_the_provider_s(identity_api, identity):
    api = await identity_api()
    assert (await get_media(api, tokens.issue(tokens.load_secret(api.settings), "dave", 60)))[
        0
    ] == 200
    assert (await get_media(api, ED_KEY.sign()))[0] == 200
    assert identity.hits == 1  # our own token fetched nothing


async def test_an_unreachable_identity_provider_is_a_503_not_a_refusal(identity_api, identity):
    identity.down = True
    api = await identity_api(jwt_jwks_refetch_interval=0.5)
    answer = await api.client.get(
        "/api/v1/media", headers={"Authorization": f"Bearer {RSA_KEY.sign()}"}
    )
    problem = await answer.json(content_type=None)
    assert answer.status == 503, problem
    assert problem["type"].endswith("/identity-provider-unavailable")
    assert "identity provider" in problem["detail"] and identity.url not in problem["detail"]
    assert answer.headers["Retry-After"]
    own = tokens.issue(tokens.load_secret(api.settings), "dave", 60)
    assert (await get_media(api, own))[0] == 200  # our own tokens need no provider

    identity.down = False
    await asyncio.sleep(0.6)
    assert (await get_media(api, RSA_KEY.sign()))[0] == 200


async def test_keys_already_held_outlive_a_provider_outage(identity_api, identity):
    api = await identity_api(jwt_jwks_refetch_interval=0.5)
    assert (await get_media(api, RSA_KEY.sign()))[0] == 200
    identity.down = True
    await asyncio.sleep(0.6)
    assert (await get_media(api, Key.rsa("rsa-new").sign()))[0] == 503
    assert (await get_media(api, RSA_KEY.sign()))[0] == 200


async def test_provider_tokens_are_refused_when_no_provider_is_set_up(local_api):
    status, problem = await get_media(local_api, RSA_KEY.sign())
    assert (status, problem["reason"]) == (401, tokens.WRONG_ALGORITHM)
    assert "no identity provider" in problem["detail"]


@pytest.mark.parametrize(
    ("document", "kids"),
    [
        ({"keys": [RSA_KEY.jwk(), EC_KEY.jwk(), ED_KEY.jwk()]}, {"rsa-1", "ec-1", "ed-1"}),
        ({"keys": [{**RSA_KEY.jwk(), "use": "enc"}, EC_KEY.jwk()]}, {"ec-1"}),
        ({"keys": [{**RSA_KEY.jwk(), "kid": None}, EC_KEY.jwk()]}, {"ec-1"}),
        ({"keys": [{**RSA_KEY.jwk(), "alg": "RS512"}, EC_KEY.jwk()]}, {"ec-1"}),
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}, EC_KEY.jwk()]}, {"ec-1"}),
        ({"keys": ["junk", {"kty": "nope", "kid": "n"}, ED_KEY.jwk()]}, {"ed-1"}),
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}, KeySetError),
        ({"keys": []}, KeySetError),
        ({"nokeys": []}, KeySetError),
        ([], KeySetError),
    ],
)
def test_only_asymmetric_signing_keys_with_a_kid_are_kept(document, kids):
    if kids is KeySetError:
        with pytest.raises(KeySetError):
            parse_key_set(document)
    else:
        assert set(parse_key_set(document)) == kids


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"jwt_issuer": ISSUER}, "MEDIAGATE_JWT_ISSUER: it is checked on the identity provider"),
        ({"jwt_audience": "x"}, "MEDIAGATE_JWT_AUDIENCE: it is checked on the identity provider"),
        ({"jwt_jwks_url": "id.example.com/jwks"}, "MEDIAGATE_JWT_JWKS_URL='id.example.com/jwks'"),
        ({"jwt_user_claim": ""}, "MEDIAGATE_JWT_USER_CLAIM=''"),
    ],
)
def test_identity_settings_that_cannot_work_stop_the_start(tmp_path, overrides, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        load_settings(_env_file=None, data_dir=tmp_path, **overrides)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_key_the_provider_removed_stops_working_once_the_set_is_old(identity):
    clock = Clock()
    keys = IdentityKeys(identity.url, refetch_interval=30, clock=clock)
    await keys.ensure("rsa-1")
    identity.keys = [EC_KEY]  # rsa-1 withdrawn (leaked, say)

    clock.now += MAX_AGE - 1
    await keys.ensure("rsa-1")
    assert "rsa-1" in keys.keys and identity.hits == 1
    clock.now += 1
    await keys.ensure("rsa-1")
    assert set(keys.keys) == {"ec-1"} and identity.hits == 2


async def hang(request: web.Request) -> web.Response:
    await asyncio.sleep(30)
    return web.Response()


def answers(response: web.Response) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return response

    return handler


@pytest.mark.parametrize(
    "answer",
    [
        answers(web.Response(status=404)),
        answers(web.Response(text="<html>sign in</html>", content_type="text/html")),
        answers(web.json_response({"keys": [{"kty": "oct", "k": "c2Vj", "kid": "h"}]})),
        answers(web.Response(body=b" " * MAX_DOCUMENT_BYTES + b"{}")),
        answers(web.Response(body=b"[" * 100_000 + b"]" * 100_000)),
        hang,
    ],
    ids=["404", "html", "no-usable-key", "oversized", "deeply-nested", "hangs"],
)
async def test_a_key_set_that_cannot_be_had_keeps_the_keys_held(aiohttp_server, answer):
    serving = [web.json_response({"keys": [RSA_KEY.jwk()]}), None]

    async def jwks(request: web.Request) -> web.Response:
        first = serving.pop(0)
        return first if first is not None else await answer(request)

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    provider = await aiohttp_server(app)
    keys = IdentityKeys(str(provider.make_url("/jwks")), refetch_interval=0.01, timeout=0.5)
    await keys.ensure("rsa-1")
    assert set(keys.keys) == {"rsa-1"} and not keys.unavailable

    await asyncio.sleep(0.02)
    started = time.monotonic()
    await keys.ensure("rsa-2")
    assert time.monotonic() - started < 10
    assert keys.unavailable
    assert set(keys.keys) == {"rsa-1"}


async def test_a_served_process_takes_the_provider_s_tokens_from_its_environment(
    identity, tmp_path
):
    server = ServerProcess(
        tmp_path / "data",
        {
            "MEDIAGATE_JWT_JWKS_URL": identity.url,
            "MEDIAGATE_JWT_ISSUER": ISSUER,
            "MEDIAGATE_JWT_AUDIENCE": AUDIENCE,
            "MEDIAGATE_JWT_USER_CLAIM": "email",
        },
        log=tmp_path / "server.log",
    )
    await server.start()
    try:
        async with aiohttp.ClientSession() as client:
            for token, status in [
                (ED_KEY.sign(email="erin@example.com"), 200),
                (ED_KEY.sign(email="erin@example.com", aud="elsewhere"), 401),
            ]:
                headers = {"Authorization": f"Bearer {token}"}
                async with client.get(f"{server.base}/api/v1/media", headers=headers) as answer:
                    assert answer.status == status, await answer.text()
    finally:
        await server.stop()
    lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()]
    started = [line for line in lines if line.get("event") == "server.started"]
    assert [line["identity_provider"] for line in started] == [identity.url]


async def test_a_large_key_set_is_read_whole(aiohttp_server):
    padding = [{"kty": "RSA", "kid": f"junk-{n}", "n": "x" * 1000, "e": "AQAB"} for n in range(400)]
    document = json.dumps({"keys": [*padding, EC_KEY.jwk()]})
    app = web.Application()
    app.router.add_get("/jwks", answers(web.Response(text=document)))
    provider = await aiohttp_server(app)
    keys = IdentityKeys(str(provider.make_url("/jwks")), refetch_interval=30)
    await keys.ensure("ec-1")
    assert "ec-1" in keys.keys and not keys.unavailable


async def test_a_request_that_gives_up_waiting_does_not_cancel_the_fetch(aiohttp_server):
    hits = []

    async def slow_jwks(request: web.Request) -> web.Response:
        hits.append(1)
        await asyncio.sleep(0.3)
        return web.json_response({"keys": [RSA_KEY.jwk()]})

    app = web.Application()
    app.router.add_get("/jwks", slow_jwks)
    provider = await aiohttp_server(app)
    keys = IdentityKeys(str(provider.make_url("/jwks")), refetch_interval=60)

    first = asyncio.create_task(keys.ensure("rsa-1"))
    await asyncio.sleep(0.1)  # its fetch is under way
    first.cancel()
    await keys.ensure("rsa-1")  # waits for that same fetch

    assert "rsa-1" in keys.keys and len(hits) == 1
    await keys.close()
