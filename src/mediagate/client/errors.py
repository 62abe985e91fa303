"""What the client raises: one base class, the server's problem+json answers, and local failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class MediagateError(Exception):
    """Base of every error the client raises."""


class ConnectionFailed(MediagateError):
    """The server could not be reached, or the connection broke before it answered.

    `retryable` is False when the server was never reached in this client's
    life (a wrong URL or a server that is not running): retrying would only
    delay the news.
    """

    def __init__(self, url: str, reason: str, *, retryable: bool = True) -> None:
        super().__init__(f"cannot reach the server at {url}: {reason}")
        self.url = url
        self.reason = reason
        self.retryable = retryable


class ProblemError(MediagateError):
    """An error answer of the server, with its RFC 9457 problem details."""

    def __init__(self, status: int, problem: dict[str, Any], retry_after: float | None = None):
        self.status = status
        self.problem = problem
        self.type: str = str(problem.get("type", "about:blank"))
        self.title: str = str(problem.get("title", ""))
        self.detail: str = str(problem.get("detail") or self.title or f"HTTP {status}")
        self.retry_after = retry_after
        super().__init__(f"{self.detail} ({status} {self.code})")

    @property
    def code(self) -> str:
        """The last segment of the problem type, e.g. `missing-chunks`."""
        return self.type.rstrip("/").rsplit("/", 1)[-1]


class Unauthorized(ProblemError):
    """401: the token is missing, malformed, expired or signed with another secret."""


class NotFound(ProblemError):
    """404: no such session or media for this user (another user's ids are 404 too)."""


class FileChanged(MediagateError):
    """The local file changed while it was being uploaded: its chunks no longer agree."""


class DirectPutFailed(MediagateError):
    """A part's PUT straight to S3 failed: the bucket is out of reach or refused it.

    `status` is the bucket's answer, None when it could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TargetExists(MediagateError):
    """A download would replace a file the caller did not name."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} already exists (not replaced)")
        self.path = path


def problem_error(status: int, problem: dict[str, Any], retry_after: float | None) -> ProblemError:
    kind = {401: Unauthorized, 404: NotFound}.get(status, ProblemError)
    return kind(status, problem, retry_after)
