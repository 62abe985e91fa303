"""Problem answers: 4xx for bad input, never a 500; a server-side failure tells the client
what failed, never the server's insides."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from support.api import MiB, assert_problem, make_settings


async def test_a_503_from_s3_names_no_endpoint_bucket_key_or_upload_id(
    start_api, proxy, tmp_path, bucket
):
    settings = make_settings(
        tmp_path / "data", use_cloud_storage=True, s3_bucket=bucket, s3_endpoint_url=proxy.url
    )
    api = await start_api(settings)
    session = await (await api.initiate(filename="clip.mp4", size=6 * MiB)).json()
    proxy.cut_after(1 * MiB)  # S3 goes away in the middle of the chunk's part
    with capture_logs() as logs:
        failed = await api.put_chunk(session["session_id"], 0, b"x" * 6 * MiB)
        problem = await assert_problem(failed, 503, "storage-unavailable")

    text = await failed.text()
    for internal in (proxy.url.removeprefix("http://"), bucket, "clip.mp4", "uploadId"):
        assert internal not in text
    assert "request_id" in problem["detail"] and problem["request_id"]
    logged = [entry for entry in logs if entry["event"] == "request.problem"]
    assert [entry["status"] for entry in logged] == [503]
    assert proxy.url.removeprefix("http://") in logged[0]["detail"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_cannot_be_decoded_is_400_not_500(local_api, encoding):
    headers = {**local_api.headers, "Content-Encoding": encoding}
    answer = await local_api.client.post(
        "/api/v1/media/upload/initiate", data=b"not compressed at all", headers=headers
    )
    assert answer.status == 400
    assert answer.headers["Content-Type"] == "application/problem+json"
    problem = await answer.json()
    assert problem["title"] == "Malformed body"
    assert "not compressed" not in problem["detail"]
