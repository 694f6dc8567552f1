"""A verb run in the background by a shell without job control starts with SIGINT ignored;
the verbs that hold a lab take SIGINT and SIGTERM back, so that stopping one takes its lab
down (the lab's exit runs) instead of leaving it or being ignored."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from topologies.cli.common import stop_on


def test_an_ignored_sigint_and_a_sigterm_become_a_keyboard_interrupt() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `cmd &` in a script leaves
        stop_on(signal.SIGINT, signal.SIGTERM)
        for s in (signal.SIGINT, signal.SIGTERM):
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), s)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_a_forked_copy_exits_on_the_signal_without_unwinding(tmp_path: Path) -> None:
    """pyroute2 forks to open a namespace's socket and SIGTERMs the child: the child must
    exit there, not raise into the with-blocks it shares with its parent and run their
    cleanup (which tore the lab down under its parent beside a CPU hog)."""
    unwound = tmp_path / "unwound"
    before = signal.getsignal(signal.SIGTERM)
    try:
        stop_on(signal.SIGTERM)
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's exit status is the assertion
            try:
                os.write(ready_w, b"x")
                while True:
                    signal.pause()
            finally:
                unwound.write_text("the child ran its parent's cleanup\n")
                os._exit(0)
        os.read(ready_r, 1)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGTERM
        assert not unwound.exists()
    finally:
        signal.signal(signal.SIGTERM, before)
