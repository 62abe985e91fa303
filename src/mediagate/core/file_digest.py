"""A declared whole-file SHA-256, hashed while chunks stream in.

Chunks that arrive in order are hashed as they pass, for free; once one
arrives out of order (or the server restarts) the rest is read back from the
store once, at complete.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from mediagate.models import Chunk


@dataclass
class RunningDigest:
    """SHA-256 of the file's first `next_chunk` chunks, and who wrote each of them."""

    next_chunk: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)
    writers: dict[int, str] = field(default_factory=dict)

    def fork_for(self, number: int) -> Any | None:
        """A copy to feed chunk `number` into, if it is the next one in order."""
        return self.hasher.copy() if number == self.next_chunk else None

    def advance(self, number: int, fed: Any, writer: str) -> None:
        """Adopt the copy that chunk `number` (written by `writer`) was fed into, if still
        next in order."""
        if number == self.next_chunk:
            self.hasher = fed
            self.writers[number] = writer
            self.next_chunk = number + 1

    def describes(self, chunks: list[Chunk]) -> bool:
        """Whether the chunks it hashed are still the ones recorded (same writers)."""
        recorded = {chunk.number: chunk.writer for chunk in chunks}
        return all(recorded.get(number) == writer for number, writer in self.writers.items())
