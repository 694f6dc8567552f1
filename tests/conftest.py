"""Shared fixtures: root detection, and the end-of-run check that nothing leaked.

Every lab a test builds must be gone when the run ends: no new network namespace,
no lab interface in the root namespace, no daemon process that was not there before.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

WATCHED = {
    "zebra", "bgpd", "ospfd", "staticd", "watchfrr", "exabgp", "named", "unbound",
    "mnexec", "iperf3", "kea-dhcp4", "dnsmasq", "udhcpc", "dhclient", "tcpdump",
}


def _snapshot() -> dict[str, set[str]]:
    procs: set[str] = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                comm = (p / "comm").read_text().strip()
            except OSError:
                continue
            if comm in WATCHED:
                procs.add(f"{comm}({p.name})")
    links = {
        ln.split(": ")[1].split("@")[0]
        for ln in subprocess.run(
            ["ip", "-o", "link", "show"], capture_output=True, text=True
        ).stdout.splitlines()
        if "-eth" in ln
    }
    netns = set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                               text=True).stdout.split())
    return {"processes": procs, "links": links, "netns": netns}


_BEFORE: dict[str, set[str]] = {}


def pytest_sessionstart(session: pytest.Session) -> None:
    _BEFORE.update(_snapshot())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    after = _snapshot()
    leaks = {k: sorted(after[k] - _BEFORE.get(k, set())) for k in after}
    leaks = {k: v for k, v in leaks.items() if v}
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if leaks:
        msg = f"LEAK CHECK FAILED: the test run left lab state behind: {leaks}"
        if reporter:
            reporter.write_line(msg, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter:
        reporter.write_line("leak check: no namespace, lab interface or daemon left behind")


def is_root() -> bool:
    return os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if is_root():
        return
    skip = pytest.mark.skip(reason="integration test: needs root (run `sudo make test`)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
