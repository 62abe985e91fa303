"""Delivery of the outbox's events as Standard Webhooks (docs/integration.md, "Events").

Any instance delivers: it claims a batch of due deliveries (each the first pending
one of its media at its endpoint, so a media's events go out in the order of its
changes), sends each endpoint's one at a time, and records the outcome: 2xx is
delivered, 410 stops that endpoint for that event, anything else (or no answer
within MEDIAGATE_WEBHOOK_TIMEOUT) is retried with exponential back-off and jitter
until MEDIAGATE_WEBHOOK_RETRY_FOR has passed since the event, then kept as dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import structlog

from mediagate.catalog.base import Outbox
from mediagate.core.signing import Signer
from mediagate.events import Delivery, DeliveryState

log = structlog.get_logger("mediagate.webhooks")

# Deliveries claimed at once; each endpoint's are sent one after the other.
BATCH = 10
# Seconds between two looks at the outbox when it had nothing due, at most.
IDLE_POLL = 1.0
# Seconds between two clean-ups of the deliveries done (kept for a retry window).
PRUNE_EVERY = 600.0
# Longest wait between two tries of an event (shorter when the retry window is short).
MAX_BACKOFF = 3600.0


@dataclass(frozen=True)
class Outcome:
    state: DeliveryState
    next_at: datetime | None
    error: str | None


def settle(
    delivery: Delivery,
    status: int | None,
    error: str | None,
    now: datetime,
    retry_for: float,
    jitter: float,
) -> Outcome:
    """What an attempt makes of a delivery: `status` is the endpoint's answer (None for
    no answer, `error` saying why); `jitter` in [0, 1) spreads the retries."""
    if status is not None and 200 <= status < 300:
        return Outcome(DeliveryState.DELIVERED, None, None)
    if status == 410:
        return Outcome(DeliveryState.GONE, None, "410 Gone: the endpoint wants no more tries")
    reason = error if status is None else f"HTTP {status}"
    deadline = delivery.created_at + timedelta(seconds=retry_for)
    if now >= deadline:
        return Outcome(DeliveryState.DEAD, None, reason)
    ceiling = min(MAX_BACKOFF, retry_for / 10)
    delay = min(2.0**delivery.attempts, ceiling) * (0.5 + jitter / 2)
    return Outcome(DeliveryState.PENDING, min(now + timedelta(seconds=delay), deadline), reason)


class WebhookSender:
    def __init__(
        self,
        catalog: Outbox,
        secret: str,
        *,
        timeout: float,
        retry_for: float,
        on_settled: Callable[[DeliveryState], None] = lambda state: None,
    ) -> None:
        self._catalog = catalog
        self._signer = Signer(secret)
        self._timeout = timeout
        self._retry_for = retry_for
        self._on_settled = on_settled
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look at the outbox now (an event was just committed)."""
        self._wake.set()

    async def run_forever(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            idle = 0.05
            pruned_at = 0.0
            while True:
                self._wake.clear()  # before the claim: a commit from now on wakes the wait
                try:
                    if time.monotonic() - pruned_at > PRUNE_EVERY:
                        await self._catalog.prune_events(
                            _now() - timedelta(seconds=self._retry_for)
                        )
                        pruned_at = time.monotonic()
                    sent = await self.deliver_once(http)
                except Exception as error:  # the catalog is down: look again later
                    log.warning("webhooks.failed", error=str(error))
                    sent = 0
                if sent:
                    idle = 0.05
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), idle)
                idle = min(idle * 2, IDLE_POLL)

    async def deliver_once(self, http: aiohttp.ClientSession) -> int:
        """Claim a batch and send it; how many deliveries were tried."""
        # Held for as long as a whole batch could take at one endpoint, so that no
        # other instance claims one while it is being sent.
        hold = self._timeout * BATCH + 10
        batch = await self._catalog.claim_events(_now(), hold, BATCH)
        by_endpoint: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in batch:
            by_endpoint[delivery.endpoint].append(delivery)
        await asyncio.gather(*(self._send_all(http, mine) for mine in by_endpoint.values()))
        return len(batch)

    async def _send_all(self, http: aiohttp.ClientSession, deliveries: list[Delivery]) -> None:
        """One endpoint's deliveries, one at a time; once it fails, the rest are not tried
        now but retried with the failed one."""
        failed: Outcome | None = None
        for delivery in deliveries:
            if failed is None:
                status, error = await self._post(http, delivery)
                outcome = settle(delivery, status, error, _now(), self._retry_for, random.random())
                if outcome.state is DeliveryState.PENDING:
                    failed = outcome
            else:
                outcome = settle(delivery, None, failed.error, _now(), self._retry_for, 0.0)
                if outcome.state is DeliveryState.PENDING:
                    outcome = Outcome(outcome.state, failed.next_at, outcome.error)
            await self._catalog.settle_event(
                delivery.seq, outcome.state, next_at=outcome.next_at, error=outcome.error
            )
            self._on_settled(outcome.state)
            if outcome.state is not DeliveryState.DELIVERED:
                log.info(
                    "webhooks.not_delivered",
                    event=delivery.id,
                    endpoint=delivery.endpoint,
                    state=outcome.state.value,
                    error=outcome.error,
                )

    async def _post(
        self, http: aiohttp.ClientSession, delivery: Delivery
    ) -> tuple[int | None, str | None]:
        headers = self._signer.headers(delivery.id, delivery.body)
        try:
            async with http.post(delivery.endpoint, data=delivery.body, headers=headers) as answer:
                return answer.status, None
        except TimeoutError:
            return None, f"no answer within {self._timeout:g} s"
        except aiohttp.ClientError as error:
            return None, f"{type(error).__name__}: {error}"


def _now() -> datetime:
    return datetime.now(UTC)
