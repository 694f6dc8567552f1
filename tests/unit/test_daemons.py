"""Daemons as one abstraction: the order the lab derives from what each kind declares, and
stops that signal a pid only when it is still the process we started."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from topologies.lab.daemons import (
    Daemon,
    LabError,
    identity,
    is_ours,
    read_pid_record,
    start_order,
    stop_order,
    stop_pid_file,
    write_pid,
)
from topologies.lab.lab import DAEMON_CLASSES


def test_the_lab_start_order_follows_the_declarations() -> None:
    order = start_order(DAEMON_CLASSES, DAEMON_CLASSES)
    pos = {k: i for i, k in enumerate(order)}
    assert pos["zebra"] < pos["ospfd"] < pos["bgpd"] < pos["exabgp"] < pos["agent"]
    assert pos["exabgp"] < pos["named"] < pos["unbound"] < pos["mnagent"]
    assert pos["zebra"] < pos["dnsmasq"] < pos["named"]
    assert sorted(order) == sorted(DAEMON_CLASSES)


def test_a_spawned_process_stops_right_after_its_parent() -> None:
    order = stop_order(start_order(DAEMON_CLASSES, DAEMON_CLASSES), DAEMON_CLASSES)
    assert order.index("agent") == order.index("exabgp") + 1  # ExaBGP would respawn it
    assert order.index("mnagent") < order.index("unbound") < order.index("named")
    assert order.index("bgpd") < order.index("ospfd") < order.index("zebra")
    assert sorted(order) == sorted(DAEMON_CLASSES)


def test_absent_kinds_are_ignored_and_given_order_breaks_ties() -> None:
    assert start_order(["unbound", "named"], DAEMON_CLASSES) == ["named", "unbound"]
    assert start_order(["bgpd", "dnsmasq"], DAEMON_CLASSES) == ["bgpd", "dnsmasq"]


def test_a_cycle_is_refused_by_name() -> None:
    class A(Daemon):
        kind = "a"
        after: ClassVar[tuple[str, ...]] = ("b",)

    class B(Daemon):
        kind = "b"
        after: ClassVar[tuple[str, ...]] = ("a",)

    with pytest.raises(LabError, match="cycle: a -> b -> a"):
        start_order(["a", "b"], {"a": A, "b": B})


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    # The marker stands for a lab run directory on the command line.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             str(tmp_path / "run" / "ar1")])
    yield proc
    proc.kill()
    proc.wait()


def test_a_pid_file_records_the_start_time(tmp_path: Path,
                                           sleeper: subprocess.Popen[bytes]) -> None:
    pid_file = tmp_path / "x.pid"
    write_pid(pid_file, sleeper.pid)
    ident = identity(sleeper.pid)
    assert ident is not None
    assert read_pid_record(pid_file) == (sleeper.pid, ident.start)
    assert is_ours(sleeper.pid, start=ident.start)
    assert stop_pid_file(pid_file)
    assert sleeper.wait(5) is not None


def test_a_recycled_pid_is_never_signalled(tmp_path: Path,
                                           sleeper: subprocess.Popen[bytes]) -> None:
    ident = identity(sleeper.pid)
    assert ident is not None
    stale = tmp_path / "stale.pid"
    stale.write_text(f"{sleeper.pid} {ident.start + 1}\n")  # another process, same pid
    assert not stop_pid_file(stale)
    assert sleeper.poll() is None
    # A daemon's own pid file holds no start time: the command line must name our run dir.
    daemon_pid = tmp_path / "bgpd.pid"
    daemon_pid.write_text(f"{sleeper.pid}\n")
    assert not stop_pid_file(daemon_pid, marker=str(tmp_path / "run" / "ar2"))
    assert not stop_pid_file(daemon_pid)  # no proof of identity at all
    assert sleeper.poll() is None
    assert stop_pid_file(daemon_pid, marker=str(tmp_path / "run" / "ar1"))
    assert sleeper.wait(5) is not None


def test_our_own_interpreter_is_not_taken_for_an_agent(tmp_path: Path) -> None:
    # The old check matched on the command name "python": any Python process would do.
    mine = tmp_path / "agent.pid"
    mine.write_text(f"{os.getpid()}\n")
    assert not stop_pid_file(mine, marker="/run/flatarch/figure2/ar1")
