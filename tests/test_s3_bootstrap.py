"""S3 at start-up: bucket, CORS and lifecycle set-up, and one log line per failure mode.

Against a real moto server where moto can play the part, and a loopback stub
S3 where it cannot (moto grants every request, so it never answers 403).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from pydantic import SecretStr
from structlog.testing import capture_logs

from mediagate.config import SettingsError, load_settings
from mediagate.storage.s3_bootstrap import (
    CORS_RULE_ID,
    LIFECYCLE_RULE_ID,
    diagnose,
    merge_rule,
    same_rules,
)
from support.api import MiB, make_settings
from support.tier import S3_ACCESS_KEY, only_on_rgw, skip_on_rgw

pytestmark = pytest.mark.store

OPERATOR_LIFECYCLE_RULE = {
    "ID": "operator-expire-logs",
    "Status": "Enabled",
    "Filter": {"Prefix": "logs/"},
    "Expiration": {"Days": 30},
}
OPERATOR_CORS_RULE = {
    "ID": "operator",
    "AllowedOrigins": ["https://admin.example"],
    "AllowedMethods": ["GET"],
}


# --- diagnosis of each failure, as data ---------------------------------------------


def answer(
    code: str, status: int, *, region_header: str | None = None, **error: str
) -> ClientError:
    headers = {"x-amz-bucket-region": region_header} if region_header else {}
    return ClientError(
        {
            "Error": {"Code": code, "Message": code, **error},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
        },
        "HeadBucket",
    )


@pytest.mark.parametrize(
    ("error", "problem", "fix_says"),
    [
        (answer("AccessDenied", 403), "access_denied", "s3:ListBucket"),
        (answer("403", 403), "access_denied", "bucket policy"),
        (answer("BucketAlreadyExists", 409), "bucket_taken", "another AWS_S3_BUCKET_NAME"),
        (
            answer("PermanentRedirect", 301, region_header="eu-west-1"),
            "wrong_region",
            "set AWS_S3_REGION=eu-west-1",
        ),
        (
            answer("AuthorizationHeaderMalformed", 400, Region="ap-southeast-2"),
            "wrong_region",
            "set AWS_S3_REGION=ap-southeast-2",
        ),
        (answer("400", 400, region_header="us-west-2"), "wrong_region", "AWS_S3_REGION=us-west-2"),
        (answer("301", 301), "wrong_region", "get-bucket-location --bucket media"),
        (answer("InvalidAccessKeyId", 403), "invalid_credentials", "AWS_ACCESS_KEY_ID"),
        (answer("InternalError", 500), "error", "see detail"),
        (NoCredentialsError(), "no_credentials", "IAM role"),
        (ProfileNotFound(profile="gone"), "no_credentials", "AWS_PROFILE"),
        (EndpointConnectionError(endpoint_url="http://s3"), "unreachable", "http://minio:9000"),
        (ConnectTimeoutError(endpoint_url="http://s3"), "unreachable", "reachable"),
        (ReadTimeoutError(endpoint_url="http://s3"), "unreachable", "reachable"),
    ],
)
def test_each_failure_is_diagnosed_with_its_fix(error, problem, fix_says):
    diagnosis = diagnose(error, bucket="media", endpoint="http://minio:9000")
    assert diagnosis.problem == problem
    assert fix_says in diagnosis.fix


OURS = {"ID": "mediagate", "value": "new"}


@pytest.mark.parametrize(
    ("rules", "merged"),
    [
        ([], [OURS]),
        ([{"ID": "theirs"}], [{"ID": "theirs"}, OURS]),
        (
            [{"ID": "a"}, {"ID": "mediagate", "value": "old"}, {"ID": "b"}],
            [{"ID": "a"}, OURS, {"ID": "b"}],
        ),
        ([{"AllowedOrigins": ["*"]}], [{"AllowedOrigins": ["*"]}, OURS]),
    ],
)
def test_merge_replaces_only_our_rule(rules, merged):
    assert merge_rule(rules, OURS) == merged


CORS = {"ID": "mediagate", "AllowedMethods": ["GET", "HEAD", "PUT"], "MaxAgeSeconds": 60}
LIFECYCLE = {"ID": "x", "Filter": {"And": {"Tags": [{"Key": "a"}, {"Key": "b"}]}}}


@pytest.mark.parametrize(
    ("current", "same"),
    [
        ([CORS], True),
        # RGW hands the methods back in another order: still the same rule.
        ([{**CORS, "AllowedMethods": ["PUT", "GET", "HEAD"]}], True),
        ([{**CORS, "AllowedMethods": ["GET", "HEAD"]}], False),
        ([{**CORS, "MaxAgeSeconds": 61}], False),
        ([{**CORS, "ExtraField": 1}], False),
        ([], False),
        ([CORS, CORS], False),
    ],
)
def _x_with_their_lists_as_sets(current, same):
    assert same_rules(current, [CORS]) is same


def _y_nested_lists_count():
    reordered = {"ID": "x", "Filter": {"And": {"Tags": [{"Key": "b"}, {"Key": "a"}]}}}
    assert same_rules([LIFECYCLE], [reordered])
    assert not same_rules([LIFECYCLE, CORS], [CORS, LIFECYCLE])


def test_abort_rule_shorter_than_a_session_is_refused_at_start_up():
    with pytest.raises(SettingsError, match="MEDIAGATE_ABORT_INCOMPLETE_DAYS=1: must be longer"):
        load_settings(
            _env_file=None,
            use_cloud_storage=True,
            s3_bucket="media",
            abort_incomplete_days=1,
            session_ttl=2 * 24 * 3600,
        )


# --- against moto ----------------------------------------------------------------


def log_problems(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Warnings and errors about storage (start-up also warns of a missing public URL)."""
    return [
        entry
        for entry in logs
        if entry["log_level"] in {"warning", "error"} and entry["event"] != "server.no_public_url"
    ]


def the_one_line(logs: list[dict[str, Any]]) -> dict[str, Any]:
    (line,) = log_problems(logs)
    assert line["event"] == "s3.unavailable"
    assert line["new_uploads"] == "local disk"
    return line


async def assert_uploads_go_to_local_disk(api) -> None:
    readiness = await (await api.client.get("/readyz")).json()
    assert readiness["catalog"] == "ok"
    assert readiness["s3"] == "unavailable"
    created = await api.initiate(filename="a.txt", size=2)
    assert created.status == 201
    session = await created.json()
    assert session["storage"] == "local"
    assert (await api.put_chunk(session["session_id"], 0, b"ok")).status == 200
    assert (await api.complete(session["session_id"])).status == 201


@skip_on_rgw  # RGW serves one region (its zonegroup); see the unknown-region tests
async def test_bucket_is_created_in_the_configured_region(
    start_api, s3_settings, s3_objects, bucket
):
    settings = s3_settings.model_copy(update={"s3_region": "eu-west-1"})
    with capture_logs() as logs:
        api = await start_api(settings)

    location = await s3_objects.get_bucket_location(Bucket=bucket)
    assert location["LocationConstraint"] == "eu-west-1"
    assert log_problems(logs) == []
    assert [entry["event"] for entry in logs if entry["event"].startswith("s3.")] == [
        "s3.bucket_created",
        "s3.lifecycle_set",
        "s3.ready",
    ]
    ready = await (await api.client.get("/readyz")).json()
    assert (ready["catalog"], ready["s3"]) == ("ok", "ok")


@pytest.mark.transport
async def test_cors_rule_is_added_beside_the_operators(start_api, s3_settings, s3_objects, bucket):
    await s3_objects.create_bucket(Bucket=bucket)
    await s3_objects.put_bucket_cors(
        Bucket=bucket, CORSConfiguration={"CORSRules": [OPERATOR_CORS_RULE]}
    )
    settings = s3_settings.model_copy(
        update={"cors_origins": ["https://app.example", "https://cdn.example"]}
    )
    await start_api(settings)

    rules = (await s3_objects.get_bucket_cors(Bucket=bucket))["CORSRules"]
    assert [rule.get("ID") for rule in rules] == ["operator", CORS_RULE_ID]
    ours = rules[1]
    assert ours["AllowedOrigins"] == ["https://app.example", "https://cdn.example"]
    assert sorted(ours["AllowedMethods"]) == ["GET", "HEAD", "POST", "PUT"]
    assert sorted(ours["ExposeHeaders"]) == [
        "Accept-Ranges",
        "Content-Length",
        "Content-Range",
        "ETag",
    ]


async def test_a_restart_rewrites_neither_rule(start_api, s3_settings):
    """Before: RGW returns the CORS methods in another order, and the rule was put
    again on every start (moto keeps the order, so only the RGW tier showed it)."""
    settings = s3_settings.model_copy(update={"cors_origins": ["https://app.example"]})
    with capture_logs() as first:
        await start_api(settings)
    with capture_logs() as second:
        await start_api(settings)

    def setups(logs):
        return [entry["event"] for entry in logs if entry["event"].endswith("_set")]

    assert setups(first) == ["s3.cors_set", "s3.lifecycle_set"]
    assert setups(second) == []


async def test_no_cors_origins_leaves_cors_alone(s3_api, s3_objects, bucket):
    with pytest.raises(ClientError, match="NoSuchCORSConfiguration"):
        await s3_objects.get_bucket_cors(Bucket=bucket)


async def test_abort_rule_is_merged_into_an_existing_lifecycle(
    start_api, s3_settings, s3_objects, bucket
):
    await s3_objects.create_bucket(Bucket=bucket)
    await s3_objects.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [OPERATOR_LIFECYCLE_RULE]}
    )
    await start_api(s3_settings)
    # A restart with another setting replaces mediagate's rule, never duplicates it.
    await start_api(s3_settings.model_copy(update={"abort_incomplete_days": 3}))

    rules = (await s3_objects.get_bucket_lifecycle_configuration(Bucket=bucket))["Rules"]
    by_id = {rule["ID"]: rule for rule in rules}
    assert len(rules) == 2
    assert by_id["operator-expire-logs"]["Expiration"] == {"Days": 30}
    ours = by_id[LIFECYCLE_RULE_ID]
    assert ours["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 3}
    assert ours["Filter"] == {"Prefix": "media/"}
    assert ours["Status"] == "Enabled"


@only_on_rgw
async def test_the_abort_rule_makes_a_real_store_abort_a_forgotten_upload(
    start_api, s3_settings, s3_objects, bucket
):
    """RGW runs its lifecycle with a 10 s "day" on the tier (`rgw lc debug interval`):
    an upload abandoned under the key prefix is gone within a few "days", one
    elsewhere stays. moto sets rules but never applies them."""
    settings = s3_settings.model_copy(update={"abort_incomplete_days": 1, "session_ttl": 3600})
    api = await start_api(settings)
    session = await (await api.initiate(filename="left.mp4", size=6 * MiB)).json()
    assert session["storage"] == "s3"
    await s3_objects.create_multipart_upload(Bucket=bucket, Key="elsewhere/x")

    async def open_keys() -> set[str]:
        answer = await s3_objects.list_multipart_uploads(Bucket=bucket)
        return {upload["Key"] for upload in answer.get("Uploads", [])}

    assert len(await open_keys()) == 2
    async with asyncio.timeout(300):
        while len(await open_keys()) == 2:
            await asyncio.sleep(5)
    assert await open_keys() == {"elsewhere/x"}


async def test_abort_rule_off_leaves_the_lifecycle_alone(
    start_api, s3_settings, s3_objects, bucket
):
    await start_api(s3_settings.model_copy(update={"abort_incomplete_days": 0}))
    with pytest.raises(ClientError, match="NoSuchLifecycleConfiguration"):
        await s3_objects.get_bucket_lifecycle_configuration(Bucket=bucket)


@skip_on_rgw  # RGW cannot hold a bucket in another region
async def test_wrong_region_is_one_line_naming_the_right_one(
    start_api, s3_settings, s3_objects, bucket
):
    await s3_objects.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"}
    )
    with capture_logs() as logs:
        api = await start_api(s3_settings)

    line = the_one_line(logs)
    assert line["problem"] == "wrong_region"
    assert line["fix"] == "set AWS_S3_REGION=us-west-2"
    await assert_uploads_go_to_local_disk(api)


@pytest.mark.parametrize("profile", [None, "mediagate-no-such-profile"], ids=["empty", "profile"])
async def test_no_credentials_is_one_line(start_api, s3_settings, tmp_path, monkeypatch, profile):
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    if profile:
        monkeypatch.setenv("AWS_PROFILE", profile)
    settings = s3_settings.model_copy(
        update={"aws_access_key_id": None, "aws_secret_access_key": None}
    )
    with capture_logs() as logs:
        api = await start_api(settings)

    line = the_one_line(logs)
    assert line["problem"] == "no_credentials"
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in line["fix"]
    await assert_uploads_go_to_local_disk(api)


async def test_unreachable_s3_is_one_warning_and_the_server_starts(start_api, unreachable_s3):
    settings = unreachable_s3
    with capture_logs() as logs:
        api = await start_api(settings)

    line = the_one_line(logs)
    assert (line["log_level"], line["problem"]) == ("warning", "unreachable")
    assert settings.s3_endpoint_url in line["fix"]
    assert (await (await api.client.get("/readyz")).json())["s3_problem"] == "unreachable"
    await assert_uploads_go_to_local_disk(api)


@only_on_rgw
@pytest.mark.parametrize(
    ("key", "secret"),
    [("no-such-key", "whatever"), (None, "not-the-secret")],
    ids=["unknown-key", "wrong-secret"],
)
async def test_wrong_keys_are_invalid_credentials_on_a_real_store(
    start_api, s3_settings, key, secret
):
    """Before: RGW answers HeadBucket with a body-less 403, diagnosed `access_denied`."""
    settings = s3_settings.model_copy(
        update={
            "aws_access_key_id": key or S3_ACCESS_KEY,
            "aws_secret_access_key": SecretStr(secret),
            "s3_max_attempts": 1,
        }
    )
    with capture_logs() as logs:
        api = await start_api(settings)

    line = the_one_line(logs)
    assert line["problem"] == "invalid_credentials"
    assert "AWS_ACCESS_KEY_ID" in line["fix"]
    await assert_uploads_go_to_local_disk(api)


@only_on_rgw
async def test_a_region_the_store_does_not_serve_is_wrong_region_on_a_real_store(
    start_api, s3_settings
):
    """Before: RGW refuses CreateBucket with InvalidLocationConstraint: `problem=error`."""
    with capture_logs() as logs:
        api = await start_api(s3_settings.model_copy(update={"s3_region": "eu-west-1"}))

    line = the_one_line(logs)
    assert line["problem"] == "wrong_region"
    assert "the region that endpoint serves" in line["fix"]
    await assert_uploads_go_to_local_disk(api)


# --- against a stub S3 that refuses ------------------------------------------------

Answers = dict[tuple[str, str], tuple[int, str | None]]


class StubS3:
    """Answers each (method, sub-resource such as "cors") as scripted; 200 otherwise."""

    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        call = (request.method, next(iter(request.query), ""))
        self.calls.append(call)
        status, code = self.answers.get(call, (200, None))
        if code is None or request.method == "HEAD":
            return web.Response(status=status)
        body = f"<Error><Code>{code}</Code><Message>{code}</Message></Error>"
        return web.Response(status=status, text=body, content_type="application/xml")


StartStub = Callable[[Answers], Awaitable[tuple[StubS3, str]]]


@pytest.fixture
def stub_s3(aiohttp_server: Any) -> StartStub:
    async def start(answers: Answers) -> tuple[StubS3, str]:
        stub = StubS3(answers)
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", stub.handle)
        server = await aiohttp_server(app, host="127.0.0.1")
        return stub, str(server.make_url("")).rstrip("/")

    return start


def stub_settings(tmp_path, endpoint: str, **overrides: Any):
    return make_settings(
        tmp_path / "data",
        use_cloud_storage=True,
        s3_bucket="mediagate-stubbed",
        s3_endpoint_url=endpoint,
        s3_max_attempts=1,
        **overrides,
    )


async def test_access_denied_is_one_line_listing_the_actions(start_api, stub_s3, tmp_path):
    _, endpoint = await stub_s3({("HEAD", ""): (403, None), ("PUT", ""): (403, "AccessDenied")})
    with capture_logs() as logs:
        api = await start_api(stub_settings(tmp_path, endpoint))

    line = the_one_line(logs)
    assert (line["log_level"], line["problem"]) == ("error", "access_denied")
    for action in ("s3:ListBucket", "s3:PutObject", "s3:AbortMultipartUpload", "s3:PutBucketCORS"):
        assert action in line["fix"]
    assert "arn:aws:s3:::mediagate-stubbed/*" in line["fix"]
    assert "bucket policy" in line["fix"]
    await assert_uploads_go_to_local_disk(api)


@pytest.mark.parametrize("code", ["InvalidAccessKeyId", "SignatureDoesNotMatch"])
async def test_wrong_keys_behind_a_bodyless_403_are_invalid_credentials(
    start_api, stub_s3, tmp_path, code
):
    """RGW's answers to wrong keys, as the RGW tier recorded them: HeadBucket 403 without
    a body, CreateBucket 403 with the code."""
    _, endpoint = await stub_s3({("HEAD", ""): (403, None), ("PUT", ""): (403, code)})
    with capture_logs() as logs:
        api = await start_api(stub_settings(tmp_path, endpoint))

    line = the_one_line(logs)
    assert (line["log_level"], line["problem"]) == ("error", "invalid_credentials")
    await assert_uploads_go_to_local_disk(api)


async def test_a_region_the_store_does_not_serve_is_wrong_region(start_api, stub_s3, tmp_path):
    """RGW's answer to CreateBucket in a region that is not its zonegroup's."""
    _, endpoint = await stub_s3(
        {("HEAD", ""): (404, None), ("PUT", ""): (400, "InvalidLocationConstraint")}
    )
    with capture_logs() as logs:
        api = await start_api(stub_settings(tmp_path, endpoint, s3_region="eu-west-1"))

    line = the_one_line(logs)
    assert line["problem"] == "wrong_region"
    assert "AWS_S3_REGION" in line["fix"]
    await assert_uploads_go_to_local_disk(api)


async def test_bucket_of_another_account_is_one_line(start_api, stub_s3, tmp_path):
    # S3 answers HeadBucket on another account's bucket with a body-less 403.
    stub, endpoint = await stub_s3(
        {("HEAD", ""): (403, None), ("PUT", ""): (409, "BucketAlreadyExists")}
    )
    with capture_logs() as logs:
        api = await start_api(stub_settings(tmp_path, endpoint))

    line = the_one_line(logs)
    assert line["problem"] == "bucket_taken"
    assert line["fix"].endswith("choose another AWS_S3_BUCKET_NAME")
    assert stub.calls[:2] == [("HEAD", ""), ("PUT", "")]
    await assert_uploads_go_to_local_disk(api)


async def test_store_without_cors_api_is_logged_and_s3_stays_ready(start_api, stub_s3, tmp_path):
    # MinIO, for one, answers PutBucketCors with 501 NotImplemented.
    stub, endpoint = await stub_s3(
        {
            ("GET", "cors"): (501, "NotImplemented"),
            ("GET", "lifecycle"): (404, "NoSuchLifecycleConfiguration"),
        }
    )
    settings = stub_settings(tmp_path, endpoint, cors_origins=["https://app.example"])
    with capture_logs() as logs:
        api = await start_api(settings)

    (line,) = log_problems(logs)
    assert (line["event"], line["problem"]) == ("s3.cors_not_set", "unsupported")
    assert ("PUT", "lifecycle") in stub.calls
    ready = await (await api.client.get("/readyz")).json()
    assert (ready["catalog"], ready["s3"]) == ("ok", "ok")
