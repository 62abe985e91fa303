"""Whether S3 can take new uploads: decided at start-up, read by /readyz and the engine."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class S3State(StrEnum):
    DISABLED = "disabled"  # USE_CLOUD_STORAGE is off
    OK = "ok"
    UNAVAILABLE = "unavailable"


@dataclass
class S3Status:
    """Shared and mutable: whoever learns S3's state updates it in place.

    `problem` names the cause while unavailable, in the words of the start-up
    log line: access_denied, wrong_region, no_credentials, invalid_credentials,
    bucket_taken, unreachable or error.
    """

    state: S3State
    problem: str | None = None

    @property
    def ready(self) -> bool:
        return self.state is S3State.OK

    def follow(self, error: str | None) -> None:
        """Take the S3 breaker's word: `error` when it opens, None when it closes."""
        self.state = S3State.UNAVAILABLE if error else S3State.OK
        self.problem = self.problem or "error" if error else None
