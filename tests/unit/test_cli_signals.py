"""A verb run in the background by a shell without job control starts with SIGINT ignored;
the verbs that hold a lab take SIGINT and SIGTERM back, so that stopping one takes its lab
down (the lab's exit runs) instead of leaving it or being ignored."""

from __future__ import annotations

import os
import signal

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
