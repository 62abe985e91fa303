"""The `BlobStore` contract (storage/base.py), one suite that every store runs.

fsspec's abstract-test pattern: `StoreContract` holds the tests, and each
implementation is a `Test…` subclass that only says how to make its store and
which optional capabilities it claims. A new store (GCS, say) adds one subclass.
S3 parts other than the last must be at least 5 MiB, so the multi-part cases
use real 5 MiB parts: the suite also runs against a real S3 (the `store` tier).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import aiohttp
import pytest

from mediagate.errors import NotFound, StorageUnavailable
from mediagate.storage.base import (
    BlobStore,
    ConditionalReads,
    DirectParts,
    LocalFiles,
    NewObject,
    PartCopying,
    Presigning,
    ReadConditions,
    Remainders,
)
from mediagate.storage.breaker import CircuitBreaker, guard
from mediagate.storage.local import LocalStore
from mediagate.storage.s3 import S3Store
from support.api import MiB, make_settings

pytestmark = pytest.mark.store

PART = 5 * MiB  # S3's smallest part but the last
CAPABILITIES = {
    "presigning": Presigning,
    "part copying": PartCopying,
    "local files": LocalFiles,
    "conditional reads": ConditionalReads,
    "remainders": Remainders,
    "direct parts": DirectParts,
}


class Body:
    """A part's bytes as the engine hands them to a store: a stream, read or iterated."""

    failure: Exception | None = None

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    async def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else min(len(self._data), self._at + n)
        piece, self._at = self._data[self._at : end], end
        return piece

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while piece := await self.read(256 * 1024):
            yield piece


def pattern(size: int, seed: int = 0) -> bytes:
    """Bytes whose every 4 KiB differs, so a misplaced part cannot go unnoticed."""
    block = bytes(range(256)) * 16
    return b"".join(
        (i + seed).to_bytes(4, "big") + block[4:] for i in range(size // len(block) + 1)
    )[:size]


def new_key() -> str:
    return f"media/alice/{uuid.uuid4()}/clip.mp4"


def target(key: str) -> NewObject:
    return NewObject(key, "video/mp4", "alice", "clip.mp4")


async def put(store: BlobStore, key: str, upload_id: str, number: int, data: bytes) -> str:
    return await store.put_part(
        key, upload_id, number=number, offset=number * PART, length=len(data), body=Body(data)
    )


async def read_all(store: BlobStore, key: str, offset: int = 0) -> bytes:
    return b"".join([piece async for piece in store.read(key, offset)])


async def stored(store: BlobStore, data: bytes) -> str:
    """A complete object holding `data` (in parts of PART bytes); its key."""
    key = new_key()
    upload_id = await store.start_upload(target(key))
    etags = [
        await put(store, key, upload_id, n, data[offset : offset + PART])
        for n, offset in enumerate(range(0, len(data), PART))
    ]
    await store.complete_upload(key, upload_id, etags)
    return key


class StoreContract:
    """Each subclass gives a `store` fixture and the capabilities its store `claims`."""

    claims: ClassVar[set[str]]

    async def test_parts_sent_out_of_order_make_the_object_in_order(self, store):
        data = pattern(2 * PART + 1234)
        key = new_key()
        upload_id = await store.start_upload(target(key))
        etags = {
            n: await put(store, key, upload_id, n, data[n * PART : (n + 1) * PART])
            for n in (2, 0, 1)
        }

        result = await store.complete_upload(key, upload_id, [etags[n] for n in range(3)])

        assert result.size == len(data) and result.etag
        assert await read_all(store, key) == data

    async def test_a_part_sent_again_replaces_the_first(self, store):
        first, second = pattern(PART, seed=1), pattern(PART, seed=2)
        last = pattern(10, seed=3)
        key = new_key()
        upload_id = await store.start_upload(target(key))
        await put(store, key, upload_id, 0, first)
        again = await put(store, key, upload_id, 0, second)
        tail = await put(store, key, upload_id, 1, last)

        await store.complete_upload(key, upload_id, [again, tail])

        assert await read_all(store, key) == second + last

    async def test_complete_again_answers_the_same_object(self, store):
        """An answer lost after complete (a crash, a timeout): the retry finds the object."""
        data = pattern(1000)
        key = new_key()
        upload_id = await store.start_upload(target(key))
        etag = await put(store, key, upload_id, 0, data)
        first = await store.complete_upload(key, upload_id, [etag])

        assert await store.complete_upload(key, upload_id, [etag]) == first
        assert await read_all(store, key) == data

    async def test_an_aborted_upload_leaves_no_object_and_aborting_again_is_no_error(self, store):
        key = new_key()
        upload_id = await store.start_upload(target(key))
        await put(store, key, upload_id, 0, pattern(1000))

        await store.abort_upload(key, upload_id)
        await store.abort_upload(key, upload_id)

        with pytest.raises(NotFound):
            await read_all(store, key)

    @pytest.mark.parametrize("offset", [0, 1, PART - 1, PART, PART + 99])
    async def test_a_read_from_an_offset_gives_the_rest_of_the_object(self, store, offset):
        data = pattern(PART + 100)
        key = await stored(store, data)
        assert await read_all(store, key, offset) == data[offset:]

    async def test_a_deleted_object_is_gone_and_deleting_a_missing_key_is_no_error(self, store):
        key = await stored(store, pattern(100))

        await store.delete(key)
        await store.delete(key)
        await store.delete(new_key())

        with pytest.raises(NotFound):
            await read_all(store, key)

    async def test_a_0_byte_object_is_completed_without_parts(self, store):
        key = new_key()
        upload_id = await store.start_upload(target(key))

        result = await store.complete_upload(key, upload_id, [])

        assert result.size == 0
        assert await read_all(store, key) == b""

    def test_the_store_claims_exactly_its_capabilities(self, store):
        claimed = {name for name, protocol in CAPABILITIES.items() if isinstance(store, protocol)}
        assert claimed == self.claims

    async def test_each_capability_claimed_works(self, store):
        data = pattern(PART + 10)
        key = await stored(store, data)
        if "local files" in self.claims:
            assert store.path(key).read_bytes() == data
        if "conditional reads" in self.claims:
            answer = await store.read_conditionally(
                key, ReadConditions(range="bytes=2-5"), head=False
            )
            assert answer.status == 206 and answer.body is not None
            assert b"".join([piece async for piece in answer.body]) == data[2:6]
        if "presigning" in self.claims:
            url = await store.presigned_url(
                key, filename="clip.mp4", content_type="video/mp4", expires_in=60
            )
            async with aiohttp.ClientSession() as http, http.get(url) as fetched:
                assert fetched.status == 200 and await fetched.read() == data
        if "part copying" in self.claims:
            copy = new_key()
            upload_id = await store.start_upload(target(copy))
            etags = [await store.copy_part(copy, upload_id, number=0, source_key=key)]
            etags.append(await put(store, copy, upload_id, 1, b"tail"))
            await store.complete_upload(copy, upload_id, etags)
            assert await read_all(store, copy) == data + b"tail"
        if "remainders" in self.claims:
            folder = f"{new_key()}.tails/"
            await store.put_stream(f"{folder}0-4", length=4, body=Body(b"tail"))
            assert await read_all(store, f"{folder}0-4") == b"tail"
            await store.delete_under(folder)
            with pytest.raises(NotFound):
                await read_all(store, f"{folder}0-4")
        if "direct parts" in self.claims:
            direct = new_key()
            upload_id = await store.start_upload(target(direct))
            url = await store.presigned_part_url(
                direct, upload_id, number=0, expires_in=60, length=4
            )
            async with aiohttp.ClientSession() as http, http.put(url, data=b"part") as sent:
                assert sent.status == 200
                etag = sent.headers["ETag"]
            listed = await store.list_parts(direct, upload_id)
            assert [(part.number, part.size, part.etag) for part in listed] == [(0, 4, etag)]
            await store.complete_upload(direct, upload_id, [etag])
            assert await read_all(store, direct) == b"part"


class TestLocalStore(StoreContract):
    claims: ClassVar[set[str]] = {"local files"}

    @pytest.fixture
    def store(self, tmp_path: Path) -> BlobStore:
        return LocalStore(tmp_path / "data")


@pytest.fixture
async def s3_store(moto_endpoint: str, bucket: str, tmp_path: Path) -> AsyncIterator[S3Store]:
    settings = make_settings(
        tmp_path / "data", use_cloud_storage=True, s3_bucket=bucket, s3_endpoint_url=moto_endpoint
    )
    async with S3Store.connect(settings) as store:
        await store.control_client.create_bucket(Bucket=bucket)
        yield store


S3_CLAIMS = {"presigning", "part copying", "conditional reads", "remainders", "direct parts"}


class TestS3Store(StoreContract):
    claims: ClassVar[set[str]] = S3_CLAIMS

    @pytest.fixture
    def store(self, s3_store: S3Store) -> BlobStore:
        return s3_store


class TestGuardedStore(StoreContract):
    """S3 behind the breaker: the primary store of a server with S3."""

    claims: ClassVar[set[str]] = S3_CLAIMS

    @pytest.fixture
    def store(self, s3_store: S3Store) -> BlobStore:
        return guard(s3_store, CircuitBreaker())


class TestGuardedLocalStore(StoreContract):
    """The breaker guards whatever store is the primary, with its capabilities."""

    claims: ClassVar[set[str]] = {"local files"}

    @pytest.fixture
    def store(self, tmp_path: Path) -> BlobStore:
        return guard(LocalStore(tmp_path / "data"), CircuitBreaker())


async def test_an_open_breaker_refuses_any_store_at_once(tmp_path: Path) -> None:
    store = guard(LocalStore(tmp_path / "data"), CircuitBreaker(failing_since_start="disk away"))
    with pytest.raises(StorageUnavailable, match="disk away"):
        await store.start_upload(target(new_key()))
    assert list((tmp_path / "data" / ".staging").iterdir()) == []


async def test_an_open_breaker_refuses_to_sign_a_part_url(s3_store: S3Store) -> None:
    """Signed locally, yet refused: the client would only fail at S3 itself, when the
    server could still take the part."""
    store = guard(s3_store, CircuitBreaker(failing_since_start="S3 away"))
    assert isinstance(store, DirectParts)
    with pytest.raises(StorageUnavailable, match="S3 away"):
        await store.presigned_part_url(new_key(), "upload", number=0, expires_in=60)
