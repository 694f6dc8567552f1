"""Debian's ``dhclient -6 -P`` against the AR's DHCPv6 service (agents/dhcpd6.py) on one
access link in a private network namespace (tests/integration/dhcp6_link.py): the MN is
delegated its /64, renews it and releases it, and the server reports each step upward.
The lab's AR agent runs the same service (agents/ardhcp6.py, tests/integration/
test_dualstack_mn.py); this test alone waits for a renewal at T1.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.labs import ROOT

pytestmark = pytest.mark.root

PREFIX = "2001:db8:4000:101::/64"  # the AR's pool's second /64: the first one it delegates


def test_dhclient_gets_renews_and_releases_its_64() -> None:
    done = subprocess.run(["unshare", "-n", sys.executable, "-m", "tests.integration.dhcp6_link"],
                          cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    hook = [line.split() for line in result["hook"]]
    assert ["BOUND6", PREFIX] in hook, hook
    assert ["RENEW6", PREFIX, PREFIX] in hook, hook
    assert ["RELEASE6", PREFIX] in hook, hook
    events = result["events"]
    assert events[0] == ["bound", PREFIX] and ["renewed", PREFIX] in events
    assert events[-1] == ["release", PREFIX]
    assert result["bindings"] == 0 and result["counters"]["release"] == 1
