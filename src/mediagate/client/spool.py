"""Standard input made into what an upload needs: a size, and bytes that can be read again.

The native API takes the size at initiate, and a chunk that must be sent again
(a retry, a chunk the server lost) needs its bytes a second time. A regular
file on stdin (`< clip.mp4`) has both and is used as it is; a pipe has
neither, so it is copied whole into a temporary file first (in $TMPDIR,
unlinked at once, gone when closed): disk space for one copy of the input,
memory for one piece. Nothing is uploaded before the input ends.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from typing import BinaryIO

PIECE = 1024 * 1024


def readable_again(stream: BinaryIO) -> tuple[BinaryIO, bool]:
    """`stream` if it is a regular file, else a temporary copy of it (blocking: run in a
    thread); and whether the caller must close what it got."""
    if stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
        return stream, False
    copy = tempfile.TemporaryFile()  # closed by the caller
    try:
        shutil.copyfileobj(stream, copy, PIECE)
        copy.flush()
    except BaseException:
        copy.close()
        raise
    return copy, True
