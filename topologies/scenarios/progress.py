"""Progress of a long run with an estimate of the time left: on a terminal one line that
updates in place, otherwise (a log file, a test's callback) one plain line per step.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from topologies.lab.lab import stderr_progress


def eta_text(seconds: float) -> str:
    """'42s', '3m05s', '1h02m': short enough for a status line."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Eta:
    """Counts ``total`` steps and tells, at each, how many are done and when the rest will
    be, from the mean step time so far.

    With the lab's own stderr progress on a terminal, the line is rewritten in place;
    any other ``emit`` (or stderr redirected to a file) gets one line per step, so logs
    and tests see every step.
    """

    def __init__(self, total: int, emit: Callable[[str], None] = stderr_progress, *,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.total = max(total, 1)
        self.done_steps = 0
        self._emit = emit
        self._clock = clock
        self._t0 = clock()
        out = stream if stream is not None else sys.stderr
        self._tty: TextIO | None = out if emit is stderr_progress and out.isatty() else None
        self._open_line = False

    def line(self, msg: str) -> str:
        elapsed = self._clock() - self._t0
        pct = 100 * self.done_steps // self.total
        left = self.total - self.done_steps
        eta = (f"ETA {eta_text(elapsed / self.done_steps * left)}"
               if self.done_steps and left else f"{eta_text(elapsed)} elapsed")
        width = len(str(self.total))
        return f"  {self.done_steps:{width}d}/{self.total} {pct:3d}% {eta:>12s}  {msg}"

    def step(self, msg: str = "") -> None:
        self.done_steps = min(self.done_steps + 1, self.total)
        text = self.line(msg)
        if self._tty is not None:
            self._tty.write(f"\r\x1b[K[flatarch] {text}")
            self._tty.flush()
            self._open_line = True
        else:
            self._emit(text)

    def done(self) -> None:
        """Ends the updating line, so later output starts on a fresh one."""
        if self._tty is not None and self._open_line:
            self._tty.write("\n")
            self._tty.flush()
            self._open_line = False
