"""S3 (and S3-compatible) store: each chunk becomes one multipart-upload part.

A chunk's bytes go from the client's request straight into `UploadPart`, as one
PUT of a presigned URL (storage/s3_parts.py: botocore's request pipeline costs
more CPU per part than we want to spend). Other streamed bodies (a tus tail's
PutObject) go through a streaming client, which needs three settings that
botocore's defaults get wrong for us:

- `payload_signing_enabled: False` — SigV4 would otherwise hash the whole body
  before sending it (and over plain http it would, unless told explicitly).
- `request_checksum_calculation: "when_required"` — the default CRC32 checksum
  needs a seekable body (`no attribute 'tell'`) to compute before sending.
- no retries — a streamed body cannot be rewound, so botocore's retry would die
  with `UnseekableStreamError` and hide the real error. The engine decides what
  a failed part means instead.

Small calls (create, complete, abort, head, delete) go through a second client
with standard retries. tests/test_s3_streaming.py pins this behaviour so an
upgrade of aiobotocore or botocore cannot silently break it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from datetime import datetime
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioCredentials
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from mediagate import metrics
from mediagate.config import Settings
from mediagate.disposition import presentation
from mediagate.errors import BodyReadTimeout, NotFound, StorageRejected, StorageUnavailable
from mediagate.models import StorageKind
from mediagate.proxies import EnvironmentProxies
from mediagate.storage.base import (
    ListedPart,
    NewObject,
    ObjectRead,
    PartBody,
    ReadConditions,
    Route,
    StoredObject,
)
from mediagate.storage.s3_instrumentation import instrument
from mediagate.storage.s3_parts import MAX_CONNECTIONS, PartUploads, part_session
from mediagate.storage.s3_signing import ObjectSigner

READ_SIZE = 1024 * 1024
# Answers that mean S3 cannot be used at all right now (misconfigured, or
# throttling), as opposed to refusing one request: uploads go to local disk.
UNUSABLE_CODES = {"NoSuchBucket", "SlowDown", "RequestTimeout", "InvalidAccessKeyId"}


def _s3_options(settings: Settings) -> dict[str, Any]:
    # S3-compatible stores (MinIO, Ceph, moto) behind an endpoint URL are
    # addressed by path; virtual-host addressing needs DNS for each bucket.
    return {"addressing_style": "path"} if settings.s3_endpoint_url else {}


def streaming_config(settings: Settings) -> AioConfig:
    return AioConfig(
        s3={**_s3_options(settings), "payload_signing_enabled": False},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"total_max_attempts": 1},
        connect_timeout=settings.s3_connect_timeout,
        read_timeout=settings.s3_read_timeout,
        max_pool_connections=MAX_CONNECTIONS,
    )


def control_config(settings: Settings) -> AioConfig:
    return AioConfig(
        s3=_s3_options(settings),
        # Presigned URLs with SigV4, which every region and S3-compatible store takes.
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "total_max_attempts": settings.s3_max_attempts},
        connect_timeout=settings.s3_connect_timeout,
        read_timeout=settings.s3_read_timeout,
        max_pool_connections=MAX_CONNECTIONS,
    )


@contextlib.contextmanager
def s3_errors(operation: str) -> Iterator[None]:
    """Translate botocore's failures into the engine's problems."""
    try:
        yield
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
        if code in {"NoSuchKey", "NoSuchUpload", "404", "NotFound"}:
            raise NotFound(f"S3 {operation}: {code}") from error
        if status >= 500 or status in (403, 429) or code in UNUSABLE_CODES:
            raise StorageUnavailable(f"S3 {operation} failed: {code or error}") from error
        raise StorageRejected(f"S3 {operation} refused: {code}: {error}") from error
    except (BotoCoreError, OSError) as error:
        raise StorageUnavailable(f"S3 {operation} failed: {error}") from error


def _get_arguments(
    bucket: str, key: str, conditions: ReadConditions, *, head: bool
) -> dict[str, Any]:
    arguments: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if conditions.range and not head:  # RFC 9110 §14.2: HEAD ignores Range
        arguments["Range"] = conditions.range
        if conditions.if_range:
            if conditions.if_range.startswith(('"', "W/")):
                arguments["IfMatch"] = conditions.if_range
            elif since := _parse_date(conditions.if_range):
                arguments["IfUnmodifiedSince"] = since
    optional = {
        "IfMatch": conditions.if_match,
        "IfNoneMatch": conditions.if_none_match,
        "IfModifiedSince": conditions.if_modified_since,
        "IfUnmodifiedSince": conditions.if_unmodified_since,
    }
    arguments.update({name: value for name, value in optional.items() if value})
    return arguments


def _parse_date(value: str) -> datetime | None:
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def _object_headers(answer: dict[str, Any]) -> dict[str, str]:
    headers = {
        "Content-Length": str(answer["ContentLength"]),
        "ETag": answer["ETag"],
        "Last-Modified": formatdate(answer["LastModified"].timestamp(), usegmt=True),
        "Accept-Ranges": "bytes",
    }
    if answer.get("ContentRange"):
        headers["Content-Range"] = answer["ContentRange"]
    return headers


def _error_headers(error: ClientError, status: int) -> dict[str, str]:
    sent = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    headers = {"Accept-Ranges": "bytes"}
    for name in ("ETag", "Last-Modified"):
        if name.lower() in sent:
            headers[name] = sent[name.lower()]
    if status == 416 and (size := error.response.get("Error", {}).get("ActualObjectSize")):
        headers["Content-Range"] = f"bytes */{size}"
    return headers


async def _close_after(body: Any) -> AsyncGenerator[bytes, None]:
    """The object's bytes in pieces; the S3 connection is released however it ends."""
    async with body as stream:
        async for piece in stream.iter_chunks(READ_SIZE):
            yield piece


class S3Store:
    kind = StorageKind.S3

    def __init__(
        self,
        streaming_client: Any,
        control_client: Any,
        bucket: str,
        *,
        cache_control: str,
        storage_class: str | None,
        signer: ObjectSigner,
        parts: PartUploads,
        direct_client: Any = None,
        ca_file: str | None = None,
        proxies: EnvironmentProxies | None = None,
    ) -> None:
        self._stream = streaming_client
        self._s3 = control_client
        self._signer = signer
        self._parts = parts
        # Signs the part URLs of direct uploads: at the endpoint clients reach.
        self._direct = direct_client or control_client
        self.bucket = bucket
        self._cache_control = cache_control
        self._storage_class = storage_class
        self._ca_file = ca_file
        self._proxies = proxies or EnvironmentProxies()

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, settings: Settings) -> AsyncIterator[S3Store]:
        session = get_session()
        credentials: dict[str, Any] = {}
        if settings.aws_access_key_id and settings.aws_secret_access_key:
            credentials = {
                "aws_access_key_id": settings.aws_access_key_id,
                "aws_secret_access_key": settings.aws_secret_access_key.get_secret_value(),
            }
        common = {
            "region_name": settings.s3_region,
            "endpoint_url": settings.s3_endpoint_url,
            **credentials,
        }
        direct_endpoint = {**common, "endpoint_url": settings.direct_endpoint_url}
        bucket = settings.s3_bucket or ""
        ca_file = session.get_config_variable("ca_bundle")  # AWS_CA_BUNDLE
        proxies = EnvironmentProxies()
        async with (
            session.create_client("s3", config=streaming_config(settings), **common) as stream,
            session.create_client("s3", config=control_config(settings), **common) as control,
            session.create_client("s3", config=control_config(settings), **direct_endpoint)
            if settings.direct_endpoint_url
            else contextlib.nullcontext() as direct,
            part_session(settings, ca_file) as http,
        ):
            instrument(stream)
            instrument(control)
            # The clients' credentials, as aiobotocore chose them for each client.
            signing = (
                AioCredentials(
                    credentials["aws_access_key_id"], credentials["aws_secret_access_key"]
                )
                if credentials
                else await session.get_credentials()
            )
            signer = ObjectSigner(control, signing, bucket)
            yield cls(
                stream,
                control,
                bucket,
                cache_control=settings.cache_control,
                storage_class=settings.storage_class,
                signer=signer,
                parts=PartUploads(signer, control, http, proxies),
                direct_client=direct,
                ca_file=ca_file,
                proxies=proxies,
            )

    @property
    def control_client(self) -> Any:
        """The client for small calls, for the bucket set-up in `s3_bootstrap`."""
        return self._s3

    async def start_upload(self, target: NewObject) -> str:
        with s3_errors("CreateMultipartUpload"):
            answer = await self._s3.create_multipart_upload(**self._new_object_arguments(target))
        return answer["UploadId"]

    async def put_part(
        self, key: str, upload_id: str, *, number: int, offset: int, length: int, body: PartBody
    ) -> str:
        try:
            with s3_errors("UploadPart"):
                try:
                    etag = await self._parts.put(
                        key, upload_id, number=number + 1, length=length, body=body
                    )
                except ClientError as error:
                    if error.response.get("Error", {}).get("Code") == "RequestTimeout":
                        # S3 waited for the part's bytes, which only come as
                        # fast as the client sends them: not S3's failure.
                        raise BodyReadTimeout(
                            "the chunk's bytes arrived too slowly: S3 stopped waiting for them"
                        ) from error
                    raise
        except Exception:
            # The body failed first (the client went away or sent too much):
            # whatever S3 or the connection made of that is a consequence.
            if body.failure is not None:
                raise body.failure from None
            raise
        return etag

    async def put_stream(self, key: str, *, length: int, body: PartBody) -> None:
        """A small private object (a tus tail) from a stream of known length."""
        try:
            with s3_errors("PutObject"):
                await self._stream.put_object(
                    Bucket=self.bucket, Key=key, ContentLength=length, Body=body
                )
        except Exception:
            if body.failure is not None:
                raise body.failure from None
            raise

    async def delete_under(self, prefix: str) -> None:
        """Remove every object whose key starts with `prefix`."""
        with s3_errors("ListObjectsV2"):
            answer = await self._s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        for item in answer.get("Contents", []):
            await self.delete(item["Key"])

    async def copy_part(self, key: str, upload_id: str, *, number: int, source_key: str) -> str:
        with s3_errors("UploadPartCopy"):
            answer = await self._s3.upload_part_copy(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number + 1,
                CopySource={"Bucket": self.bucket, "Key": source_key},
            )
        return answer["CopyPartResult"]["ETag"]

    async def complete_upload(self, key: str, upload_id: str, etags: Sequence[str]) -> StoredObject:
        if not etags:
            return await self._complete_empty(key, upload_id)
        parts = [{"PartNumber": n + 1, "ETag": etag} for n, etag in enumerate(etags)]
        return await self._complete(key, upload_id, parts)

    async def _complete_empty(self, key: str, upload_id: str) -> StoredObject:
        """A 0-byte file: S3 completes no upload without a part, so it gets one empty part.

        Not a PutObject instead: the object's type, caching, disposition and metadata
        were given to CreateMultipartUpload, and only completing that upload keeps them
        (tusd and tus-node-server's S3 stores do the same)."""
        try:
            with s3_errors("UploadPart"):
                answer = await self._s3.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b""
                )
        except NotFound:
            return await self.stat(key)  # completed before a crash or a lost answer
        return await self._complete(key, upload_id, [{"PartNumber": 1, "ETag": answer["ETag"]}])

    async def _complete(
        self, key: str, upload_id: str, parts: list[dict[str, Any]]
    ) -> StoredObject:
        try:
            with s3_errors("CompleteMultipartUpload"):
                await self._s3.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except NotFound:
            # The upload is gone: an earlier complete succeeded before a crash
            # or a lost answer kept it from being recorded. The object says so.
            pass
        return await self.stat(key)

    async def stat(self, key: str) -> StoredObject:
        with s3_errors("HeadObject"):
            head = await self._s3.head_object(Bucket=self.bucket, Key=key)
        return StoredObject(size=head["ContentLength"], etag=head["ETag"])

    async def list_parts(self, key: str, upload_id: str) -> list[ListedPart]:
        """The parts S3 holds of an unfinished upload, by number (0-based here)."""
        parts: list[ListedPart] = []
        marker: dict[str, Any] = {}
        while True:
            with s3_errors("ListParts"):
                answer = await self._s3.list_parts(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, **marker
                )
            parts += [
                ListedPart(item["PartNumber"] - 1, item["Size"], item["ETag"])
                for item in answer.get("Parts", [])
            ]
            if not answer.get("IsTruncated"):
                return parts
            marker = {"PartNumberMarker": answer["NextPartNumberMarker"]}

    async def presigned_part_url(
        self,
        key: str,
        upload_id: str,
        *,
        number: int,
        expires_in: int,
        length: int | None = None,
        content_md5: str | None = None,
    ) -> str:
        """A URL to PUT part `number` (0-based) of the upload directly. A `length` or
        `content_md5` is signed in: S3 takes the part only with that header, and with
        Content-MD5 only if the bytes match it."""
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "UploadId": upload_id,
            "PartNumber": number + 1,
        }
        if length is not None:
            params["ContentLength"] = length
        if content_md5 is not None:
            params["ContentMD5"] = content_md5
        metrics.signed_url_issued("s3_part")
        return await self._direct.generate_presigned_url(
            "upload_part", Params=params, ExpiresIn=expires_in
        )

    async def abort_upload(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(NotFound), s3_errors("AbortMultipartUpload"):
            await self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    async def read(self, key: str, offset: int = 0) -> AsyncIterator[bytes]:
        # No Range from 0: S3 answers 416 to any range of a 0-byte object.
        from_offset = {"Range": f"bytes={offset}-"} if offset else {}
        with s3_errors("GetObject"):
            answer = await self._s3.get_object(Bucket=self.bucket, Key=key, **from_offset)
            async with answer["Body"] as stream:
                async for piece in stream.iter_chunks(READ_SIZE):
                    yield piece

    async def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int, head: bool = False
    ) -> str:
        metrics.signed_url_issued("s3_presigned")
        # S3 cannot add Content-Security-Policy or nosniff: an active type goes out
        # as an octet-stream attachment, which no browser renders.
        shown = presentation(filename, content_type)
        # The method is part of what is signed: a real S3 answers a HEAD on a URL
        # signed for GET with 403 (moto checks no signature, so only RGW tests show it).
        return await self._signer.url(
            "HEAD" if head else "GET",
            key,
            params={
                "response-content-type": shown.content_type,
                "response-content-disposition": shown.content_disposition,
            },
            expires_in=expires_in,
        )

    def route(self, url: str) -> Route:
        return Route(self._proxies.for_url(url), self._ca_file)

    async def read_conditionally(
        self, key: str, conditions: ReadConditions, *, head: bool
    ) -> ObjectRead:
        """GetObject (HeadObject for HEAD) with the player's headers; S3 evaluates them.

        GetObject has no If-Range: it becomes If-Match (an ETag) or
        If-Unmodified-Since (a date) on the ranged request, and if that fails
        the whole object is fetched instead, as §13.1.5 asks. A date If-Range
        is thereby "not modified since" rather than an exact match, which only
        matters for objects rewritten within one second; mediagate never
        rewrites an object.
        """
        arguments = _get_arguments(self.bucket, key, conditions, head=head)
        operation = "HeadObject" if head else "GetObject"
        call = self._s3.head_object if head else self._s3.get_object
        with s3_errors(operation):
            try:
                answer = await call(**arguments)
            except ClientError as error:
                status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 412 and conditions.if_range and "Range" in arguments:
                    unconditional = ReadConditions(
                        if_none_match=conditions.if_none_match,
                        if_modified_since=conditions.if_modified_since,
                    )
                    return await self.read_conditionally(key, unconditional, head=head)
                if status in (304, 412, 416):
                    return ObjectRead(status, _error_headers(error, status), None)
                raise
        return ObjectRead(
            answer["ResponseMetadata"]["HTTPStatusCode"],
            _object_headers(answer),
            None if head else _close_after(answer["Body"]),
        )

    async def delete(self, key: str) -> None:
        with s3_errors("DeleteObject"):
            await self._s3.delete_object(Bucket=self.bucket, Key=key)

    def _new_object_arguments(self, target: NewObject) -> dict[str, Any]:
        """What every new object carries: type, caching, the original name, the owner."""
        arguments: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": target.key,
            "ContentType": target.content_type,
            "CacheControl": self._cache_control,
            # What a CDN in front of the bucket serves: active types as attachments.
            "ContentDisposition": presentation(
                target.filename, target.content_type
            ).content_disposition,
            # S3 metadata must be ASCII, so the filename travels percent-encoded.
            "Metadata": {"owner": target.owner, "filename": quote(target.filename)},
        }
        if self._storage_class:
            arguments["StorageClass"] = self._storage_class
        return arguments

    # The checked calls send Content-MD5, the one checksum that AWS, RGW and MinIO all
    # verify: RGW 16 (and moto) ignore x-amz-checksum-crc32, which then protects nothing.

    async def put_object(
        self, target: NewObject, body: io.BytesIO, *, content_md5: str
    ) -> StoredObject:
        """Store a small object in one request; S3 refuses it unless `content_md5`
        (base64) matches. `body` is sent from its start, whatever an earlier attempt left.
        """
        size = body.seek(0, io.SEEK_END)
        body.seek(0)
        with s3_errors("PutObject"):
            answer = await self._stream.put_object(
                **self._new_object_arguments(target), Body=body, ContentMD5=content_md5
            )
        return StoredObject(size=size, etag=answer["ETag"])

    async def start_checked_upload(self, target: NewObject) -> str:
        """A multipart upload for `put_checked_part`."""
        with s3_errors("CreateMultipartUpload"):
            answer = await self._s3.create_multipart_upload(**self._new_object_arguments(target))
        return answer["UploadId"]

    async def put_checked_part(
        self, key: str, upload_id: str, *, number: int, body: io.BytesIO, content_md5: str
    ) -> str:
        """Store part `number` (0-based) from memory; S3 refuses it unless `content_md5`
        matches."""
        body.seek(0)
        with s3_errors("UploadPart"):
            answer = await self._stream.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number + 1,
                Body=body,
                ContentMD5=content_md5,
            )
        return answer["ETag"]

    async def complete_checked_upload(
        self, key: str, upload_id: str, etags: Sequence[str]
    ) -> StoredObject:
        """Complete a `start_checked_upload` from its parts' ETags, in order."""
        listed = [{"PartNumber": n + 1, "ETag": etag} for n, etag in enumerate(etags)]
        return await self._complete(key, upload_id, listed)

    async def abort_uploads(self, key: str) -> None:
        """Abort every unfinished multipart upload of `key` (left by a run that crashed)."""
        with s3_errors("ListMultipartUploads"):
            answer = await self._s3.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        for upload in answer.get("Uploads", []):
            if upload["Key"] == key:
                await self.abort_upload(key, upload["UploadId"])
