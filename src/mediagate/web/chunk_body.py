"""Where a chunk's bytes come from: the raw body, or the file field of a form.

Browsers send FormData as `multipart/form-data`; its file part is read
piecewise like a raw body, so neither form ever sits whole in memory.
"""

from __future__ import annotations

from aiohttp import BodyPartReader, web

from mediagate.core.chunk_stream import ReadSource
from mediagate.core.errors import BadRequest

FILE_FIELDS = {"file", "chunk", "data"}


async def chunk_source(request: web.Request) -> tuple[ReadSource, int | None]:
    """A reader of the chunk's bytes, and their length if the request declares it."""
    if request.content_type != "multipart/form-data":
        return request.content.read, request.content_length
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and (
                part.filename is not None or part.name in FILE_FIELDS
            ):
                return part.read_chunk, None
            await part.release()
    except ValueError as error:
        raise BadRequest(f"the multipart body is malformed: {error}") from None
    raise BadRequest("the multipart body has no file field")
