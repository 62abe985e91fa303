"""A small application in front of mediagate: the worked example of docs/integration.md.

It owns its users and does three things for mediagate:

- signs its users in with its own key: `POST /login` mints an ES256 token that
  mediagate checks against the key set published at `GET /.well-known/jwks.json`;
- answers mediagate's pre-create hook (`POST /hooks/pre-create`): an upload that would
  take a user past the quota is refused, with a message the user sees;
- receives mediagate's webhooks (`POST /webhooks`), verifies their Standard Webhooks
  signature and records each `media.ready` in its SQLite database (`media.deleted`
  removes the row, so the quota counts what the user keeps). `GET /users/{user}/media`
  lists them.

Only aiohttp, PyJWT and standardwebhooks, which mediagate itself depends on, and the
standard library. Run: `python examples/app.py --help`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

AUDIENCE = "mediagate"
TOKEN_LIFETIME = 3600
SCHEMA = """
CREATE TABLE IF NOT EXISTS media (
    media_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, filename TEXT NOT NULL,
    size INTEGER NOT NULL, ready_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen (webhook_id TEXT PRIMARY KEY);
"""


def signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The app's private key, made on first start and kept, so its tokens outlive restarts."""
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.write_bytes(pem)
        path.chmod(0o600)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey), f"{path} is not an EC key"
    return key


def key_id(key: ec.EllipticCurvePrivateKey) -> str:
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(public).digest()[:12]).decode()


class App:
    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        secret: str,
        quota: int,
        db: sqlite3.Connection,
    ) -> None:
        self.key = key
        self.kid = key_id(key)
        self.issuer = issuer
        self.webhook = Webhook(secret)
        self.quota = quota
        self.db = db

    # --- identity: the key set mediagate fetches, and the tokens it checks with it ---

    async def jwks(self, request: web.Request) -> web.Response:
        public = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk = {**public, "kid": self.kid, "use": "sig", "alg": "ES256"}
        return web.json_response({"keys": [jwk]})

    async def login(self, request: web.Request) -> web.Response:
        # A real app checks a password or a session cookie here; the example trusts the name.
        try:
            user = (await request.json()).get("user")
        except (ValueError, AttributeError):
            user = None
        if not isinstance(user, str) or not user:
            return web.json_response({"error": 'send {"user": NAME}'}, status=400)
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": user,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
        }
        token = jwt.encode(claims, self.key, "ES256", headers={"kid": self.kid})
        return web.json_response({"token": token, "expires_in": TOKEN_LIFETIME})

    # --- mediagate's calls: signed, so nobody else can fake an upload or a media ---

    async def verified(self, request: web.Request) -> dict[str, Any]:
        try:
            message: dict[str, Any] = self.webhook.verify(
                await request.read(), dict(request.headers)
            )
        except WebhookVerificationError as error:
            raise web.HTTPUnauthorized(text=f"bad signature: {error}") from None
        return message

    async def pre_create(self, request: web.Request) -> web.Response:
        upload = (await self.verified(request))["data"]
        used = self.used(upload["user_id"])
        if used + upload["size"] > self.quota:
            left = max(self.quota - used, 0)
            message = (
                f"over your quota: {upload['filename']} is {upload['size']} bytes, "
                f"you have {left} of {self.quota} bytes left"
            )
            return web.json_response({"allow": False, "status": 403, "message": message})
        return web.json_response({"allow": True})

    async def webhooks(self, request: web.Request) -> web.Response:
        event = await self.verified(request)
        data = event["data"]
        with self.db:  # one transaction: the event is recorded once, whatever retries come
            first = self.db.execute(
                "INSERT OR IGNORE INTO seen VALUES (?)", (request.headers["webhook-id"],)
            ).rowcount
            if first and event["type"] == "media.ready":
                self.db.execute(
                    "INSERT OR REPLACE INTO media VALUES (?, ?, ?, ?, ?)",
                    (
                        data["media_id"],
                        data["user_id"],
                        data["filename"],
                        data["size"],
                        event["timestamp"],
                    ),
                )
            elif first and event["type"] == "media.deleted":
                self.db.execute("DELETE FROM media WHERE media_id = ?", (data["media_id"],))
        return web.Response(status=204)

    async def user_media(self, request: web.Request) -> web.Response:
        user = request.match_info["user"]
        rows = self.db.execute(
            "SELECT media_id, filename, size, ready_at FROM media WHERE user_id = ? "
            "ORDER BY ready_at",
            (user,),
        ).fetchall()
        items = [
            dict(zip(("media_id", "filename", "size", "ready_at"), r, strict=True)) for r in rows
        ]
        return web.json_response({"used": self.used(user), "quota": self.quota, "media": items})

    def used(self, user: str) -> int:
        row = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM media WHERE user_id = ?", (user,))
        return int(row.fetchone()[0])


def make_app(app: App) -> web.Application:
    web_app = web.Application()
    web_app.router.add_get("/.well-known/jwks.json", app.jwks)
    web_app.router.add_post("/login", app.login)
    web_app.router.add_post("/hooks/pre-create", app.pre_create)
    web_app.router.add_post("/webhooks", app.webhooks)
    web_app.router.add_get("/users/{user}/media", app.user_media)
    return web_app


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="examples/app.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("app-data"),
        help="directory of its database and key (default ./app-data)",
    )
    parser.add_argument(
        "--quota",
        type=int,
        default=100_000_000,
        help="bytes each user may keep (default 100000000)",
    )
    parser.add_argument("--issuer", help="the tokens' iss (default http://HOST:PORT)")
    options = parser.parse_args()
    secret = os.environ.get("MEDIAGATE_WEBHOOK_SECRET")
    if not secret:
        parser.error("set MEDIAGATE_WEBHOOK_SECRET, the secret mediagate signs its calls with")
    options.data.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(options.data / "app.db")
    db.executescript(SCHEMA)
    issuer = options.issuer or f"http://{options.host}:{options.port}"
    app = App(signing_key(options.data / "key.pem"), issuer, secret, options.quota, db)
    web.run_app(make_app(app), host=options.host, port=options.port)


if __name__ == "__main__":
    main()
