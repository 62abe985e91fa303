"""/metrics over real HTTP: every family is there, and it moves when uploads happen.

The metrics live in one registry per process, shared by every app the tests
build, so each test compares a scrape before and after what it does.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mediagate import metrics
from mediagate.web.keys import SERVICES
from support.metrics import Samples, parse

CHUNK_ROUTE = "/api/v1/media/upload/{session_id}/chunk/{chunk_number}"

FAMILIES = {
    "mediagate_uploads_started": "counter",
    "mediagate_uploads_completed": "counter",
    "mediagate_uploads_failed": "counter",
    "mediagate_bytes_received": "counter",
    "mediagate_fallbacks": "counter",
    "mediagate_chunks_spilled": "counter",
    "mediagate_signed_urls_issued": "counter",
    "mediagate_s3_requests": "counter",
    "mediagate_s3_request_duration_seconds": "histogram",
    "mediagate_upload_sessions_in_flight": "gauge",
    "mediagate_migration_files": "counter",
    "mediagate_migration_bytes": "counter",
    "mediagate_http_request_duration_seconds": "histogram",
}


async def scrape(client: Any) -> tuple[str, Samples]:
    answer = await client.get("/metrics")
    assert answer.status == 200
    text = await answer.text()
    return text, parse(text)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_every_family_is_exposed_with_its_type(local_api):
    text, _ = await scrape(local_api.client)
    families = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert {name: families.get(name) for name in FAMILIES} == FAMILIES


async def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(local_api):
    answer = await local_api.client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert answer.content_type == "application/openmetrics-text"
    assert (await answer.text()).endswith("# EOF\n")


async def test_request_latency_is_labelled_by_route_pattern_and_status_class(local_api):
    _, before = await scrape(local_api.client)
    session = await (await local_api.initiate(filename="a.txt", size=11)).json()
    sid = session["session_id"]
    assert (await local_api.put_chunk(sid, 0, b"hello world")).status == 200
    assert (await local_api.client.post(f"/api/v1/media/upload/{sid}/chunk/0")).status == 401
    assert (await local_api.complete(sid)).status == 201
    assert (await local_api.client.get(f"/no/such/{sid}")).status == 404

    text, after = await scrape(local_api.client)

    count = "mediagate_http_request_duration_seconds_count"
    assert moved(before, after, count, method="POST", route=CHUNK_ROUTE, status_class="2xx") == 1
    assert moved(before, after, count, method="POST", route=CHUNK_ROUTE, status_class="4xx") == 1
    initiate = "/api/v1/media/upload/initiate"
    assert moved(before, after, count, method="POST", route=initiate, status_class="2xx") == 1
    assert moved(before, after, count, method="GET", route="unmatched", status_class="4xx") == 1
    assert sid not in text
    assert moved(before, after, "mediagate_signed_urls_issued_total", kind="stream") == 1


async def test_s3_calls_are_counted_and_timed_by_operation(s3_api):
    _, before = await scrape(s3_api.client)
    session = await (await s3_api.initiate(filename="a.bin", size=11)).json()
    assert (await s3_api.put_chunk(session["session_id"], 0, b"hello world")).status == 200
    done = await (await s3_api.complete(session["session_id"])).json()
    played = await s3_api.client.get(
        f"/api/v1/media/stream/{done['media_id']}", headers=s3_api.headers, allow_redirects=False
    )
    assert played.status == 302

    _, after = await scrape(s3_api.client)

    calls = "mediagate_s3_requests_total"
    for operation in ("CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"):
        assert moved(before, after, calls, operation=operation, outcome="ok") == 1, operation
        timed = moved(
            before, after, "mediagate_s3_request_duration_seconds_count", operation=operation
        )
        assert timed == 1, operation
    assert moved(before, after, "mediagate_signed_urls_issued_total", kind="s3_presigned") == 1


async def test_an_s3_call_without_an_answer_is_counted_as_such(start_api, unreachable_s3):
    # The call happens while the app starts, before it could be scraped.
    before = parse(metrics.exposition(None)[0].decode())
    settings = unreachable_s3
    api = await start_api(settings)

    _, after = await scrape(api.client)

    calls = "mediagate_s3_requests_total"
    assert moved(before, after, calls, operation="HeadBucket", outcome="no_response") == 1


async def test_open_sessions_are_the_catalog_s_count_at_the_scrape(local_api):
    created = [await (await local_api.initiate(filename="a.txt", size=5)).json() for _ in range(3)]
    completed, aborted, _ = (session["session_id"] for session in created)
    assert (await local_api.put_chunk(completed, 0, b"hello")).status == 200
    assert (await local_api.complete(completed)).status == 201
    assert (await local_api.abort(aborted)).status == 204

    _, samples = await scrape(local_api.client)

    assert samples[("mediagate_upload_sessions_in_flight", frozenset())] == 1


async def test_a_scrape_without_the_catalog_answers_with_the_last_count(local_api):
    for _ in range(2):
        assert (await local_api.initiate(filename="a.txt", size=5)).status == 201
    _, counted = await scrape(local_api.client)
    await local_api.client.app[SERVICES].catalog.close()

    _, uncounted = await scrape(local_api.client)

    sessions = ("mediagate_upload_sessions_in_flight", frozenset())
    assert counted[sessions] == uncounted[sessions] == 2
