"""The identity provider's public keys (a JWKS), fetched and cached by key id.

Fetched with aiohttp rather than PyJWT's PyJWKClient, whose urllib fetch
blocks: on the event loop it would stall every upload while the identity
provider answers. The set is fetched again when a token names a key id it
does not hold (a key rotation: no restart needed) or once it is older than
MAX_AGE (a removed key stops working), but never twice within the refetch
interval, so tokens with made-up key ids cannot hammer the provider. A failed
fetch keeps the keys already held.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import jwt
import structlog

log = structlog.get_logger("mediagate")

# Keys only the identity provider can sign with: HS256 needs a shared secret,
# and a public key taken as an HS256 secret would let anyone sign
# (algorithm confusion), so it is mediagate's own secret's alone.
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
# After this long the set is fetched again at the next token, to drop removed keys.
MAX_AGE = 600.0
FETCH_TIMEOUT = 5.0
MAX_DOCUMENT_BYTES = 1024 * 1024


class KeySetError(Exception):
    """The fetched document is not a JWKS with a usable key."""


def parse_key_set(document: object) -> dict[str, jwt.PyJWK]:
    """The signing keys of a JWKS document, by `kid`.

    Keys with no `kid`, meant for encryption (`use: enc`), or for an algorithm
    outside ASYMMETRIC_ALGORITHMS are left out."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeySetError('not a JWKS: no "keys" list')
    keys = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        if key.algorithm_name in ASYMMETRIC_ALGORITHMS:
            keys[entry["kid"]] = key
    if not keys:
        raise KeySetError("no usable signing key (each needs a kid and RS256, ES256 or EdDSA)")
    return keys


class IdentityKeys:
    """The key set of one JWKS URL, fetched when needed (see the module's doc)."""

    def __init__(
        self,
        url: str,
        *,
        refetch_interval: float,
        timeout: float = FETCH_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._refetch_interval = refetch_interval
        self._timeout = timeout
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._failed = False
        # The fetch under way: a task of its own, so that a request cancelled while
        # it waits (its client went away) does not cancel it for the others.
        self._fetching: asyncio.Task[None] | None = None

    @property
    def keys(self) -> Mapping[str, jwt.PyJWK]:
        return self._keys

    @property
    def unavailable(self) -> bool:
        """The last fetch failed: a key id not held may be one the provider has."""
        return self._failed

    async def ensure(self, kid: str) -> None:
        """Have the keys in hand answer for `kid`: fetch the set if it lacks `kid` or is
        old, unless fetched too recently, and wait for a fetch under way."""
        if self._fetching is None and self._needs(kid) and self._may_fetch():
            self._fetching = asyncio.create_task(self._fetch())
        if self._fetching is not None and self._needs(kid):
            await asyncio.shield(self._fetching)

    async def close(self) -> None:
        if self._fetching is not None:
            self._fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fetching

    def _needs(self, kid: str) -> bool:
        stale = self._fetched_at is None or self._clock() - self._fetched_at >= MAX_AGE
        return kid not in self._keys or stale

    def _may_fetch(self) -> bool:
        return (
            self._attempted_at is None
            or self._clock() - self._attempted_at >= self._refetch_interval
        )

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        try:
            keys = parse_key_set(await self._download())
        # RecursionError: JSON nested deeper than the parser goes.
        except (
            aiohttp.ClientError,
            TimeoutError,
            ValueError,
            RecursionError,
            KeySetError,
        ) as error:
            self._failed = True
            log.warning("auth.jwks_unavailable", url=self.url, error=str(error) or repr(error))
        else:
            added = sorted(keys.keys() - self._keys.keys())
            self._keys, self._fetched_at, self._failed = keys, self._clock(), False
            log.info("auth.jwks_fetched", url=self.url, kids=sorted(keys), added=added)
        finally:
            self._fetching = None

    async def _download(self) -> Any:
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(self.url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status != 200:
                raise KeySetError(f"HTTP {response.status}")
            body = bytearray()
            async for piece in response.content.iter_any():
                body += piece
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise KeySetError(f"larger than {MAX_DOCUMENT_BYTES} bytes")
            return json.loads(body)
