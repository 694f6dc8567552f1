"""Shared fixtures: root detection, and the end-of-run check that nothing leaked.

Every lab a test builds must be gone when the run ends: no new network namespace,
no lab interface in the root namespace, no daemon process that was not there before; after
the Docker test, nothing of its dockerd either (tests/dockerside.py).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests import dockerside
from topologies.lab.daemons import proc_comm

WATCHED = {
    "zebra", "bgpd", "ospfd", "ospf6d", "staticd", "watchfrr", "exabgp", "named", "unbound",
    "mnexec", "iperf3", "kea-dhcp4", "dnsmasq", "udhcpc", "dhclient", "tcpdump",
    "busybox",  # the MNs' udhcpc runs as busybox
    "tcpreplay",  # the flood bench's sender
} | dockerside.PROCESSES


def _snapshot() -> dict[str, set[str]]:
    procs: set[str] = set()
    for p in Path("/proc").iterdir():
        # proc_comm skips zombies: exited children that init has not reaped yet.
        comm = proc_comm(int(p.name)) if p.name.isdigit() else None
        if comm in WATCHED:
            procs.add(f"{comm}({p.name})")
    ip_links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True,
                              text=True).stdout
    links = {
        ln.split(": ")[1].split("@")[0]
        for ln in ip_links.splitlines()
        if "-eth" in ln
    }
    netns = set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                               text=True).stdout.split())
    return {"processes": procs, "links": links, "netns": netns,
            **dockerside.snapshot(ip_links)}


_BEFORE: dict[str, set[str]] = {}
_RAN_ROOT: list[str] = []  # integration tests that ran: only they can leave lab state behind
_RAN_DOCKER: list[str] = []  # the Docker test's: only then is the Docker side checked


def pytest_sessionstart(session: pytest.Session) -> None:
    _BEFORE.update(_snapshot())


def _leaks() -> dict[str, list[str]]:
    after = _snapshot()
    leaks = {k: sorted(after[k] - _BEFORE.get(k, set())) for k in after
             if _RAN_DOCKER or not k.startswith("docker_")}
    return {k: v for k, v in leaks.items() if v}


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "root" in item.keywords and is_root():
        _RAN_ROOT.append(item.nodeid)
        if "docker" in item.keywords:
            _RAN_DOCKER.append(item.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _RAN_ROOT:
        # A unit-only run starts no lab; another lab on the machine is not its leak.
        return
    # A process signalled by a teardown may need a moment to finish exiting.
    deadline = time.monotonic() + 5.0
    leaks = _leaks()
    while leaks and time.monotonic() < deadline:
        time.sleep(0.2)
        leaks = _leaks()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if leaks:
        msg = f"LEAK CHECK FAILED: the test run left lab state behind: {leaks}"
        if reporter:
            reporter.write_line(msg, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter:
        reporter.write_line("leak check: no namespace, lab interface or daemon left behind"
                            + ("; no container, docker network, plugin, bridge, veth, build "
                               "directory or dockerd either" if _RAN_DOCKER else ""))


def is_root() -> bool:
    return os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if is_root():
        return
    skip = pytest.mark.skip(reason="integration test: needs root (run `sudo make test`)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
