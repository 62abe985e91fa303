"""How the CLI shows a transfer: a tqdm bar on a terminal, a plain line now and then otherwise.

Sizes and rates in IEC units (MiB, MiB/s), as the page and the server's logs print them.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

MiB = 1024 * 1024
# Plain lines: one per this many seconds at most (and one at the end), so a log stays short.
LINE_EVERY = 5.0
# tqdm scales by SI prefixes on its own; it is fed MiB instead, and told to say so.
BAR_FORMAT = "{l_bar}{bar}| {n:.1f}/{total:.1f} MiB [{elapsed}<{remaining}, {rate_fmt}]"


class Display:
    """Progress of one file, fed with the bytes done so far (the first call says how many
    were already there from an earlier run: they count in the bar, not in the rate).
    `quiet`: nothing at all."""

    def __init__(
        self, label: str, *, bar: bool, quiet: bool = False, stream: TextIO = sys.stderr
    ) -> None:
        self._label = label
        self._want_bar = bar
        self._quiet = quiet
        self._stream = stream
        self._bar: Any = None
        self._total = 0
        self._done = self._initial = 0
        self._started = self._last_line = time.monotonic()
        self._begun = False

    def note(self, message: str) -> None:
        if self._quiet:
            return
        line = f"{self._label}: {message}"
        if self._bar is not None:
            self._bar.write(line, file=self._stream)
        else:
            print(line, file=self._stream, flush=True)

    def update(self, done: int, total: int, initial: int = 0) -> None:
        if self._quiet:
            return
        if not self._begun:
            self._begin(total, initial)
        if self._bar is not None:
            self._bar.update((done - self._done) / MiB)
        elif time.monotonic() - self._last_line >= LINE_EVERY:
            self._last_line = time.monotonic()
            self._line(done)
        self._done = done

    def close(self, *, finished: bool) -> None:
        if self._bar is not None:
            self._bar.close()
        elif finished and self._begun:
            self._line(self._total)

    def _begin(self, total: int, initial: int) -> None:
        self._begun = True
        self._total, self._done, self._initial = total, initial, initial
        if initial:
            self.note(f"resuming: {initial / MiB:.1f} of {total / MiB:.1f} MiB already there")
        if self._want_bar:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total / MiB,
                initial=initial / MiB,
                desc=self._label,
                unit="MiB",
                bar_format=BAR_FORMAT,
                file=self._stream,
                dynamic_ncols=True,
            )

    def _line(self, done: int) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        percent = 100 * done / self._total if self._total else 100
        rate = (done - self._initial) / MiB / elapsed
        print(
            f"{self._label}: {percent:.0f}% ({done / MiB:.1f} of {self._total / MiB:.1f} MiB, "
            f"{rate:.1f} MiB/s)",
            file=self._stream,
            flush=True,
        )
