"""S3 at start-up: connect, find or create the bucket, set CORS and the lifecycle rule.

Nothing here stops the server. When S3 cannot be used, one log line names
the cause and its fix (the four failure modes of the original guide: access
denied, wrong region, no credentials, bucket owned by another account; and
S3 unreachable), the returned `S3Status` says "unavailable", and new uploads
go to local disk. CORS and lifecycle set-up failures are logged and leave S3
usable: uploads do not depend on them.

PutBucketCors and PutBucketLifecycleConfiguration replace a bucket's whole
configuration, so mediagate reads the current rules and replaces only the one
carrying its own ID, leaving an operator's rules as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import ConnectionError as S3ConnectionError

from mediagate.config import Settings
from mediagate.storage.breaker import CircuitBreaker
from mediagate.storage.s3 import S3Store
from mediagate.storage.s3_status import S3State, S3Status

log = structlog.get_logger("mediagate.s3")

CORS_RULE_ID = "mediagate"
LIFECYCLE_RULE_ID = "mediagate-abort-incomplete-uploads"
CORS_METHODS = ["GET", "HEAD", "PUT", "POST"]
# What a browser's script may read from a presigned answer (Range playback, checks).
CORS_EXPOSED_HEADERS = ["ETag", "Content-Range", "Accept-Ranges", "Content-Length"]
CORS_MAX_AGE = 3600

# What the server needs at run time (HeadBucket is s3:ListBucket; every
# multipart call but abort is s3:PutObject), then what start-up set-up needs.
RUNTIME_ACTIONS = (
    "s3:ListBucket",
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
)
SETUP_ACTIONS = (
    "s3:CreateBucket",
    "s3:GetBucketCORS",
    "s3:PutBucketCORS",
    "s3:GetLifecycleConfiguration",
    "s3:PutLifecycleConfiguration",
)

_REGION_CODES = {
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
    # CreateBucket in a region the store does not serve (RGW: not its zonegroup's).
    "InvalidLocationConstraint",
}
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
_NO_CREDENTIALS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)
_UNREACHABLE = (S3ConnectionError, HTTPClientError, OSError)
_TRANSIENT = {"unreachable", "error"}
# What an S3 call can raise: an error answer, botocore's own failures, the network.
_S3_FAILURES = (ClientError, BotoCoreError, OSError)


@dataclass(frozen=True)
class Diagnosis:
    problem: str
    fix: str


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def error_status(error: ClientError) -> int | None:
    return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def bucket_region(answer: Mapping[str, Any]) -> str | None:
    """The bucket's region as S3 states it in an answer or an error answer, if it does."""
    headers = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return (
        answer.get("BucketRegion")
        or headers.get("x-amz-bucket-region")
        or answer.get("Error", {}).get("Region")
    )


def wrong_region(actual: str | None, bucket: str) -> Diagnosis:
    if actual:
        return Diagnosis("wrong_region", f"set AWS_S3_REGION={actual}")
    return Diagnosis(
        "wrong_region",
        "set AWS_S3_REGION to the bucket's region "
        f"(aws s3api get-bucket-location --bucket {bucket}), "
        "or, with AWS_S3_ENDPOINT_URL, to the region that endpoint serves",
    )


def diagnose(error: Exception, *, bucket: str, endpoint: str | None) -> Diagnosis:
    """Which failure mode `error` is, and what the operator should do about it."""
    if isinstance(error, ProfileNotFound):
        return Diagnosis(
            "no_credentials",
            "AWS_PROFILE names a profile that ~/.aws does not have: fix or unset it, "
            "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        )
    if isinstance(error, _NO_CREDENTIALS):
        return Diagnosis(
            "no_credentials",
            "give this machine or task an IAM role, "
            "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        )
    if isinstance(error, ClientError):
        return _diagnose_answer(error, bucket)
    if isinstance(error, _UNREACHABLE):
        where = endpoint or "S3"
        return Diagnosis(
            "unreachable",
            f"check that {where} is reachable from this host (AWS_S3_ENDPOINT_URL, "
            "firewall, proxy)",
        )
    return Diagnosis("error", "see detail")


def _diagnose_answer(error: ClientError, bucket: str) -> Diagnosis:
    code, status = error_code(error), error_status(error)
    region = bucket_region(error.response)
    if code in _REGION_CODES or status in (301, 307) or (status == 400 and region):
        return wrong_region(region, bucket)
    if code in _CREDENTIAL_CODES:
        return Diagnosis(
            "invalid_credentials",
            "S3 does not accept these credentials: check AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or unset both to use the IAM role",
        )
    if code == "BucketAlreadyExists":
        return Diagnosis(
            "bucket_taken",
            f"bucket names are global and {bucket!r} belongs to another account: "
            "choose another AWS_S3_BUCKET_NAME",
        )
    if code in {"AccessDenied", "AllAccessDisabled", "403"} or status == 403:
        return Diagnosis(
            "access_denied",
            f"allow {', '.join(RUNTIME_ACTIONS)} (and for start-up set-up "
            f"{', '.join(SETUP_ACTIONS)}) on arn:aws:s3:::{bucket} and "
            f"arn:aws:s3:::{bucket}/* in the IAM policy of these credentials, "
            "and check that the bucket policy does not deny them",
        )
    return Diagnosis("error", "see detail")


def same_rules(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> bool:
    """Whether two rule lists say the same: the rules in order, each one's lists as sets.

    A store may hand a rule's lists back in another order than it was given them
    (RGW returns CORS methods so); comparing them as lists would rewrite the rule
    on every start.
    """
    return len(a) == len(b) and all(_as_sets(x) == _as_sets(y) for x, y in zip(a, b, strict=True))


def _as_sets(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {name: _as_sets(item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return frozenset(_hashable(_as_sets(item)) for item in value)
    return value


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((name, _hashable(item)) for name, item in value.items()))
    return value


def merge_rule(rules: Sequence[Mapping[str, Any]], ours: Mapping[str, Any]) -> list[Any]:
    """`rules` with ours in place of the one carrying its ID, or after them all."""
    if any(rule.get("ID") == ours["ID"] for rule in rules):
        return [ours if rule.get("ID") == ours["ID"] else rule for rule in rules]
    return [*rules, ours]


def cors_rule(origins: Sequence[str]) -> dict[str, Any]:
    return {
        "ID": CORS_RULE_ID,
        "AllowedOrigins": list(origins),
        "AllowedMethods": CORS_METHODS,
        "AllowedHeaders": ["*"],
        "ExposeHeaders": CORS_EXPOSED_HEADERS,
        "MaxAgeSeconds": CORS_MAX_AGE,
    }


def abort_incomplete_rule(prefix: str, days: int) -> dict[str, Any]:
    return {
        "ID": LIFECYCLE_RULE_ID,
        "Status": "Enabled",
        "Filter": {"Prefix": prefix},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days},
    }


async def open_s3(
    settings: Settings, stack: contextlib.AsyncExitStack
) -> tuple[S3Store | None, S3Status]:
    """The store (closed with `stack`) and whether it can take uploads now.

    No store when its clients cannot even be made (AWS_PROFILE naming no profile).
    """
    try:
        store = await stack.enter_async_context(S3Store.connect(settings))
    except BotoCoreError as error:
        return None, _unavailable(settings, _diagnose(error, settings), str(error))
    return store, await prepare_bucket(store.control_client, settings)


async def prepare_until_ready(
    store: S3Store, status: S3Status, breaker: CircuitBreaker, settings: Settings
) -> None:
    """Retry the start-up preparation until S3 is usable, then let uploads use it again.

    An operator may fix what start-up reported (permissions, a network) without
    a restart; and a bucket that could not be created at start must exist
    before the first upload goes to S3.
    """
    while not status.ready:
        await asyncio.sleep(settings.s3_probe_max_interval)
        if (await prepare_bucket(store.control_client, settings)).ready:
            status.state, status.problem = S3State.OK, None
            breaker.succeeded()


async def prepare_bucket(client: Any, settings: Settings) -> S3Status:
    bucket = settings.s3_bucket or ""
    try:
        region = await _find_or_create_bucket(client, bucket, settings.s3_region)
    except _S3_FAILURES as error:
        return _unavailable(settings, _diagnose(error, settings), str(error))
    if region and region != settings.s3_region:
        # botocore follows S3's redirect for small calls, but a streamed part
        # cannot be sent twice and presigned URLs would name the wrong region.
        detail = f"the bucket is in {region}, AWS_S3_REGION is {settings.s3_region}"
        return _unavailable(settings, wrong_region(region, bucket), detail)
    await _apply_cors(client, bucket, settings.cors_origins)
    await _apply_abort_rule(client, bucket, settings.key_prefix, settings.abort_incomplete_days)
    log.info("s3.ready", bucket=bucket, region=settings.s3_region)
    return S3Status(S3State.OK)


async def check_access(client: Any, settings: Settings) -> S3Status:
    """Whether these settings can use the bucket, changing nothing (for a dry run).

    One ListObjectsV2 (s3:ListBucket, as HeadBucket): unlike HeadBucket's, its error
    answers carry their code, so wrong keys, a denied action and a wrong region are
    told apart without the CreateBucket that `prepare_bucket` may send. A missing
    bucket is no failure: `prepare_bucket` creates it.
    """
    bucket = settings.s3_bucket or ""
    try:
        await client.list_objects_v2(Bucket=bucket, MaxKeys=0)
    except ClientError as error:
        if error_code(error) == "NoSuchBucket":
            return S3Status(S3State.OK)
        return _unavailable(settings, _diagnose(error, settings), str(error))
    except _S3_FAILURES as error:
        return _unavailable(settings, _diagnose(error, settings), str(error))
    return S3Status(S3State.OK)


async def _find_or_create_bucket(client: Any, bucket: str, region: str) -> str | None:
    """The bucket's region as S3 reports it, creating the bucket first if it is missing."""
    try:
        return bucket_region(await client.head_bucket(Bucket=bucket))
    except ClientError as error:
        if error_status(error) == 404:
            await _create_bucket(client, bucket, region)
            return region
        if error_status(error) == 403:
            await _explain_forbidden(client, bucket, region)
        raise


def _create_bucket_arguments(bucket: str, region: str) -> dict[str, Any]:
    arguments: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        # Without it S3 creates the bucket in us-east-1 (or refuses, outside it).
        arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
    return arguments


async def _create_bucket(client: Any, bucket: str, region: str) -> None:
    try:
        await client.create_bucket(**_create_bucket_arguments(bucket, region))
    except ClientError as error:
        if error_code(error) != "BucketAlreadyOwnedByYou":  # another instance won the race
            raise
        return
    log.info("s3.bucket_created", bucket=bucket, region=region)


async def _explain_forbidden(client: Any, bucket: str, region: str) -> None:
    """Raise what CreateBucket says if it tells why HeadBucket answered 403.

    A HEAD answer has no body, so its 403 cannot say whether these credentials
    lack s3:ListBucket, the bucket belongs to another account, or the store does
    not take these keys at all (RGW answers HeadBucket so for wrong keys);
    CreateBucket's answer has a code that tells them apart. (For a bucket the
    caller owns, S3 in us-east-1 answers 200 and re-applies the default private
    ACL; elsewhere it refuses.)
    """
    try:
        await client.create_bucket(**_create_bucket_arguments(bucket, region))
    except ClientError as error:
        if error_code(error) in {"BucketAlreadyExists", *_CREDENTIAL_CODES}:
            raise


async def _apply_cors(client: Any, bucket: str, origins: Sequence[str]) -> None:
    if not origins:
        return
    try:
        try:
            current = (await client.get_bucket_cors(Bucket=bucket))["CORSRules"]
        except ClientError as error:
            if error_code(error) != "NoSuchCORSConfiguration":
                raise
            current = []
        merged = merge_rule(current, cors_rule(origins))
        if not same_rules(merged, current):
            await client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": merged})
            log.info("s3.cors_set", bucket=bucket, origins=list(origins))
    except _S3_FAILURES as error:
        _setup_failed("cors", error, ("s3:GetBucketCORS", "s3:PutBucketCORS"))


async def _apply_abort_rule(client: Any, bucket: str, prefix: str, days: int) -> None:
    if days == 0:
        return
    try:
        try:
            current_config = await client.get_bucket_lifecycle_configuration(Bucket=bucket)
        except ClientError as error:
            if error_code(error) != "NoSuchLifecycleConfiguration":
                raise
            current_config = {}
        current = current_config.get("Rules", [])
        merged = merge_rule(current, abort_incomplete_rule(prefix, days))
        if same_rules(merged, current):
            return
        arguments: dict[str, Any] = {"Bucket": bucket, "LifecycleConfiguration": {"Rules": merged}}
        if "TransitionDefaultMinimumObjectSize" in current_config:
            # Left out, S3 would reset the operator's choice to its default.
            arguments["TransitionDefaultMinimumObjectSize"] = current_config[
                "TransitionDefaultMinimumObjectSize"
            ]
        await client.put_bucket_lifecycle_configuration(**arguments)
        log.info("s3.lifecycle_set", bucket=bucket, prefix=prefix, abort_incomplete_days=days)
    except _S3_FAILURES as error:
        _setup_failed(
            "lifecycle", error, ("s3:GetLifecycleConfiguration", "s3:PutLifecycleConfiguration")
        )


def _setup_failed(step: str, error: Exception, actions: Sequence[str]) -> None:
    """One warning line; uploads do not depend on CORS or lifecycle rules."""
    code = error_code(error) if isinstance(error, ClientError) else ""
    status = error_status(error) if isinstance(error, ClientError) else None
    if code == "NotImplemented" or status == 501:
        problem = "unsupported"
        fix = f"this S3-compatible store has no bucket {step} API; set it up there if needed"
    elif code == "AccessDenied" or status == 403:
        problem = "access_denied"
        fix = f"allow {' and '.join(actions)} for these credentials, or set it up by hand"
    else:
        problem, fix = "error", "see detail"
    log.warning(f"s3.{step}_not_set", problem=problem, fix=fix, detail=str(error))


def _diagnose(error: Exception, settings: Settings) -> Diagnosis:
    return diagnose(error, bucket=settings.s3_bucket or "", endpoint=settings.s3_endpoint_url)


def _unavailable(settings: Settings, diagnosis: Diagnosis, detail: str) -> S3Status:
    """The one line that says S3 is out, why, and what to do."""
    report = log.warning if diagnosis.problem in _TRANSIENT else log.error
    report(
        "s3.unavailable",
        problem=diagnosis.problem,
        fix=diagnosis.fix,
        detail=detail,
        bucket=settings.s3_bucket,
        region=settings.s3_region,
        new_uploads="local disk",
    )
    return S3Status(S3State.UNAVAILABLE, diagnosis.problem)
