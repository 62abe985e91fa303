"""Whether an MP4/MOV file is "faststart": its index (`moov`) before its data (`mdat`).

A player that finds the index first starts and seeks after one request; with the
index at the end it must first fetch the end of the file. The answer is in the order
of the file's top-level boxes, read one header at a time: a few 16-byte range reads
(ISO/IEC 14496-12 §4.2: a 32-bit size and a type, the size 1 meaning a 64-bit size
follows, 0 meaning the box runs to the end of the file).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

HEADER = 16
# A file whose index or data is not among its first boxes is no file a player handles.
MAX_BOXES = 16


@dataclass(frozen=True)
class Box:
    type: str
    size: int | None  # None: to the end of the file


def parse_box(header: bytes) -> Box | None:
    """The box whose header starts `header`; None if these bytes are no box header."""
    if len(header) < 8:
        return None
    size = int.from_bytes(header[:4], "big")
    kind = header[4:8]
    if not all(0x20 <= byte < 0x7F for byte in kind):
        return None
    if size == 1:
        if len(header) < 16:
            return None
        size = int.from_bytes(header[8:16], "big")
        if size < 16:
            return None
    elif size == 0:
        return Box(kind.decode("ascii"), None)
    elif size < 8:
        return None
    return Box(kind.decode("ascii"), size)


def verdict(box: Box) -> bool | None:
    """True when the index comes first, False when the data does, None: read on."""
    if box.type == "moov":
        return True
    if box.type == "mdat":
        return False
    return None


async def is_faststart(read: Callable[[int, int], Awaitable[bytes]], size: int) -> bool | None:
    """Walk the top-level boxes through `read(offset, length)`; None if the walk ends
    (past the end, a broken header, too many boxes) before an index or data box."""
    offset = 0
    for _ in range(MAX_BOXES):
        if offset + 8 > size:
            return None
        box = parse_box(await read(offset, min(HEADER, size - offset)))
        if box is None or (box.size is not None and offset + box.size > size):
            return None
        found = verdict(box)
        if found is not None or box.size is None:
            return found
        offset += box.size
    return None
