"""Chunk-size arithmetic: pure, so it can be checked against a table.

S3 multipart rules: every part but the last is at least 5 MiB, no part is
larger than 5 GiB, and an upload has at most 10,000 parts. A chunk is a part,
so a file of `size` bytes needs a chunk size c with
    5 MiB <= c <= 5 GiB            (unless the whole file is one chunk)
    ceil(size / c) <= 10,000       i.e. c >= ceil(size / 10,000)
The largest file that fits is therefore 10,000 x 5 GiB (~48.8 TiB).
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART = 5 * MiB
MAX_PART = 5 * GiB
MAX_PARTS = 10_000
MAX_FILE = MAX_PARTS * MAX_PART


@dataclass(frozen=True)
class ChunkPlan:
    chunk_size: int
    total_chunks: int


class FileTooLarge(ValueError):
    pass


def plan_chunks(size: int, requested: int) -> ChunkPlan:
    """The chunk size closest to `requested` that S3's rules allow for `size` bytes."""
    if size < 0:
        raise ValueError("size must not be negative")
    if size > MAX_FILE:
        raise FileTooLarge(f"at most {MAX_FILE} bytes fit in {MAX_PARTS} parts of 5 GiB")
    smallest_for_part_limit = -(-size // MAX_PARTS)
    chunk_size = min(max(requested, MIN_PART, smallest_for_part_limit), MAX_PART)
    if size == 0:
        return ChunkPlan(chunk_size=chunk_size, total_chunks=0)
    if chunk_size >= size:
        return ChunkPlan(chunk_size=size, total_chunks=1)
    return ChunkPlan(chunk_size=chunk_size, total_chunks=-(-size // chunk_size))


def smallest_part(size: int, number: int, start: int, store_minimum: int) -> int:
    """The fewest bytes part `number`, starting at `start`, may hold unless it is the last.

    A tus upload's parts differ in size (each PATCH ends where the client chose),
    but S3 takes at most MAX_PARTS: a part that is not the last holds at least
    the rest of the upload shared out over the part numbers left,
        ceil((size - start) / (MAX_PARTS - number)),
    and at least the store's own minimum (S3: MIN_PART). That share never grows
    from one part to the next when each part takes at least it, so it stays at
    most ceil(size / MAX_PARTS) <= MAX_PART and the rest always fits.
    """
    left = MAX_PARTS - number
    if left <= 0:
        raise FileTooLarge(f"an upload has at most {MAX_PARTS} parts")
    return max(store_minimum, -(-(size - start) // left))


def tus_part(
    *,
    size: int,
    number: int,
    start: int,
    target: int,
    available: int,
    ends: bool,
    store_minimum: int,
) -> int | None:
    """How many of the `available` bytes from `start` make part `number` now; None
    while they are too few for a part that is not the last (they wait as the tail).

    `size` is the upload's length (or the most a deferred one may grow to),
    `target` the part size planned for it, `ends` whether the bytes reach `size`.
    A part takes up to `target` (or the smallest the part count allows, if more),
    so a PATCH of many parts sends them as planned and only its last bytes wait.
    """
    if available == 0:
        return None
    minimum = smallest_part(size, number, start, store_minimum)
    if available < minimum and not ends:
        return None
    return min(max(target, minimum), available, MAX_PART)
