"""ChunkStream: the one place every byte of a chunk passes, whatever its source does."""

from __future__ import annotations

import pytest

from mediagate.core.chunk_stream import ChunkStream, ExpectedDigests
from mediagate.errors import BadRequest, ChunkIncomplete, ChunkLengthMismatch
from mediagate.storage.base import NewObject
from mediagate.storage.local import LocalStore


class GenerousSource:
    """A source that returns more than it is asked for, as aiohttp's read_chunk can."""

    def __init__(self, data: bytes, piece: int) -> None:
        self._data = data
        self._piece = piece

    async def __call__(self, n: int) -> bytes:
        piece, self._data = self._data[: self._piece], self._data[self._piece :]
        return piece


async def test_no_byte_beyond_the_chunk_reaches_the_store_whatever_the_source_returns(tmp_path):
    store = LocalStore(tmp_path)
    upload_id = await store.start_upload(NewObject("media/u/m/f.bin", "video/mp4", "u", "f.bin"))
    neighbour = b"N" * 4096
    await store.put_part(
        "k", upload_id, number=1, offset=3000, length=len(neighbour), body=stream(neighbour)
    )
    # Pieces of 2048 bytes against a 3000-byte chunk: the second one overshoots.
    overlong = ChunkStream(GenerousSource(b"x" * 6000, 2048), 3000, ExpectedDigests())
    with pytest.raises(ChunkLengthMismatch):
        await store.put_part("k", upload_id, number=0, offset=0, length=3000, body=overlong)
    assert isinstance(overlong.failure, ChunkLengthMismatch)
    staged = (tmp_path / ".staging").iterdir().__next__().read_bytes()
    assert staged[3000:] == neighbour


def stream(data: bytes) -> ChunkStream:
    return ChunkStream(GenerousSource(data, len(data)), len(data), ExpectedDigests())


@pytest.mark.parametrize(
    ("failure", "expected"),
    [(BadRequest("framing"), BadRequest), (ConnectionResetError("gone"), ChunkIncomplete)],
)
async def test_a_failing_source_is_the_clients_problem(failure, expected):
    async def source(n: int) -> bytes:
        raise failure

    body = ChunkStream(source, 10, ExpectedDigests())
    with pytest.raises(expected):
        await body.read()
    assert isinstance(body.failure, expected)
