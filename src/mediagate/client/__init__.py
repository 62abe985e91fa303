"""An async Python client for mediagate's native HTTP API.

    async with MediagateClient("http://127.0.0.1:8080", token) as client:
        result = await client.upload("clip.mp4", on_progress=print)
        print(result.media.media_id, result.media.stream_url)

Only HTTP: nothing here imports the server. A download names its file by the
server's own rule (`mediagate/filenames.py`, a leaf module shared by both).
See docs/client.md.
"""

from mediagate.client.api import MediagateClient
from mediagate.client.errors import (
    ConnectionFailed,
    FileChanged,
    MediagateError,
    NotFound,
    ProblemError,
    TargetExists,
    Unauthorized,
)
from mediagate.client.models import Media, SessionStatus, UploadProgress, UploadResult
from mediagate.client.resume import ResumeStore
from mediagate.client.retry import RetryPolicy

__all__ = [
    "ConnectionFailed",
    "FileChanged",
    "Media",
    "MediagateClient",
    "MediagateError",
    "NotFound",
    "ProblemError",
    "ResumeStore",
    "RetryPolicy",
    "SessionStatus",
    "TargetExists",
    "Unauthorized",
    "UploadProgress",
    "UploadResult",
]
