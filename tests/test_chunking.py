from __future__ import annotations

import pytest

from mediagate.core.chunking import (
    MAX_FILE,
    MAX_PART,
    MAX_PARTS,
    MIN_PART,
    ChunkPlan,
    FileTooLarge,
    GiB,
    MiB,
    plan_chunks,
    tus_part,
)

TiB = 1024 * GiB


@pytest.mark.parametrize(
    ("size", "requested", "expected"),
    [
        (0, 8 * MiB, ChunkPlan(8 * MiB, 0)),
        (1, 8 * MiB, ChunkPlan(1, 1)),
        (5 * MiB - 1, 8 * MiB, ChunkPlan(5 * MiB - 1, 1)),
        (5 * MiB, 5 * MiB, ChunkPlan(5 * MiB, 1)),
        (5 * MiB + 1, 5 * MiB, ChunkPlan(5 * MiB, 2)),
        (100 * MiB, 8 * MiB, ChunkPlan(8 * MiB, 13)),
        # below S3's 5 MiB part minimum: raised to it
        (100 * MiB, 1 * MiB, ChunkPlan(5 * MiB, 20)),
        # above the 5 GiB part maximum: lowered to it
        (20 * GiB, 6 * GiB, ChunkPlan(5 * GiB, 4)),
        # one chunk when the requested size covers the file
        (30 * MiB, 64 * MiB, ChunkPlan(30 * MiB, 1)),
        # 10,000 parts at most: 1 TiB needs parts of at least ceil(1 TiB / 10,000)
        (1 * TiB, 8 * MiB, ChunkPlan(109_951_163, 10_000)),
        (MAX_FILE, 8 * MiB, ChunkPlan(5 * GiB, 10_000)),
    ],
)
def test_plan_chunks(size, requested, expected):
    plan = plan_chunks(size, requested)
    assert plan == expected
    if plan.total_chunks > 1:
        assert plan.chunk_size >= 5 * MiB
        assert plan.total_chunks <= 10_000
        assert (
            (plan.total_chunks - 1) * plan.chunk_size < size <= plan.total_chunks * plan.chunk_size
        )


def test_files_beyond_ten_thousand_5_gib_parts_are_refused():
    with pytest.raises(FileTooLarge):
        plan_chunks(MAX_FILE + 1, 8 * MiB)


@pytest.mark.parametrize(
    ("size", "number", "start", "target", "available", "ends", "minimum", "expected"),
    [
        # too few for a part that is not the last: they wait as the tail
        (100 * MiB, 0, 0, 8 * MiB, 3 * MiB, False, MIN_PART, None),
        (100 * MiB, 0, 0, 8 * MiB, 0, False, MIN_PART, None),
        # enough for S3's smallest part: sent at once, up to the planned size
        (100 * MiB, 0, 0, 8 * MiB, 5 * MiB, False, MIN_PART, 5 * MiB),
        (100 * MiB, 0, 0, 8 * MiB, 6 * MiB + 1, False, MIN_PART, 6 * MiB + 1),
        (100 * MiB, 3, 20 * MiB, 8 * MiB, 30 * MiB, False, MIN_PART, 8 * MiB),
        # the last part may be small
        (100 * MiB, 12, 99 * MiB, 8 * MiB, MiB, True, MIN_PART, MiB),
        (3, 0, 0, 3, 3, True, MIN_PART, 3),
        # the local disk has no smallest part but the share of the 10,000 parts
        (100 * MiB, 0, 0, 8 * MiB, 3, False, 1, None),
        (100 * MiB, 0, 0, 8 * MiB, 20_000, False, 1, 20_000),
        # 10,000 parts: 1 TiB with 9,000 part numbers used must share the rest out
        (TiB, 9_000, TiB - 20 * GiB, 8 * MiB, 10 * MiB, False, MIN_PART, None),
        (TiB, 9_000, TiB - 20 * GiB, 8 * MiB, 30 * MiB, False, MIN_PART, 21_474_837),
        (TiB, 9_999, TiB - 3 * GiB, 8 * MiB, 3 * GiB, True, MIN_PART, 3 * GiB),
    ],
)
def test_tus_part(size, number, start, target, available, ends, minimum, expected):
    assert (
        tus_part(
            size=size,
            number=number,
            start=start,
            target=target,
            available=available,
            ends=ends,
            store_minimum=minimum,
        )
        == expected
    )


@pytest.mark.parametrize(
    ("size", "patch"),
    [(60 * GiB, 5 * MiB + 1), (MAX_FILE, 5 * MiB), (1 * TiB, 7 * MiB), (30 * MiB, 100_000)],
)
def test_tus_parts_stay_within_s3s_rules_whatever_the_patches(size, patch):
    """PATCHes of any one size: every part but the last is 5 MiB .. 5 GiB, at most 10,000."""
    target = plan_chunks(size, 8 * MiB).chunk_size
    parts: list[int] = []
    start = tail = 0
    while start < size:
        body = min(patch, size - start - tail)
        while True:
            part = tus_part(
                size=size,
                number=len(parts),
                start=start,
                target=target,
                available=tail + body,
                ends=start + tail + body == size,
                store_minimum=MIN_PART,
            )
            if part is None:
                tail, body = tail + body, 0
                break
            parts.append(part)
            body -= part - tail
            start, tail = start + part, 0
        if len(parts) > MAX_PARTS or (size == MAX_FILE and len(parts) > 20):
            break  # MAX_FILE: only its first parts, the rest is the same arithmetic
    if size != MAX_FILE:
        assert sum(parts) == size
        assert len(parts) <= MAX_PARTS
    assert all(MIN_PART <= part <= MAX_PART for part in parts[:-1])
