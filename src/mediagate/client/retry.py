"""When to try a request again, and how long to wait first (pure, table-tested)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Asking again cannot help with these, whatever their status says.
FINAL_PROBLEMS = frozenset(
    {"storage-rejected", "storage-full", "file-too-large", "file-too-large-for-storage"}
)
# A server asking for longer than this is treated as asking for this long.
MAX_RETRY_AFTER = 300.0


def is_retryable_status(status: int, code: str = "") -> bool:
    """408, 429 and 5xx (but 501 and the final problems above); never another 4xx."""
    if code in FINAL_PROBLEMS or status == 501:
        return False
    return status in (408, 429) or 500 <= status <= 599


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from `Retry-After`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with jitter; a server's `Retry-After` wins when it sends one.

    `attempts` counts the first try: 1 never retries. With the defaults a
    request is tried for 30-50 s in all before its error is raised,
    which rides out a server restart or a short network loss.
    """

    attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 20.0

    def delay(
        self, failures: int, retry_after: float | None = None, jitter: float | None = None
    ) -> float:
        """Seconds to wait after the `failures`-th failure (1-based)."""
        spread = random.random() if jitter is None else jitter
        ceiling = min(self.max_delay, self.base_delay * 2 ** (failures - 1))
        # "Equal jitter": never less than half the ceiling, so retries do not hammer.
        backoff = ceiling / 2 * (1 + spread)
        if retry_after is None:
            return backoff
        # Honour the server, plus up to 10 % so a crowd told the same does not return at once.
        return retry_after * (1 + 0.1 * spread)
