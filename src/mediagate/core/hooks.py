"""Hooks that decide, synchronously (docs/integration.md, "Hooks").

Before an upload is created (pre-create), and once its bytes are stored and verified but
before its media is ready (pre-finish), mediagate POSTs a description, signed like the
webhooks, to the application and waits (MEDIAGATE_HOOK_TIMEOUT) for a decision in a 2xx
JSON answer: `{"allow": true}` (pre-create: optionally with `app_metadata` to keep on the
media, a `filename` to use instead and a `max_size`) or `{"allow": false, "status": 4xx,
"message": "..."}`, which the client gets as an `upload-refused` problem. No decision
(no answer, another status, another body) is MEDIAGATE_HOOK_FAILURE's: `refuse` (503
with Retry-After) or `allow`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
import structlog

from mediagate.core.signing import Signer
from mediagate.errors import HookUnavailable, Problem, UploadRefused
from mediagate.events import new_event_id

log = structlog.get_logger("mediagate.hooks")

FailureMode = Literal["refuse", "allow"]


@dataclass(frozen=True)
class Allowed:
    filename: str | None = None
    max_size: int | None = None
    app_metadata: str | None = None  # JSON text, kept on the upload and its media


@dataclass(frozen=True)
class PreCreate:
    user_id: str
    filename: str
    size: int
    content_type: str
    metadata: Mapping[str, str]
    caller: str | None
    protocol: str


def decide(
    hook: str, status: int | None, body: bytes, failure: FailureMode, error: str | None = None
) -> Allowed | Problem:
    """What an application's answer (`status` None: no answer, `error` saying why) means."""
    answer = _decision(body) if status is not None and 200 <= status < 300 else None
    if answer is None:
        reason = error or (f"HTTP {status}" if status is not None else "no answer")
        if status is not None and 200 <= status < 300:
            reason = "its answer is not a decision"
        log.warning("hooks.no_decision", hook=hook, reason=reason, failure=failure)
        if failure == "allow":
            return Allowed()
        return HookUnavailable(f"the application's {hook} hook gave no decision ({reason})")
    if answer.get("allow") is True:
        filename = answer.get("filename")
        max_size = answer.get("max_size")
        kept = answer.get("app_metadata")
        return Allowed(
            filename=filename if isinstance(filename, str) and filename else None,
            max_size=max_size if type(max_size) is int and max_size >= 0 else None,
            app_metadata=None if kept is None else json.dumps(kept, separators=(",", ":")),
        )
    chosen = answer.get("status")
    refused = chosen if type(chosen) is int and 400 <= chosen <= 499 else 403
    message = answer.get("message")
    detail = message if isinstance(message, str) and message else UploadRefused.title
    return UploadRefused(detail, status=refused)


def _decision(body: bytes) -> dict[str, Any] | None:
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
        return None
    return answer


class Hooks:
    def __init__(
        self,
        secret: str,
        *,
        pre_create_url: str | None,
        pre_finish_url: str | None = None,
        timeout: float,
        failure: FailureMode,
    ) -> None:
        self._signer = Signer(secret)
        self._pre_create_url = pre_create_url
        self._pre_finish_url = pre_finish_url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._failure = failure
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def pre_create(self, upload: PreCreate) -> Allowed:
        """The application's decision on a new upload; raises the refusal."""
        if self._pre_create_url is None:
            return Allowed()
        data = {
            "user_id": upload.user_id,
            "filename": upload.filename,
            "size": upload.size,
            "content_type": upload.content_type,
            "metadata": dict(upload.metadata),
            "caller": upload.caller,
            "protocol": upload.protocol,
        }
        outcome = await self._ask("pre-create", self._pre_create_url, "upload.pre_create", data)
        if isinstance(outcome, Problem):
            raise outcome
        return outcome

    async def pre_finish(self, data: dict[str, Any]) -> None:
        """The application's decision on an upload whose bytes are stored and verified;
        raises the refusal."""
        if self._pre_finish_url is None:
            return
        outcome = await self._ask("pre-finish", self._pre_finish_url, "upload.pre_finish", data)
        if isinstance(outcome, Problem):
            raise outcome

    async def _ask(
        self, hook: str, url: str, event_type: str, data: dict[str, Any]
    ) -> Allowed | Problem:
        message_id = new_event_id()
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        body = json.dumps(
            {"type": event_type, "timestamp": stamp, "data": data}, separators=(",", ":")
        )
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._http.post(
                url, data=body, headers=self._signer.headers(message_id, body)
            ) as answer:
                return decide(hook, answer.status, await answer.read(), self._failure)
        except TimeoutError:
            error = f"no answer within {self._timeout.total:g} s"
        except aiohttp.ClientError as failed:
            error = f"{type(failed).__name__}: {failed}"
        return decide(hook, None, b"", self._failure, error)
