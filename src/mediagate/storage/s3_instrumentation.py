"""S3 call metrics taken from botocore's event hooks, so no call site has to know.

aiobotocore emits, for every API call, `before-call.s3.<Operation>` before
sending, then either `after-call.s3.<Operation>` with S3's answer (also for
error statuses, before the ClientError is raised) or
`after-call-error.s3.<Operation>` when no answer came (connection refused,
timeout, no credentials to sign with). All three carry the same `context`
dict, where the start time waits. Retries happen inside one call, so a call
is counted once whatever its attempts.
"""

from __future__ import annotations

import time
from typing import Any

from mediagate import metrics

_STARTED = "mediagate_started"


def instrument(client: Any) -> None:
    """Count and time every S3 call `client` makes."""
    events = client.meta.events
    events.register("before-call.s3", _call_started)
    events.register("after-call.s3", _call_answered)
    events.register("after-call-error.s3", _call_unanswered)


def _call_started(context: dict[str, Any], **_: Any) -> None:
    context[_STARTED] = time.perf_counter()


def outcome_of(status: int) -> metrics.S3Outcome:
    """How an S3 call that got an answer with `status` is counted."""
    return "ok" if status < 300 else "server_error" if status >= 500 else "client_error"


def _call_answered(http_response: Any, context: dict[str, Any], event_name: str, **_: Any) -> None:
    _record(event_name, context, outcome_of(http_response.status_code))


def _call_unanswered(context: dict[str, Any], event_name: str, **_: Any) -> None:
    _record(event_name, context, "no_response")


def _record(event_name: str, context: dict[str, Any], outcome: metrics.S3Outcome) -> None:
    started = context.pop(_STARTED, None)
    operation = event_name.rsplit(".", 1)[-1]
    metrics.s3_call(operation, outcome, None if started is None else time.perf_counter() - started)
