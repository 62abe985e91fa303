"""One file's upload: find or start its session, send the chunks the server lacks, complete.

The session id is saved (see `resume.py`) as soon as the server gives it, and
removed once the media exists, so a run stopped at any point can be resumed:
the next run asks the server which chunks it holds and sends only the others.

Chunks go straight into the server's bucket when the server offers that and the
bucket takes them (a direct session); otherwise, and from the first chunk the
bucket does not take, through the server (the relay). A resumed session keeps
the path it was started on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from mediagate.client.errors import DirectPutFailed, MediagateError, NotFound, ProblemError
from mediagate.client.file_source import FileSource
from mediagate.client.models import Media, SessionStatus, UploadProgress, UploadResult
from mediagate.client.resume import ResumeState, ResumeStore
from mediagate.client.retry import RetryPolicy, is_retryable_status

# `complete` answering `missing-chunks` (a chunk lost on the server's side) is
# repaired by sending those again; this many times before giving up.
REPAIR_ROUNDS = 3
HASH_WINDOW = 16 * 1024 * 1024
# A saved session in another state (expired) cannot become the media: start afresh.
# A finalizing or completed one already is the media: `complete` answers it again.
RESUMABLE_STATES = {"open", "finalizing", "completed"}
# The server's answers that send a direct upload's chunks through the server instead.
DIRECT_REFUSED = {"direct-upload-not-offered", "direct-upload-unavailable"}
# Chunks in flight unless told: through the server, what it takes without strain; into
# the bucket more, as `aws s3 cp` does (10): each chunk's MD5 and signing come before its
# PUT, and 8 moved ~17 % more MB/s into moto than 4, 12 no more than 8 (bench/README.md).
RELAY_PARALLEL = 4
DIRECT_PARALLEL = 8
# The chunk size a direct upload asks for unless told: each part costs a signing call to
# the server and a request to S3, and a larger part costs the server nothing (its bytes
# never pass through it); 16 MiB halves both against the server's usual 8.
DIRECT_CHUNK_SIZE = 16 * 1024 * 1024
# A bucket answering 5xx (S3's "slow down", "internal error, try again") is asked again
# before the chunk goes through the server; one that cannot be reached is not.
BUCKET_RETRY = RetryPolicy(attempts=3, base_delay=0.5, max_delay=2.0)


class SessionCalls(Protocol):
    """What an upload needs of the client (`MediagateClient` is one): the session calls."""

    server: str
    resume_store: ResumeStore

    async def initiate(self, body: dict[str, Any]) -> dict[str, Any]: ...

    async def session_status(self, session_id: str) -> SessionStatus: ...

    async def put_chunk(
        self,
        session_id: str,
        number: int,
        body: Callable[[], AsyncIterator[bytes]],
        length: int,
        headers: dict[str, str],
    ) -> dict[str, Any]: ...

    async def complete(self, session_id: str) -> dict[str, Any]: ...

    async def abort(self, session_id: str) -> None: ...

    async def direct_create(self, body: dict[str, Any]) -> dict[str, Any]: ...

    async def direct_part_url(self, session_id: str, number: int, length: int, md5: str) -> str: ...

    async def direct_parts(self, session_id: str) -> dict[int, int]: ...

    async def direct_complete(self, session_id: str) -> dict[str, Any]: ...

    async def put_part_directly(
        self, url: str, body: AsyncIterator[bytes], length: int, md5: str
    ) -> None: ...


@dataclass(frozen=True)
class UploadOptions:
    filename: str | None = None
    content_type: str | None = None
    parallel: int | None = None  # RELAY_PARALLEL or DIRECT_PARALLEL
    chunk_size: int | None = None
    chunk_digest: bool = True
    file_sha256: bool = False
    resume: bool = True
    direct: bool = True


@dataclass(frozen=True)
class Session:
    id: str
    chunk_size: int
    total_chunks: int
    received: frozenset[int]
    direct: bool = False


class Upload:
    def __init__(
        self,
        client: SessionCalls,
        file: str | os.PathLike[str] | BinaryIO,
        options: UploadOptions,
        on_progress: Callable[[UploadProgress], None] | None,
    ) -> None:
        if options.parallel is not None and options.parallel < 1:
            raise ValueError("parallel must be at least 1")
        self._client = client
        self._file = file
        self._options = options
        self._on_progress = on_progress
        self._filename = options.filename or ""  # the file's own name once it is open
        self._total = 0
        self._confirmed = 0
        self._in_flight: dict[int, int] = {}
        self._resumed = 0
        self._sent_chunks = 0
        self._direct_chunks = 0
        # Why chunks go through the server rather than into the bucket, once known:
        # from then on every chunk of this run does.
        self._relay_reason: str | None = None if options.direct else "direct uploads not asked for"

    async def run(self) -> UploadResult:
        source = await asyncio.to_thread(FileSource, self._file)
        try:
            return await self._upload(source)
        finally:
            source.close()

    async def _upload(self, source: FileSource) -> UploadResult:
        self._filename = self._filename or source.name
        self._total = source.size
        session = await self._resumed_session(source)
        if session is None:
            session = await self._new_session(source)
        elif not session.direct and self._relay_reason is None:
            self._relay_reason = "resumed a session started through the server"
        self._resumed = self._confirmed = sum(
            _chunk_length(session, n, source.size) for n in session.received
        )
        self._report()
        missing = [n for n in range(session.total_chunks) if n not in session.received]
        for _ in range(REPAIR_ROUNDS):
            await self._send(source, session, missing)
            source.check_unchanged()
            try:
                if session.direct:
                    answer = await self._client.direct_complete(session.id)
                else:
                    answer = await self._client.complete(session.id)
            except ProblemError as error:
                missing = await self._to_repair(session, error)
                continue
            self._forget(source)
            relayed = self._direct_chunks < self._sent_chunks
            return UploadResult(
                media=Media.from_json(answer["info"]),
                session_id=session.id,
                sent_chunks=self._sent_chunks,
                resumed_chunks=len(session.received),
                finalizing=answer["info"]["state"] == "finalizing",
                direct_chunks=self._direct_chunks,
                path=upload_path(self._sent_chunks, self._direct_chunks, session.direct),
                relay_reason=self._relay_reason if relayed else None,
            )
        raise MediagateError(f"chunks of {self._filename} kept going missing on the server")

    # --- the session ----------------------------------------------------------------

    async def _resumed_session(self, source: FileSource) -> Session | None:
        """The session a previous run left for this very file, if the server still has it open."""
        if not self._options.resume or source.fingerprint is None:
            return None
        store = self._client.resume_store
        state = store.load(self._client.server, source.fingerprint.path)
        if state is None:
            return None
        if not state.matches(source.fingerprint):
            # The file changed since: its chunks on the server are not this file's.
            store.remove(state.server, state.path)
            with contextlib.suppress(MediagateError):
                await self._client.abort(state.session_id)
            return None
        try:
            status = await self._client.session_status(state.session_id)
        except NotFound:
            return None
        except ProblemError as error:
            if error.status != 410:  # expired: start afresh
                raise
            return None
        if status.state not in RESUMABLE_STATES or status.size != source.size:
            return None
        if status.state != "open":
            # Completed (or finalizing), but the run that completed it did not live
            # to say so: `complete` answers the same media again, never a second one.
            everything = frozenset(range(status.total_chunks))
            return Session(
                status.session_id, status.chunk_size, status.total_chunks, everything, state.direct
            )
        session = _session(status)
        if not state.direct:
            return session
        # Its chunks are those the server relayed and those in the bucket at full length.
        in_bucket = await self._client.direct_parts(session.id)
        whole = {
            n for n, size in in_bucket.items() if size == _chunk_length(session, n, status.size)
        }
        return Session(
            session.id, session.chunk_size, session.total_chunks, session.received | whole, True
        )

    async def _new_session(self, source: FileSource) -> Session:
        body: dict[str, object] = {"filename": self._filename, "size": source.size}
        if self._options.content_type:
            body["content_type"] = self._options.content_type
        if self._options.chunk_size:
            body["chunk_size"] = self._options.chunk_size
        if self._options.file_sha256:
            body["sha256"] = await _file_sha256(source)
        direct = None
        if self._options.file_sha256:
            # The server checks a file's SHA-256 on the bytes it relays; direct ones it never sees.
            self._relay_reason = "a declared SHA-256 is checked on the bytes the server relays"
        elif source.size == 0:
            self._relay_reason = "an empty file has no chunk to send"
        elif self._relay_reason is None:
            direct = await self._direct_session(source)
        if direct is not None:
            answer = {**direct, "session_id": direct["uploadId"]}
        else:
            answer = await self._client.initiate(body)
        if source.fingerprint is not None and self._options.resume:
            fingerprint = source.fingerprint
            self._client.resume_store.save(
                ResumeState(
                    server=self._client.server,
                    path=fingerprint.path,
                    size=fingerprint.size,
                    mtime_ns=fingerprint.mtime_ns,
                    session_id=answer["session_id"],
                    direct=direct is not None,
                )
            )
        return Session(
            answer["session_id"],
            answer["chunk_size"],
            answer["total_chunks"],
            frozenset(),
            direct is not None,
        )

    async def _direct_session(self, source: FileSource) -> dict[str, Any] | None:
        """A direct upload of the file, or None if the server offers none now (local
        storage, S3 failing, a server before direct uploads): the relay takes it."""
        body: dict[str, object] = {"filename": self._filename, "size": source.size}
        if self._options.content_type:
            body["type"] = self._options.content_type
        body["chunk_size"] = self._options.chunk_size or DIRECT_CHUNK_SIZE
        try:
            return await self._client.direct_create(body)
        except ProblemError as error:
            if error.code in DIRECT_REFUSED or error.status in (404, 405):
                self._relay_reason = f"the server offers no direct uploads ({error.status})"
                return None
            raise

    def _forget(self, source: FileSource) -> None:
        if source.fingerprint is not None and self._options.resume:
            self._client.resume_store.remove(self._client.server, source.fingerprint.path)

    async def _to_repair(self, session: Session, error: ProblemError) -> list[int]:
        """The chunks to send again after `complete` refused, or the error if none can help."""
        if error.code == "missing-chunks":
            missing = [int(n) for n in error.problem.get("missing_chunks", ())]
        elif error.code == "file-digest-mismatch":
            # The server reopened the session with the chunks it could keep.
            status = await self._client.session_status(session.id)
            missing = [n for n in range(session.total_chunks) if n not in status.received]
        else:
            raise error
        if not missing:
            raise error
        self._confirmed -= sum(_chunk_length(session, n, self._total) for n in missing)
        return missing

    # --- the chunks --------------------------------------------------------------------

    async def _send(self, source: FileSource, session: Session, numbers: list[int]) -> None:
        """Send `numbers`, `parallel` at a time; the first failure cancels the rest."""
        parallel = self._options.parallel
        if parallel is None:
            direct = session.direct and self._relay_reason is None
            parallel = DIRECT_PARALLEL if direct else RELAY_PARALLEL
        queue = iter(numbers)

        async def worker() -> None:
            for number in queue:
                await self._send_chunk(source, session, number)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(parallel, len(numbers))):
                    group.create_task(worker())
        except ExceptionGroup as failed:
            # The first failure is the news; the others are the same or its consequences.
            raise failed.exceptions[0] from None

    async def _send_chunk(self, source: FileSource, session: Session, number: int) -> None:
        offset = number * session.chunk_size
        length = _chunk_length(session, number, source.size)
        if (
            session.direct
            and self._relay_reason is None
            and await self._put_direct(source, session, number)
        ):
            self._confirmed += length
            self._sent_chunks += 1
            self._direct_chunks += 1
            self._report()
            return
        headers = {}
        if self._options.chunk_digest:
            # SHA-256 rather than MD5: the server checks it for ~40 % less CPU (docs/api.md).
            digest = await asyncio.to_thread(source.sha256, offset, length)
            headers["X-Chunk-SHA256"] = digest

        def body() -> AsyncIterator[bytes]:
            self._in_flight[number] = 0  # a retry counts this chunk from zero again
            return source.stream(offset, length, lambda n: self._streamed(number, n))

        try:
            await self._client.put_chunk(session.id, number, body, length, headers)
        finally:
            self._in_flight.pop(number, None)
        self._confirmed += length
        self._sent_chunks += 1
        self._report()

    async def _put_direct(self, source: FileSource, session: Session, number: int) -> bool:
        """PUT the chunk into the bucket; False if it must go through the server instead
        (the bucket out of reach or failing, or the server no longer signing)."""
        offset = number * session.chunk_size
        length = _chunk_length(session, number, source.size)
        md5 = await asyncio.to_thread(_md5, source, offset, length)
        try:
            url = await self._client.direct_part_url(session.id, number, length, md5)
            failures = 0
            while True:
                self._in_flight[number] = 0
                body = source.stream(offset, length, lambda n: self._streamed(number, n))
                try:
                    await self._client.put_part_directly(url, body, length, md5)
                    break
                except DirectPutFailed as error:
                    failures += 1
                    answered = error.status is not None and is_retryable_status(error.status)
                    if not answered or failures >= BUCKET_RETRY.attempts:
                        raise
                    await asyncio.sleep(BUCKET_RETRY.delay(failures))
        except DirectPutFailed as error:
            self._relay_reason = f"the bucket did not take chunk {number}: {error}"
        except ProblemError as error:
            if error.code not in DIRECT_REFUSED:
                raise
            self._relay_reason = f"the server no longer signs direct parts ({error.status})"
        else:
            return True
        finally:
            self._in_flight.pop(number, None)
        return False

    def _streamed(self, number: int, size: int) -> None:
        self._in_flight[number] = self._in_flight.get(number, 0) + size
        self._report()

    def _report(self) -> None:
        if self._on_progress is not None:
            sent = self._confirmed + sum(self._in_flight.values())
            self._on_progress(UploadProgress(self._filename, self._total, sent, self._resumed))


def _md5(source: FileSource, offset: int, length: int) -> str:
    """Base64 MD5 of a chunk, as Content-MD5 (blocking: call from a thread)."""
    hasher = hashlib.md5()
    source.hash_into(hasher, offset, length)
    return base64.b64encode(hasher.digest()).decode()


async def _file_sha256(source: FileSource) -> str:
    """The whole file's SHA-256, a window per thread hop, so that Ctrl-C need not wait for it."""
    hasher = hashlib.sha256()
    for offset in range(0, source.size, HASH_WINDOW):
        await asyncio.to_thread(source.hash_into, hasher, offset, HASH_WINDOW)
    return hasher.hexdigest()


def upload_path(sent_chunks: int, direct_chunks: int, direct_session: bool) -> str:
    """How this run's chunks went: `direct` (into the bucket), `relay` (through the
    server), or `mixed` (direct until the bucket stopped taking them)."""
    if direct_chunks == 0:
        return "direct" if direct_session and sent_chunks == 0 else "relay"
    return "direct" if direct_chunks == sent_chunks else "mixed"


def _session(status: SessionStatus) -> Session:
    return Session(status.session_id, status.chunk_size, status.total_chunks, status.received)


def _chunk_length(session: Session, number: int, size: int) -> int:
    return min(session.chunk_size, size - number * session.chunk_size)
