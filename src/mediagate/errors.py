"""Every problem the server answers, each carrying its HTTP answer (RFC 9457).

Stores translate their own failures into these at their edge, so nothing above
the storage layer knows about botocore or errno values. The web layer's own
refusals (shutdown, CORS, HTTP it cannot parse, conditional reads) are declared
here too: web/problems.py builds every body from these, and web/openapi.py
documents them from these.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Problem(Exception):
    status: int = 500
    code: str = "internal-error"
    title: str = "Internal error"
    headers: ClassVar[dict[str, str]] = {}
    # A 5xx detail describes the server's insides (S3 endpoint, bucket, key,
    # upload id, paths): it goes to the log, the client gets a generic one,
    # unless the class says its detail is written for clients.
    public_detail: ClassVar[bool] = False
    # The connection is closed after the answer (its request body was not read to the end).
    closes_connection: ClassVar[bool] = False
    # Headers whose value the sender sets on each answer (documented, not sent from here).
    varying_headers: ClassVar[tuple[str, ...]] = ()
    # Whether an operation of the OpenAPI document may answer it (False: only a route
    # outside the document, or a method no operation has).
    documented: ClassVar[bool] = True
    # Its `type` when a registry names it (the IETF draft's IANA-registered problem
    # types); None: mediagate's own, from its code (web/problems.py).
    type_uri: ClassVar[str | None] = None

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class NotFound(Problem):
    status, code, title = 404, "not-found", "Not found"


class BadRequest(Problem):
    status, code, title = 400, "bad-request", "Bad request"


class ChunkOutOfRange(Problem):
    status, code, title = 400, "chunk-out-of-range", "Chunk number out of range"


class ChunkLengthMismatch(Problem):
    status, code, title = 400, "chunk-length-mismatch", "Chunk has the wrong length"


class ChunkIncomplete(Problem):
    status, code, title = 400, "chunk-incomplete", "Chunk body ended early"


class ChunkSuperseded(Problem):
    """A newer attempt at the same chunk took over while this one was still arriving."""

    status, code, title = 409, "chunk-superseded", "A newer attempt at this chunk took over"


class UploadSuperseded(Problem):
    """tus: a newer request on the upload took over while this PATCH was still arriving."""

    status, code, title = 409, "upload-superseded", "A newer request on this upload took over"


class UploadLocked(Problem):
    """tus: another request held the upload for longer than this one could wait."""

    status, code, title = 423, "upload-locked", "Another request holds this upload"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "2"}


class ChunkInFlight(Problem):
    """complete waited in vain for a chunk still being written (on another instance)."""

    status, code, title = 409, "chunk-in-flight", "A chunk is still being written"


class BodyReadTimeout(Problem):
    status, code, title = 408, "body-timeout", "The request body stopped arriving"
    closes_connection = True


class DigestMismatch(Problem):
    status, code, title = 422, "digest-mismatch", "Chunk digest does not match"


class FileDigestMismatch(Problem):
    status, code, title = 422, "file-digest-mismatch", "File digest does not match"


class SessionNotOpen(Problem):
    status, code, title = 409, "session-not-open", "Upload session is not open"


class WrongProtocol(Problem):
    """A native chunk or complete call on a tus upload (or the reverse): one API per upload."""

    status, code, title = 409, "wrong-protocol", "The upload belongs to another API"


class DirectUploadUnavailable(Problem):
    """A direct-to-S3 upload cannot be had now: S3 is failing (the client uploads through
    the server instead)."""

    status, code, title = 503, "direct-upload-unavailable", "Direct uploads to S3 are unavailable"
    public_detail = True
    headers: ClassVar[dict[str, str]] = {"Retry-After": "30"}


class DirectUploadNotOffered(Problem):
    """This server keeps uploads on its own disk: there is no bucket to upload to."""

    status, code, title = 501, "direct-upload-not-offered", "This server offers no direct uploads"
    public_detail = True


class PartialTaken(Problem):
    """tus concatenation: a partial upload already went into another final upload."""

    status, code, title = 409, "partial-taken", "A partial upload is part of another final"


class MissingChunks(Problem):
    status, code, title = 409, "missing-chunks", "Chunks are missing"


class UploadFailed(Problem):
    """Finishing the upload met a refusal no retry gets past: it is open again, empty."""

    status, code, title = 409, "upload-failed", "The upload could not be finished"


class SessionExpired(Problem):
    status, code, title = 410, "session-expired", "Upload session has expired"


class StorageUnavailable(Problem):
    status, code, title = 503, "storage-unavailable", "Storage is unavailable"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "2"}


class CatalogUnavailable(Problem):
    """The catalog (SQLite file or PostgreSQL server) cannot be reached or used.

    Deliberately not a `StorageUnavailable`: a catalog outage must never make the
    engine fall back to local disk or open the S3 circuit breaker.
    """

    status, code, title = 503, "catalog-unavailable", "Catalog is unavailable"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "2"}


class StorageRejected(Problem):
    """The store is up but refused this request: retrying it will not help."""

    status, code, title = 502, "storage-rejected", "Storage refused the request"


class MediaNotReady(Problem):
    status, code, title = 503, "media-finalizing", "Media is being finalized"
    public_detail = True
    headers: ClassVar[dict[str, str]] = {"Retry-After": "5"}


class MediaFailed(Problem):
    status, code, title = 409, "media-failed", "The media's upload failed"


class StorageFull(Problem):
    status, code, title = 507, "storage-full", "Insufficient storage"


class FileTooLargeForStorage(StorageFull):
    """The local file system (or the server's file-size limit) cannot hold a file this large:
    retrying cannot help."""

    code, title = "file-too-large-for-storage", "File too large for this server's disk"
    public_detail = True


class FileTooLarge(Problem):
    status, code, title = 413, "file-too-large", "File too large"


class TooManySessions(Problem):
    status, code, title = 429, "too-many-sessions", "Too many open upload sessions"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "60"}


class TooMuchHeld(Problem):
    status, code, title = 429, "too-much-held", "Too many bodies of unknown length at once"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "5"}


class Unauthorized(Problem):
    status, code, title = 401, "unauthorized", "Authentication required"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer realm="mediagate"'}


class IdentityProviderUnavailable(Problem):
    """A token names a key the server does not hold, and the identity provider's key set
    cannot be fetched: the token may be good, so it is not refused (401) but deferred."""

    status, code, title = 503, "identity-provider-unavailable", "Identity provider unavailable"
    public_detail = True
    headers: ClassVar[dict[str, str]] = {"Retry-After": "30"}


class Forbidden(Problem):
    status, code, title = 403, "forbidden", "Forbidden"


class OffsetMismatch(Problem):
    """tus: a PATCH's Upload-Offset is not the upload's current offset (web/tus.py puts
    the upload's offset on the answer)."""

    status, code, title = 409, "offset-mismatch", "Upload-Offset does not match"
    varying_headers = ("Upload-Offset",)


class UnsupportedMediaType(Problem):
    status, code, title = 415, "unsupported-media-type", "Unsupported media type"


class ProtocolVersionUnsupported(Problem):
    """tus: the client speaks a Tus-Resumable version this server does not."""

    status, code, title = 412, "tus-version-unsupported", "Unsupported tus version"
    headers: ClassVar[dict[str, str]] = {"Tus-Version": "1.0.0"}


class UploadIncomplete(Problem):
    """tus: the upload's file was asked for before its last byte arrived."""

    status, code, title = 409, "upload-incomplete", "The upload is not complete"


class ChecksumAlgorithmUnsupported(Problem):
    """tus checksum extension: an algorithm not offered (400, naming those that are;
    core/tus.py CHECKSUM_ALGORITHMS is held to the same list by a test)."""

    status, code, title = 400, "checksum-algorithm-unsupported", "Checksum algorithm not supported"
    headers: ClassVar[dict[str, str]] = {"Tus-Checksum-Algorithm": "sha1,md5,sha256"}


class ChecksumMismatch(Problem):
    """tus checksum extension: the body does not match Upload-Checksum (status 460)."""

    status, code, title = 460, "checksum-mismatch", "Checksum mismatch"


class UploadRefused(Problem):
    """A pre-create or pre-finish hook refused the upload: the status (a 4xx) and the
    message are the application's (docs/integration.md, "Hooks")."""

    status, code, title = 403, "upload-refused", "The application refused the upload"
    public_detail = True

    def __init__(self, detail: str | None = None, *, status: int = 403, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.status = status


class HookUnavailable(Problem):
    """A hook did not answer (in time, or with a decision) and MEDIAGATE_HOOK_FAILURE=refuse."""

    status, code, title = 503, "hook-unavailable", "The application's hook did not answer"
    public_detail = True
    headers: ClassVar[dict[str, str]] = {"Retry-After": "5"}


class NotMedia(UploadRefused):
    """Probing says the upload is not media this server accepts (MEDIAGATE_ACCEPT,
    MEDIAGATE_MAX_DURATION): refused as a pre-finish hook refuses, the file, its
    session and its media gone."""

    code, title = "not-media", "The file is not media this server accepts"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, status=415, **extra)


# The IETF draft "Resumable Uploads for HTTP" (web/ietf.py): three of its problems are
# the draft's own, registered by IANA under these type URIs.
IANA_PROBLEM_TYPES = "https://iana.org/assignments/http-problem-types#"


class MismatchingUploadOffset(Problem):
    """IETF resumable uploads: an append's Upload-Offset is not the upload's offset (web/ietf.py
    puts the upload's offset on the answer)."""

    status, code, title = 409, "mismatching-upload-offset", "Mismatching upload offset"
    type_uri = IANA_PROBLEM_TYPES + "mismatching-upload-offset"
    varying_headers = ("Upload-Offset",)


class CompletedUpload(Problem):
    """IETF resumable uploads: an append to an upload already complete."""

    status, code, title = 400, "completed-upload", "The upload is already complete"
    type_uri = IANA_PROBLEM_TYPES + "completed-upload"


class InconsistentUploadLength(Problem):
    """IETF resumable uploads: the length indications of a request (Upload-Length,
    Upload-Complete with Content-Length) disagree with each other or with the upload's."""

    status, code, title = 400, "inconsistent-upload-length", "Inconsistent upload length"
    type_uri = IANA_PROBLEM_TYPES + "inconsistent-upload-length"


class InteropVersionUnsupported(Problem):
    """IETF resumable uploads: an Upload-Draft-Interop-Version this server does not speak."""

    status, code, title = 400, "interop-version-unsupported", "Unsupported draft interop version"


class ContentDigestMismatch(Problem):
    """RFC 9530: a body does not match its Content-Digest (nothing of it is kept)."""

    status, code, title = 400, "content-digest-mismatch", "Content-Digest mismatch"


# The web layer's own answers.


class ShuttingDown(Problem):
    """A new request while the server drains (web/request_gate.py): the client retries it
    (a chunk sent again replaces itself) after this process is gone."""

    status, code, title = 503, "shutting-down", "Shutting down"
    public_detail = True
    closes_connection = True
    headers: ClassVar[dict[str, str]] = {"Retry-After": "5"}


class CorsOriginNotAllowed(Problem):
    """A CORS preflight from an origin not in MEDIAGATE_CORS_ORIGINS (web/cors.py)."""

    status, code, title = 403, "cors-origin-not-allowed", "Origin not allowed"


class MalformedBody(Problem):
    """aiohttp could not decode the body it was handed (Content-Encoding, chunked framing)."""

    status, code, title = 400, "malformed-body", "Malformed body"


class MalformedRequest(Problem):
    """What aiohttp's HTTP parser refuses before any middleware runs (web/protocol.py)."""

    status, code, title = 400, "malformed-request", "Malformed request"
    closes_connection = True


class BodyTooLarge(Problem):
    """A JSON body over the application's limit (aiohttp's client_max_size)."""

    status, code, title = 413, "request-entity-too-large", "Request Entity Too Large"


class MethodNotAllowed(Problem):
    """A method the path has no operation for: not in the document, whose paths list
    only the methods they have."""

    status, code, title = 405, "method-not-allowed", "Method Not Allowed"
    documented = False


class PreconditionFailed(Problem):
    """A conditional read (If-Match, If-Unmodified-Since) of a media whose bytes differ."""

    status, code, title = 412, "precondition-failed", "Precondition Failed"


class RangeNotSatisfiable(Problem):
    """A Range outside the media: the answer says its size in `Content-Range: bytes */SIZE`."""

    status, code, title = 416, "range-not-satisfiable", "Range Not Satisfiable"
    varying_headers = ("Content-Range",)


class NotReady(Problem):
    """/readyz when the catalog or the data disk is unusable: outside the API's document."""

    status, code, title = 503, "not-ready", "Not ready"
    public_detail = True
    documented = False


def declared() -> list[type[Problem]]:
    """Every problem declared here, the base (internal-error) first."""
    return [
        kind for kind in globals().values() if isinstance(kind, type) and issubclass(kind, Problem)
    ]
