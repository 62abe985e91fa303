"""How the CLI shows a transfer: a tqdm bar on a terminal, a plain line now and then otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

MB = 1_000_000
# Plain lines: one per this many seconds at most (and one at the end), so a log stays short.
LINE_EVERY = 5.0


class Display:
    """Progress of one file, fed with the bytes done so far (the first call says how many
    were already there from an earlier run: they count in the bar, not in the rate)."""

    def __init__(self, label: str, *, bar: bool, stream: TextIO = sys.stderr) -> None:
        self._label = label
        self._want_bar = bar
        self._stream = stream
        self._bar: Any = None
        self._total = 0
        self._done = self._initial = 0
        self._started = self._last_line = time.monotonic()
        self._begun = False

    def note(self, message: str) -> None:
        line = f"{self._label}: {message}"
        if self._bar is not None:
            self._bar.write(line, file=self._stream)
        else:
            print(line, file=self._stream, flush=True)

    def update(self, done: int, total: int, initial: int = 0) -> None:
        if not self._begun:
            self._begin(total, initial)
        if self._bar is not None:
            self._bar.update(done - self._done)
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
            self.note(f"resuming: {initial / MB:.1f} of {total / MB:.1f} MB already there")
        if self._want_bar:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=self._label,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=self._stream,
                dynamic_ncols=True,
            )

    def _line(self, done: int) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        percent = 100 * done / self._total if self._total else 100
        rate = (done - self._initial) / MB / elapsed
        print(
            f"{self._label}: {percent:.0f}% ({done / MB:.1f} of {self._total / MB:.1f} MB, "
            f"{rate:.1f} MB/s)",
            file=self._stream,
            flush=True,
        )
