from __future__ import annotations

import pytest

from mediagate.core.chunking import MAX_FILE, ChunkPlan, FileTooLarge, GiB, MiB, plan_chunks

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
