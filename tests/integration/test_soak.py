"""The short soak (issue 20): a minute of handoffs at 1 a second in the Figure-2 lab; none
fails, no host route is left stale, and every daemon kind is sampled from /proc."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.labs import figure2_lab
from topologies.lab.lab import Lab
from topologies.scenarios.soak import SoakScenario

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from figure2_lab()


def test_a_minute_of_handoffs_fails_none_and_leaves_no_stale_route(
        lab: Lab, tmp_path: Path) -> None:
    result = SoakScenario(lab, minutes=1.0, rate=1.0, out_dir=tmp_path).run()
    assert result["handoffs"] >= 40 and result["failed"] == 0, result["errors"]
    assert result["rotations"] > 0 and result["rotations_failed"] == 0, result["errors"]
    assert result["stale_routes_end"] == 0 and result["missing_routes_end"] == 0
    assert result["reroute_ms"]["p99"] is not None
    first, last = result["samples"][0], result["samples"][-1]
    for kind in ("zebra", "bgpd", "exabgp", "agent", "named", "unbound", "mnagent"):
        assert last["rss_kb"].get(kind, 0) > 0, kind
        assert first["fds"].get(kind, 0) > 0, kind
    assert last["rib_prefixes"] > 0 and last["fib_routes"] > 0
