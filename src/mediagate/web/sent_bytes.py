"""How many body bytes an answer really sent, for the access log.

aiohttp's `response.body_length` counts what went through its writer: the header
bytes included, and none of a body sent with sendfile(2), which bypasses the writer
(a 107 MB download was logged as 421 bytes). Bodies mediagate streams itself (local
files, S3 objects relayed) go out through a `CountedResponse`, which counts every
body byte handed to the socket, so a download cut short logs what went out before
the cut. Bytes the kernel accepted but the client never read count as sent, as in
nginx's `$body_bytes_sent`.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import LooseHeaders

# Answers that never carry a body (RFC 9110 §6.4.1).
_NO_BODY_STATUSES = frozenset({204, 304})


class CountedResponse(web.StreamResponse):
    """A streamed answer that counts its body bytes, written or sent with sendfile."""

    def __init__(self, *, status: int, headers: LooseHeaders | None = None) -> None:
        super().__init__(status=status, headers=headers)
        self.body_bytes_sent = 0

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await super().write(data)  # raises, counting nothing, when the client is gone
        self.body_bytes_sent += data.nbytes if isinstance(data, memoryview) else len(data)

    def sent_with_sendfile(self, count: int) -> None:
        self.body_bytes_sent += count


def body_bytes_sent(method: str, response: web.StreamResponse) -> int:
    """The body bytes `response` sent: counted where mediagate streams the body, else
    the length of the fixed body (error answers, JSON, the docs' assets)."""
    if isinstance(response, CountedResponse):
        return response.body_bytes_sent
    if method == "HEAD" or response.status < 200 or response.status in _NO_BODY_STATUSES:
        return 0
    return response.content_length or 0
