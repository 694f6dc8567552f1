"""A garbage flood at the AR does not stop a legitimate AUTH (issue 19, defect 5).

The flood bench's namespaces, once for the module: the real Authenticator behind the AR's
nftables pre-filter, a real Peer, and tcpreplay sending spoofed garbage at the access link.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from topologies.lab.floodbench import FloodBench, FloodConfig
from topologies.lab.lab import machine_lock

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def bench() -> Iterator[FloodBench]:
    with machine_lock("flood bench test"):
        running = FloodBench(FloodConfig(pps=20_000, sources=2000, duration_s=3.0,
                                         legit_rate=10.0))
        try:
            running.setup()
            running.start_ar()
            yield running
        finally:
            running.teardown()


def test_legitimate_auths_succeed_without_a_flood(bench: FloodBench) -> None:
    result = bench.baseline()
    assert result["success"] == 1.0, result


def test_garbage_flood_is_dropped_in_the_kernel_and_auths_still_succeed(
        bench: FloodBench) -> None:
    before = bench.counters()
    result = bench.replay_flood("garbage", bench.cfg.pps)
    assert result["flood_started"], result
    # Every legitimate attempt got its AUTH_REPLY (the Peer retries on loss, as an MN does).
    assert result["success"] == 1.0, result
    after = bench.counters()
    assert after["auth_malformed"] - before["auth_malformed"] > bench.cfg.sources
    stats = bench.stop_ar()
    assert stats.get("InternalError", 0) == 0
    assert stats["accepted"] >= 2 * round(bench.cfg.legit_rate * bench.cfg.duration_s)
