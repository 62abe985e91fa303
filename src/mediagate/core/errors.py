"""Problems the engine reports, each carrying its HTTP answer (RFC 9457).

Stores translate their own failures into these at their edge, so nothing above
the storage layer knows about botocore or errno values.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Problem(Exception):
    status: int = 500
    code: str = "internal-error"
    title: str = "Internal error"
    headers: ClassVar[dict[str, str]] = {}

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


class DigestMismatch(Problem):
    status, code, title = 422, "digest-mismatch", "Chunk digest does not match"


class FileDigestMismatch(Problem):
    status, code, title = 422, "file-digest-mismatch", "File digest does not match"


class SessionNotOpen(Problem):
    status, code, title = 409, "session-not-open", "Upload session is not open"


class MissingChunks(Problem):
    status, code, title = 409, "missing-chunks", "Chunks are missing"


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
    headers: ClassVar[dict[str, str]] = {"Retry-After": "5"}


class StorageFull(Problem):
    status, code, title = 507, "storage-full", "Insufficient storage"


class FileTooLarge(Problem):
    status, code, title = 413, "file-too-large", "File too large"


class Unauthorized(Problem):
    status, code, title = 401, "unauthorized", "Authentication required"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer realm="mediagate"'}


class Forbidden(Problem):
    status, code, title = 403, "forbidden", "Forbidden"
