"""Prometheus metrics, served at `/metrics`.

Every metric lives in `REGISTRY`, not in prometheus_client's global one, so
that tests can build many applications in one process without "duplicated
timeseries" errors. Label values come from small fixed sets (storage kinds,
S3 operation names, route patterns), never from ids or paths, so the number
of series stays bounded. Callers use the functions below; the metric objects
are public for tests.

With `mediagate serve --workers N` a scrape reaches one worker, yet must show the
whole server: the supervisor makes a directory and names it in
PROMETHEUS_MULTIPROC_DIR before any worker imports prometheus_client, each worker
then keeps its samples in files there, and `exposition()` adds up every worker's
files (prometheus-client's multiprocess mode). Counters and histograms are summed,
a dead worker's counts included, so they never go down when a worker is replaced
(no gauge is `live*`, so a dead worker's files need no `mark_process_dead`).
That beats the supervisor scraping its workers: the supervisor stays a plain
process manager that serves nothing, and a scrape needs no worker but the one it
reached.
"""

from __future__ import annotations

import os
from typing import Literal, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from mediagate.events import DeliveryState
from mediagate.models import StorageKind

# `*_created` timestamps would double the series and Prometheus ignores them.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)
# Read once, as prometheus_client itself reads it when first imported.
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

# What went to local disk instead of S3: a new session, a whole upload whose
# every chunk was spilled, or an upload left finalizing until S3 is back.
FallbackReason = Literal["initiate", "all_chunks_spilled", "finalizing"]
# "stream": mediagate's own HMAC link; "s3_presigned": a presigned S3 GET.
SignedUrlKind = Literal["stream", "s3_presigned", "s3_part"]
# "client_error" includes 3xx: S3 answers a request for the wrong region with 301.
S3Outcome = Literal["ok", "client_error", "server_error", "no_response"]
MigrationResult = Literal["migrated", "failed"]

# From a status poll (milliseconds) to a large chunk over a slow link (minutes).
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
S3_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

UPLOADS_STARTED = Counter(
    "mediagate_uploads_started_total",
    "Upload sessions initiated, by the storage they were given.",
    ["storage"],
    registry=REGISTRY,
)
UPLOADS_COMPLETED = Counter(
    "mediagate_uploads_completed_total",
    "Upload sessions completed into media, by storage.",
    ["storage"],
    registry=REGISTRY,
)
UPLOADS_FAILED = Counter(
    "mediagate_uploads_failed_total",
    "Attempts to complete an upload session that failed, by storage.",
    ["storage"],
    registry=REGISTRY,
)
BYTES_RECEIVED = Counter(
    "mediagate_bytes_received_total",
    "Bytes of acknowledged chunks, by the storage that took them.",
    ["storage"],
    registry=REGISTRY,
)
FALLBACKS = Counter(
    "mediagate_fallbacks_total",
    "Uploads that fell back to local disk although S3 is configured, by reason.",
    ["reason"],
    registry=REGISTRY,
)
CHUNKS_SPILLED = Counter(
    "mediagate_chunks_spilled_total",
    "Chunks of S3 sessions kept on local disk because S3 failed to take them.",
    registry=REGISTRY,
)
SIGNED_URLS = Counter(
    "mediagate_signed_urls_issued_total",
    "Signed URLs handed out, by kind.",
    ["kind"],
    registry=REGISTRY,
)
S3_REQUESTS = Counter(
    "mediagate_s3_requests_total",
    "S3 API calls (retries included in one call), by operation and outcome.",
    ["operation", "outcome"],
    registry=REGISTRY,
)
S3_REQUEST_SECONDS = Histogram(
    "mediagate_s3_request_duration_seconds",
    "Duration of S3 API calls, retries included, by operation.",
    ["operation"],
    buckets=S3_BUCKETS,
    registry=REGISTRY,
)
SESSIONS_IN_FLIGHT = Gauge(
    "mediagate_upload_sessions_in_flight",
    "Upload sessions open (initiated, not yet completed, aborted or expired).",
    # The catalog's count, taken by the worker a scrape reaches (web/health.py):
    # the latest count is the answer, not a sum or the largest of every worker's.
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
EVENTS = Gauge(
    "mediagate_events",
    "Events in the outbox, one per webhook endpoint, by state: pending (not yet "
    "acknowledged), delivered, dead (not acknowledged within MEDIAGATE_WEBHOOK_RETRY_FOR), "
    "gone (the endpoint answered 410).",
    ["state"],
    # The catalog's count at a scrape, as for the sessions in flight.
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "mediagate_webhook_attempts_total",
    "Deliveries of events tried by this server, by what they became.",
    ["state"],
    registry=REGISTRY,
)
MIGRATION_FILES = Counter(
    "mediagate_migration_files_total",
    "Local files the migration moved to S3, or failed to, by result.",
    ["result"],
    registry=REGISTRY,
)
MIGRATION_BYTES = Counter(
    "mediagate_migration_bytes_total",
    "Bytes of local files the migration moved to S3, or failed to, by result.",
    ["result"],
    registry=REGISTRY,
)
HTTP_REQUEST_SECONDS = Histogram(
    "mediagate_http_request_duration_seconds",
    "Time from a request's arrival to its handler's answer (a file body is sent "
    "after), by method, route pattern and status class.",
    ["method", "route", "status_class"],
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)


def _declare_known_series() -> None:
    """Create the series whose labels are known up front, so they read 0, not absent."""
    for kind in StorageKind:
        for metric in (UPLOADS_STARTED, UPLOADS_COMPLETED, UPLOADS_FAILED, BYTES_RECEIVED):
            metric.labels(kind.value)
    for reason in get_args(FallbackReason):
        FALLBACKS.labels(reason)
    for url_kind in get_args(SignedUrlKind):
        SIGNED_URLS.labels(url_kind)
    for state in DeliveryState:
        EVENTS.labels(state.value)
        WEBHOOK_ATTEMPTS.labels(state.value)
    for result in get_args(MigrationResult):
        MIGRATION_FILES.labels(result)
        MIGRATION_BYTES.labels(result)


_declare_known_series()


def upload_started(storage: StorageKind) -> None:
    UPLOADS_STARTED.labels(storage.value).inc()


def upload_completed(storage: StorageKind) -> None:
    UPLOADS_COMPLETED.labels(storage.value).inc()


def upload_failed(storage: StorageKind) -> None:
    UPLOADS_FAILED.labels(storage.value).inc()


def bytes_received(storage: StorageKind, count: int) -> None:
    BYTES_RECEIVED.labels(storage.value).inc(count)


def fallback(reason: FallbackReason) -> None:
    FALLBACKS.labels(reason).inc()


def chunk_spilled() -> None:
    CHUNKS_SPILLED.inc()


def signed_url_issued(kind: SignedUrlKind) -> None:
    SIGNED_URLS.labels(kind).inc()


def s3_call(operation: str, outcome: S3Outcome, seconds: float | None) -> None:
    """One S3 API call; `seconds` is None when its start was not seen."""
    S3_REQUESTS.labels(operation, outcome).inc()
    if seconds is not None:
        S3_REQUEST_SECONDS.labels(operation).observe(seconds)


def migration_file(result: MigrationResult, size: int) -> None:
    MIGRATION_FILES.labels(result).inc()
    MIGRATION_BYTES.labels(result).inc(size)


def http_request(method: str, route: str, status_class: str, seconds: float) -> None:
    HTTP_REQUEST_SECONDS.labels(method, route, status_class).observe(seconds)


def sessions_open(count: int) -> None:
    SESSIONS_IN_FLIGHT.set(count)


def events_counted(counts: dict[DeliveryState, int]) -> None:
    for state in DeliveryState:
        EVENTS.labels(state.value).set(counts.get(state, 0))


def webhook_attempt(state: DeliveryState) -> None:
    WEBHOOK_ATTEMPTS.labels(state.value).inc()


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The whole server's samples in the format the scraper asked for, and its content type."""
    encode, content_type = choose_encoder(accept or "")
    return encode(_whole_server()), content_type


def _whole_server() -> CollectorRegistry:
    """This process's registry, or with several workers every worker's samples added up."""
    if MULTIPROCESS_DIR is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    return registry
