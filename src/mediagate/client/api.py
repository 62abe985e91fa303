"""`MediagateClient`: the native API over HTTP, each call retried by one policy."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import aiohttp
from yarl import URL

from mediagate.client.download import download
from mediagate.client.errors import (
    ConnectionFailed,
    DirectPutFailed,
    MediagateError,
    ProblemError,
)
from mediagate.client.http import BROKEN, connection_reason, error_from, is_retryable
from mediagate.client.models import Media, SessionStatus, UploadProgress, UploadResult
from mediagate.client.resume import ResumeStore
from mediagate.client.retry import RetryPolicy
from mediagate.client.upload import Upload, UploadOptions
from mediagate.proxies import EnvironmentProxies

T = TypeVar("T")
RetryHook = Callable[[MediagateError, float], None]
RecoveryHook = Callable[[], None]
PAGE_SIZE = 200  # the server's largest page
DIRECT = "companion"
# No total limit (a 64 MiB chunk on a slow link takes long); a silent peer is given up on.
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
# A bucket the client cannot reach (a store on a private network) is given up on sooner:
# its chunks then go through the server.
BUCKET_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)


class MediagateClient:
    """An async client of one mediagate server, acting as the user of `token`.

    Use as `async with MediagateClient(url, token) as client: ...`. Every call
    retries what may succeed later (connection loss, 408, 429, 5xx) with
    back-off honouring `Retry-After`; `on_retry(error, delay)` hears of each
    retry, and `on_recovered()` of each call that succeeded after retries
    (together they tell when an outage starts and when it ends). Errors are
    `MediagateError`s: `ProblemError` carries the server's problem+json
    (`status`, `type`, `detail`).
    """

    def __init__(
        self,
        server: str,
        token: str,
        *,
        retry: RetryPolicy | None = None,
        resume_store: ResumeStore | None = None,
        on_retry: RetryHook | None = None,
        on_recovered: RecoveryHook | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        problem = validate_server_url(server)
        if problem is not None:
            raise ValueError(problem)
        self.server = server.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.resume_store = resume_store or ResumeStore()
        self._on_retry = on_retry
        self._on_recovered = on_recovered
        self._auth = {"Authorization": f"Bearer {token}"}
        self._http = http or aiohttp.ClientSession(timeout=TIMEOUT)
        self._owns_http = http is None
        self._proxies = EnvironmentProxies()
        # Until the server has answered once, a refused connection means a wrong
        # URL or a server that is down: reported at once, not retried.
        self._reached = False

    async def __aenter__(self) -> MediagateClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_http:
            await self._http.close()

    # --- media ------------------------------------------------------------------------

    async def upload(
        self,
        file: str | os.PathLike[str] | BinaryIO,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        parallel: int | None = None,
        chunk_size: int | None = None,
        chunk_digest: bool = True,
        file_sha256: bool = False,
        resume: bool = True,
        direct: bool = True,
        on_progress: Callable[[UploadProgress], None] | None = None,
    ) -> UploadResult:
        """Upload a file (a path, or a seekable binary file) and return the new media.

        Chunks of the size the server chooses (or `chunk_size`, which it may
        adjust) go `parallel` at a time (default: 8 into the bucket, 4 through the
        server), each through the server with its `X-Chunk-SHA256` unless
        `chunk_digest` is False; `file_sha256` declares the whole file's
        SHA-256 (one extra read of the file) for the server to verify. With
        `resume`, a path's session is remembered until it completes, so
        uploading the same unchanged file again, after an interruption, sends
        only the chunks the server lacks. With `direct` (the default), chunks are PUT
        straight into the server's bucket at URLs it signs, each with its Content-MD5 for
        S3 to check, when the server offers that; the chunks the bucket does not take (out
        of reach, failing) go through the server, as does the whole file when the server
        offers no direct uploads, or with `file_sha256` (the server checks it on the bytes
        it relays). `direct=False` sends every chunk through the server. A resumed upload
        keeps the path its session was started on. The result's `path` says which was taken.
        """
        options = UploadOptions(
            filename=filename,
            content_type=content_type,
            parallel=parallel,
            chunk_size=chunk_size,
            chunk_digest=chunk_digest,
            file_sha256=file_sha256,
            resume=resume,
            direct=direct,
        )
        return await Upload(self, file, options, on_progress).run()

    async def info(self, media_id: str) -> Media:
        return Media.from_json(await self.call("GET", f"media/info/{media_id}"))

    async def iter_media(self, page_size: int = PAGE_SIZE) -> AsyncIterator[Media]:
        """Every media of the user, newest first, fetched page by page."""
        cursor: str | None = None
        while True:
            query = {"limit": str(page_size), **({"cursor": cursor} if cursor else {})}
            page = await self.call("GET", "media", params=query)
            for item in page["items"]:
                yield Media.from_json(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def list_media(self, page_size: int = PAGE_SIZE) -> list[Media]:
        """Every media of the user (all pages), newest first."""
        return [media async for media in self.iter_media(page_size)]

    async def delete(self, media_id: str) -> None:
        await self.call("DELETE", f"media/delete/{media_id}", ok=(204,))

    async def download(
        self,
        media_id: str,
        destination: str | os.PathLike[str] | None = None,
        *,
        on_progress: Callable[[int, int], None] | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Save a media to `destination` (a file or a directory; default: its filename here).

        In a directory the file is named after the media's filename, sanitised
        (never a path from the server), and an existing file there is not
        replaced (`TargetExists`) unless `overwrite`; a file named as
        `destination` is replaced. Bytes go to `<file>.part` first, renamed
        when complete; an interrupted download, run again, asks only for the
        rest (`Range`). `on_progress(done, total)` hears of every piece written.
        """
        return await download(self, media_id, destination, on_progress, overwrite)

    # --- upload sessions ----------------------------------------------------------------

    async def initiate(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call("POST", "media/upload/initiate", payload=body, ok=(201,))

    async def session_status(self, session_id: str) -> SessionStatus:
        return SessionStatus.from_json(await self.call("GET", f"media/upload/{session_id}"))

    async def put_chunk(
        self,
        session_id: str,
        number: int,
        body: Callable[[], AsyncIterator[bytes]],
        length: int,
        headers: dict[str, str],
    ) -> dict[str, Any]:
        """Send one chunk; `body()` makes a fresh stream of its bytes for every attempt."""
        return await self.call(
            "POST",
            f"media/upload/{session_id}/chunk/{number}",
            body=body,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(length),
                **headers,
            },
        )

    async def complete(self, session_id: str) -> dict[str, Any]:
        """`{media_id, stream_url, info}`, with `state: "finalizing"` when answered 202."""
        return await self.call("POST", f"media/upload/{session_id}/complete", ok=(201, 202))

    async def abort(self, session_id: str) -> None:
        await self.call("DELETE", f"media/upload/{session_id}", ok=(204,))

    # --- direct uploads (docs/api.md, "Direct uploads to S3") ----------------------------

    async def direct_create(self, body: dict[str, Any]) -> dict[str, Any]:
        """`{key, uploadId, chunk_size, total_chunks}` of a new direct upload."""
        return await self.call("POST", f"{DIRECT}/s3/multipart", payload=body)

    async def direct_part_url(self, session_id: str, number: int, length: int, md5: str) -> str:
        """A URL to PUT chunk `number` (0-based) to, its length and MD5 signed in."""
        query = {"size": str(length), "md5": md5}
        answer = await self.call(
            "GET", f"{DIRECT}/s3/multipart/{session_id}/{number + 1}", params=query
        )
        return str(answer["url"])

    async def direct_parts(self, session_id: str) -> dict[int, int]:
        """The chunks (0-based) S3 holds of a direct upload, and their sizes."""
        listed = await self.call("GET", f"{DIRECT}/s3/multipart/{session_id}")
        return {int(part["PartNumber"]) - 1: int(part["Size"]) for part in listed}

    async def direct_complete(self, session_id: str) -> dict[str, Any]:
        """`{location, key, media_id, info}`; the server lists the parts itself."""
        return await self.call("POST", f"{DIRECT}/s3/multipart/{session_id}/complete", payload={})

    async def put_part_directly(
        self, url: str, body: AsyncIterator[bytes], length: int, md5: str
    ) -> None:
        """PUT a part to a presigned S3 URL: once, no token (the URL is the permission);
        S3 takes it only if its bytes match `md5`. Failures are the caller's to handle."""
        headers = {"Content-Length": str(length), "Content-MD5": md5}
        try:
            # As signed: re-quoting its query would break the signature.
            target = URL(url, encoded=True)
            put = self._http.put(
                target,
                data=body,
                headers=headers,
                timeout=BUCKET_TIMEOUT,
                proxy=self._proxies.for_url(url),
            )
            async with put as response:
                if response.status != 200:
                    text = await response.text()
                    raise DirectPutFailed(f"S3 answered {response.status}: {text}", response.status)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise DirectPutFailed(connection_reason(error)) from None

    # --- plumbing -----------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self.server}/api/v1/{path}"

    async def call(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200,),
        payload: Any = None,
        body: Callable[[], AsyncIterator[bytes]] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """One API call, retried; its JSON answer (None for 204)."""

        async def attempt() -> Any:
            async with self.request(
                method,
                self.url(path),
                json=payload,
                data=body() if body is not None else None,
                headers=headers,
                params=params,
            ) as response:
                if response.status not in ok:
                    raise await error_from(response)
                if response.status == 204:
                    return None
                try:
                    return await response.json(content_type=None)
                except ValueError:
                    raise MediagateError(
                        f"{method} {path}: the answer ({response.status}) is not JSON: "
                        "is --server a mediagate server?"
                    ) from None

        return await self.retrying(attempt)

    def request(self, method: str, url: str, **kwargs: Any) -> _Request:
        """An HTTP request with the token; connection failures become `ConnectionFailed`."""
        headers = {**self._auth, **(kwargs.pop("headers", None) or {})}
        proxy = self._proxies.for_url(url)  # a redirect (to S3) is followed through it too
        return _Request(
            self, self._http.request(method, url, headers=headers, proxy=proxy, **kwargs), url
        )

    async def retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()` until it succeeds, fails for good, or the policy's attempts run out."""
        failures = 0
        while True:
            try:
                result = await attempt()
            except (ProblemError, ConnectionFailed) as error:
                failures += 1
                if failures >= self.retry.attempts or not is_retryable(error):
                    raise
                retry_after = error.retry_after if isinstance(error, ProblemError) else None
                delay = self.retry.delay(failures, retry_after)
                if self._on_retry is not None:
                    self._on_retry(error, delay)
            else:
                if failures and self._on_recovered is not None:
                    self._on_recovered()
                return result
            await asyncio.sleep(delay)


class _Request:
    """`async with` around an aiohttp request that translates its connection errors."""

    def __init__(self, client: MediagateClient, context: Any, url: str) -> None:
        self._client = client
        self._context = context
        self._url = url

    async def __aenter__(self) -> aiohttp.ClientResponse:
        try:
            response = await self._context.__aenter__()
        except aiohttp.ClientConnectorError as error:
            raise ConnectionFailed(
                self._client.server, connection_reason(error), retryable=self._client._reached
            ) from None
        except BROKEN as error:
            raise ConnectionFailed(self._client.server, connection_reason(error)) from None
        except aiohttp.InvalidURL:
            raise ConnectionFailed(self._url, "not a valid URL", retryable=False) from None
        self._client._reached = True
        return response

    async def __aexit__(self, kind: Any, error: Any, traceback: Any) -> None:
        await self._context.__aexit__(kind, error, traceback)
        if isinstance(error, BROKEN):  # while the answer's body was being read
            raise ConnectionFailed(self._client.server, connection_reason(error)) from None


def validate_server_url(server: str) -> str | None:
    """Why `server` cannot be a mediagate base URL, or None if it can."""
    try:
        url = URL(server)
    except ValueError:
        return f"{server!r} is not a URL"
    if url.scheme not in ("http", "https") or not url.host:
        return f"{server!r} is not an http:// or https:// URL"
    if url.user is not None or url.password is not None:
        # Not echoed: it holds a password. The bearer token is the one credential.
        return (
            f"{url.with_user(None)} must not carry a user name or password (`user:pass@`): "
            "the token signs you in"
        )
    return None
