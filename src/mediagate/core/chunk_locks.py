"""One writer per chunk, and the newest attempt at a chunk wins.

A client sends a chunk again when its first attempt seems lost: a stalled
connection, a timeout on its side, a network switch. That first attempt may
still hold the chunk, its server side waiting for bytes that will never come.
As in tusd (`Lock(ctx, requestUnlock)`), the newer attempt asks the holder to
let go instead of waiting behind it: the holder's next (or current) wait for
body bytes fails with `ChunkSuperseded`, it drops whatever it wrote as any
failed chunk does, and the newer attempt takes the chunk once it is released.
Attempts waiting in between are superseded too.

`ChunkLocks` is the engine's whole view of this, so that the rule can move
into the catalog when several instances share sessions; `InProcessChunkLocks`
keeps it in this process's memory (and, in front of the catalog, lets only
the newest attempt of this process ask the catalog). A tus upload's requests
take turns by the same rule, one slot per upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from mediagate.core.chunk_stream import ReadSource
from mediagate.errors import ChunkSuperseded, Problem


class ChunkLease(Protocol):
    # Who writes the chunk under this lease: recorded as the chunk's writer.
    owner: str
    # Whether it was asked to let go (a newer attempt came, or its hold was lost).
    superseded: bool

    def guard(self, source: ReadSource) -> ReadSource:
        """`source`, whose reads fail with `ChunkSuperseded` once a newer attempt asks."""


class ChunkLocks(Protocol):
    def hold(self, session_id: str, number: int) -> AbstractAsyncContextManager[ChunkLease]:
        """Hold chunk `number` of the session; raises `ChunkSuperseded` if a newer attempt came."""


class Lease:
    """One attempt's hold on a chunk, asked to let go by `let_go`."""

    def __init__(self, owner: str, error: Callable[[], Problem] | None = None) -> None:
        self.owner = owner
        self.superseded = False
        self._error = error or superseded
        self._reading: asyncio.Timeout | None = None
        self._asked = asyncio.Event()

    def let_go(self) -> None:
        if self.superseded:
            return  # asked already, by an attempt that is itself superseded now
        self.superseded = True
        self._asked.set()
        if self._reading is not None:
            self._reading.reschedule(asyncio.get_running_loop().time())

    def error(self) -> Problem:
        """What the attempt answers once it was asked to let go."""
        return self._error()

    async def pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less if asked to let go meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._asked.wait()

    def guard(self, source: ReadSource) -> ReadSource:
        async def read(n: int) -> bytes:
            if self.superseded:
                raise self.error()
            try:
                # No deadline of its own: `let_go` sets one in the past.
                async with asyncio.timeout(None) as self._reading:
                    return await source(n)
            except TimeoutError:
                if self.superseded:
                    raise self.error() from None
                raise
            finally:
                self._reading = None

        return read


@dataclass
class _Slot:
    turn: asyncio.Condition = field(default_factory=asyncio.Condition)
    attempts: list[Lease] = field(default_factory=list)
    holder: Lease | None = None


class InProcessChunkLocks:
    def __init__(
        self, *, owner_prefix: str = "", superseded: Callable[[], Problem] | None = None
    ) -> None:
        self._slots: dict[tuple[str, int], _Slot] = {}
        self._owner_prefix = owner_prefix
        self._superseded = superseded

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str, number: int) -> AsyncIterator[Lease]:
        key = (session_id, number)
        slot = self._slots.setdefault(key, _Slot())
        lease = Lease(f"{self._owner_prefix}{uuid.uuid4().hex[:12]}", self._superseded)
        try:
            async with slot.turn:
                for older in slot.attempts:
                    older.let_go()
                slot.attempts.append(lease)
                slot.turn.notify_all()
                await slot.turn.wait_for(lambda: slot.holder is None or lease.superseded)
                if lease.superseded:
                    raise lease.error()
                slot.holder = lease
            try:
                yield lease
            finally:
                async with slot.turn:
                    slot.holder = None
                    slot.turn.notify_all()
        finally:
            if lease in slot.attempts:
                slot.attempts.remove(lease)
            if not slot.attempts and self._slots.get(key) is slot:
                del self._slots[key]

    def __len__(self) -> int:
        """How many chunks are held or waited for (0 when all is quiet: nothing leaks)."""
        return len(self._slots)


def superseded() -> ChunkSuperseded:
    return ChunkSuperseded("a newer attempt at this chunk took over; this one kept nothing")
