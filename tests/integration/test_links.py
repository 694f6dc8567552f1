"""Links with distance in a running lab (issue 16), real daemons: every link of the CN -> MN
path delayed through the mechanism `up` detects (the delay line on this kernel), ping sees
twice the sum of the one-way delays, a handoff keeps ping alive, and a dead delay line shows
in health. One lab for the module (tests/data/distance.yaml)."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest

from topologies import model
from topologies.lab.daemons import LabError, wait_until
from topologies.lab.lab import STATE, Lab

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]
MN1 = "10.64.0.10"  # mn1's address, from ar1's pool
PATH_ONE_WAY_MS = 1 + 2 + 3 + 1  # cn-inet, inet-core1, core1-agg1, agg1-ar1
_RTT = re.compile(r"icmp_seq=(\d+) .*time=([\d.]+) ms")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    topo = model.load(ROOT / "tests" / "data" / "distance.yaml")
    with Lab(topo, ready_timeout=150) as running:
        yield running


def rtts(text: str) -> dict[int, float]:
    return {int(m.group(1)): float(m.group(2)) for m in _RTT.finditer(text)}


def test_the_mechanism_is_detected_and_recorded(lab: Lab) -> None:
    state = json.loads((lab.dir / STATE).read_text())
    assert state["shaping"]["mechanism"] in ("netem", "nfqueue")
    assert lab.shaping.mechanism == state["shaping"]["mechanism"]
    if lab.shaping.mechanism == "nfqueue":
        assert lab.shaping.daemon is not None and lab.shaping.daemon.alive()
        assert any(d["kind"] == "delayline" for d in state["daemons"])
    profile = lab.topo.link_profile()
    assert profile["core1-agg1"] == {"delay_ms": 3.0} and profile["core1-dns"] == {
        "delay_ms": 5.0}


def path_rtts(lab: Lab, dst: str, count: int) -> list[float]:
    """RTTs of `count` pings from the CN to `dst`, once its host route has reached the CN."""
    # Right after bring-up the MN's host route may still be on its way to the CN's side.
    wait_until(lambda: lab.execs["cn"].run(["ping", "-c", "1", "-W", "1", dst]).returncode
               == 0, 30, f"the CN to reach {dst}")
    out = lab.execs["cn"].run(["ping", "-n", "-c", str(count), "-i", "0.05", dst], timeout=30)
    got = list(rtts(out.stdout).values())
    assert len(got) >= count - 5, out.stdout[-500:]
    return got


def test_ping_rtt_is_twice_the_path_delay(lab: Lab) -> None:
    got = path_rtts(lab, MN1, 60)
    p50 = statistics.median(got)
    # The delay is in the path: never less than the links give. Its accuracy (within 1 ms
    # at p50, issue 16) is measured by `flatarch bench links` and the report on a quiet
    # machine; a CPU hog beside this test delays the Python delay line's wake-ups by more.
    assert p50 >= 2 * PATH_ONE_WAY_MS - 0.3, (p50, sorted(got))
    assert p50 <= 2 * PATH_ONE_WAY_MS + 10.0, (p50, sorted(got))


def test_ipv6_takes_the_same_delay(lab: Lab) -> None:
    """mn1's /64 over the same links: the delay line holds IPv6 as it holds IPv4."""
    prefix = lab.topo.mobile("mn1").prefix6
    assert prefix is not None
    got = path_rtts(lab, str(prefix.network_address + 1), 40)
    p50 = statistics.median(got)
    assert 2 * PATH_ONE_WAY_MS - 0.3 <= p50 <= 2 * PATH_ONE_WAY_MS + 10.0, (p50, sorted(got))


def test_a_handoff_keeps_ping_alive_at_distance(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "ping.txt"
    with lab.background("cn", ["ping", "-n", "-i", "0.02", MN1], out):
        wait_until(lambda: len(rtts(out.read_text())) >= 20, 20, "pings before the handoff")
        pings = rtts(out.read_text())
        before, near = max(pings), statistics.median(pings.values())
        rec = lab.handoff("mn1", "ar2")
        assert rec["ok"], rec
        # Until the redirect through ar1 has given way to ar2's own route: 50 answers from
        # 3 s (150 pings) after the handoff on.
        wait_until(lambda: len(settled(out.read_text(), before + 150)) >= 50, 40,
                   "pings answered after the handoff")
    after = statistics.median(settled(out.read_text(), before + 150))
    # ar2 is as far as ar1: the same delay as before the handoff, in the same run. The delay
    # line's absolute accuracy is the bench's (see the test above): in a fresh-clone run that
    # took 25 min instead of 17, the median after the handoff was 15.5 ms, the links' 14.
    assert after >= 2 * PATH_ONE_WAY_MS - 0.3, after
    assert abs(after - near) <= 1.0, (after, near)


def settled(text: str, first: int) -> list[float]:
    return [v for s, v in rtts(text).items() if s > first]


def test_a_dead_delay_line_shows_in_health(lab: Lab) -> None:
    """Last in the module: without its delay line the delayed links carry nothing."""
    d = lab.shaping.daemon
    if d is None:
        pytest.skip("netem does the delay on this kernel: no delay line")
    pid = d.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not d.alive(), 10, "the delay line to die")
    with pytest.raises(LabError, match="delayline"):
        lab._check_daemons()
