"""A declared whole-file SHA-256, hashed while chunks stream in.

Chunks that arrive in order are hashed as they pass, for free; once one
arrives out of order (or the server restarts) the rest is read back from the
store once, at complete.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunningDigest:
    """SHA-256 of the file's first `next_chunk` chunks."""

    next_chunk: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)

    def fork_for(self, number: int) -> Any | None:
        """A copy to feed chunk `number` into, if it is the next one in order."""
        return self.hasher.copy() if number == self.next_chunk else None

    def advance(self, number: int, fed: Any) -> None:
        """Adopt the copy that chunk `number` was fed into, if still next in order."""
        if number == self.next_chunk:
            self.hasher = fed
            self.next_chunk = number + 1
