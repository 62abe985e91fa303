"""What the client makes of HTTP failures: an error answer's problem, a lost connection in words."""

from __future__ import annotations

import json

import aiohttp

from mediagate.client.errors import ConnectionFailed, MediagateError, ProblemError, problem_error
from mediagate.client.retry import is_retryable_status, parse_retry_after

# A connection that broke, or a server that went silent, after it was reached.
BROKEN = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


def connection_reason(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientProxyConnectionError):
        through = f"the proxy {error.host}:{error.port} (HTTP_PROXY/HTTPS_PROXY)"
        return f"{through}: {_os_reason(error)}"
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return f"unknown host {error.host!r}"
    if isinstance(error, aiohttp.ClientConnectorError):
        return _os_reason(error)
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return str(error) or type(error).__name__


def _os_reason(error: aiohttp.ClientConnectorError) -> str:
    if isinstance(error.os_error, ConnectionRefusedError):
        return "connection refused"
    return error.os_error.strerror or str(error.os_error) or type(error).__name__


def is_retryable(error: MediagateError) -> bool:
    if isinstance(error, ConnectionFailed):
        return error.retryable
    if isinstance(error, ProblemError):
        return is_retryable_status(error.status, error.code)
    return False


async def error_from(response: aiohttp.ClientResponse) -> ProblemError:
    """The problem in an error answer; a proxy's HTML page becomes a problem too."""
    text = await response.text(errors="replace")
    try:
        problem = json.loads(text)
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {"title": response.reason or "", "status": response.status}
        if text.strip():
            problem["detail"] = f"{response.reason}: {text.strip()[:200]}"
    return problem_error(
        response.status, problem, parse_retry_after(response.headers.get("Retry-After"))
    )
