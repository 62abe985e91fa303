"""A test identity provider: keys generated with `cryptography`, a JWKS served on loopback
by its own aiohttp app (the test changes its key set and counts its fetches)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from support.api import TOKEN_LIFETIME

ISSUER = "https://id.example.com/"
AUDIENCE = "mediagate"


@dataclass
class Key:
    kid: str
    algorithm: str
    private: Any

    @classmethod
    def rsa(cls, kid: str) -> Key:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> Key:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def ed25519(cls, kid: str) -> Key:
        return cls(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        exporter = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}
        document = exporter[self.algorithm].to_jwk(public, as_dict=True)
        return {**document, "kid": self.kid, "use": "sig"}

    def sign(self, **overrides: Any) -> str:
        now = int(time.time())
        expiry = now + TOKEN_LIFETIME
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": expiry}
        claims.update(overrides)
        claims = {name: value for name, value in claims.items() if value is not None}
        return jwt.encode(claims, self.private, self.algorithm, headers={"kid": self.kid})


@dataclass
class IdentityServer:
    """A JWKS endpoint whose key set the test changes, counting its fetches."""

    keys: list[Key]
    hits: int = 0
    down: bool = False
    url: str = ""
    extra: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    async def start(cls, aiohttp_server: Any, keys: list[Key]) -> IdentityServer:
        server = cls(keys)
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", server.jwks)
        running = await aiohttp_server(app)
        server.url = str(running.make_url("/.well-known/jwks.json"))
        return server

    async def jwks(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.down:
            return web.Response(status=502, text="bad gateway")
        return web.json_response({"keys": [key.jwk() for key in self.keys] + self.extra})
