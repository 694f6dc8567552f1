"""The progress helper: one plain line per step with its ETA when not on a terminal, one
line rewritten in place on a terminal."""

from __future__ import annotations

import io

from topologies.lab.lab import stderr_progress
from topologies.scenarios.progress import Eta, eta_text


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_with_an_eta_from_the_mean_step() -> None:
    now = [100.0]
    lines: list[str] = []
    eta = Eta(4, lines.append, clock=lambda: now[0])
    for msg in ("a", "b", "c", "d"):
        now[0] += 10.0
        eta.step(msg)
    eta.done()
    assert lines[0].split() == ["1/4", "25%", "ETA", "30s", "a"]
    assert lines[1].split() == ["2/4", "50%", "ETA", "20s", "b"]
    assert lines[3].split() == ["4/4", "100%", "40s", "elapsed", "d"]


def test_on_a_terminal_the_line_updates_in_place() -> None:
    tty = _Tty()
    eta = Eta(2, stderr_progress, stream=tty, clock=lambda: 0.0)
    eta.step("first")
    eta.step("second")
    eta.done()
    out = tty.getvalue()
    assert out.count("\r\x1b[K") == 2 and out.endswith("second\n") and out.count("\n") == 1


def test_eta_text() -> None:
    assert [eta_text(s) for s in (0.4, 42, 185, 3720)] == ["0s", "42s", "3m05s", "1h02m"]
