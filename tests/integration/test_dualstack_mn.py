"""A dual-stack MN with the real daemons (issue 18, draft 2.2 and 2.3): mn1 holds the first
address of its IPv6 prefix and claims the prefix in every AUTH; the AR checks the AAAA and
the prefix's own PTR, routes the prefix onto the access link and, away from home, announces
it with the IPv4 LOCAL_PREF rule. One lab for the module (Figure 2, mn1 dual-stack).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from agents.contract import access_ifname
from tests.integration.labs import dualstack_mn_lab, events
from topologies.lab.daemons import DeadlineError, vtysh, wait_until
from topologies.lab.lab import Lab

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from dualstack_mn_lab()


def prefix(lab: Lab) -> str:
    return str(lab.topo.mobile("mn1").prefix6)


def address(lab: Lab) -> str:
    p = lab.topo.mobile("mn1").prefix6
    assert p is not None
    return str(p.network_address + 1)


def routes6(lab: Lab, node: str, dst: str) -> list[dict[str, Any]]:
    out = lab.execs[node].check(["ip", "-j", "-6", "route", "show", "exact", dst])
    return list(json.loads(out or "[]"))


def reaches(lab: Lab) -> bool:
    return lab.execs["cn"].run(["ping", "-6", "-c", "1", "-W", "1", address(lab)]).returncode == 0


def why_left(lab: Lab) -> str:
    """Who still announces the /64, and what the ARs involved decided (a failure's report)."""
    lines = []
    for node in ("agg1", "core1"):
        out = vtysh(lab.execs[node], lab.rundir(node), f"show bgp ipv6 unicast {prefix(lab)}")
        lines.append(f"--- {node}:\n{out}")
    for node in ("ar1", "ar2", "ar5"):
        mine = [e for e in events(lab, node) if str(e.get("ev", "")).endswith("6")
                or e.get("prefix") == prefix(lab)]
        lines.append(f"--- {node} events: " + "\n".join(json.dumps(e) for e in mine[-12:]))
    return "\n".join(lines)


def wait_reach(lab: Lab, at: str) -> None:
    try:
        wait_until(lambda: reaches(lab), 20, f"the CN to reach mn1 at {at}")
    except DeadlineError as exc:
        raise AssertionError(f"{exc}\n{why_unreached(lab, at)}") from None


def why_unreached(lab: Lab, at: str) -> str:
    """The kernel's view along the path, and the ARs' decisions (a failure's report)."""
    lines = []
    for node, argv in (("mn1", ["ip", "-6", "addr"]), ("mn1", ["ip", "-6", "route"]),
                       ("mn1", ["ip", "-6", "neigh"]), (at, ["ip", "-6", "neigh"])):
        lines.append(f"--- {node} {' '.join(argv)}:\n{lab.execs[node].run(argv).stdout}")
    for node in ("core1", "core2", "agg1", "agg2", "ar1", at):
        lines.append(f"--- {node} route {prefix(lab)}: {routes6(lab, node, prefix(lab))}")
    return "\n".join(lines) + "\n" + why_left(lab)


def move(lab: Lab, ar: str) -> dict[str, Any]:
    rec = lab.handoff("mn1", ar)
    assert rec["ok"], rec
    return rec


def test_at_home_the_pool_carries_the_prefix(lab: Lab) -> None:
    wait_until(lambda: reaches(lab), 20, "the CN to reach mn1 over IPv6 at home")
    assert routes6(lab, "agg1", prefix(lab)) == []  # no /64: ar1's /56 covers it


def test_the_prefix_is_rerouted_within_and_across_clusters_and_withdrawn_at_home(
        lab: Lab) -> None:
    rec = move(lab, "ar2")  # intra-cluster
    assert prefix(lab) in rec["rerouted"] and rec["not_rerouted"] == []
    wait_until(lambda: bool(routes6(lab, "agg1", prefix(lab))), 10, "agg1 to learn the /64")
    wait_reach(lab, "ar2")
    assert routes6(lab, "core1", prefix(lab)) == []  # confined to the cluster (draft 2.2)
    assert routes6(lab, "ar1", prefix(lab))  # ar1 routes it on to ar2 (BGP, OSPFv3)

    rec = move(lab, "ar5")  # another cluster: the /64 goes through the cores
    assert prefix(lab) in rec["rerouted"]
    wait_until(lambda: bool(routes6(lab, "core1", prefix(lab))), 10, "core1 to learn the /64")
    wait_reach(lab, "ar5")

    move(lab, "ar1")  # home: the /64 is withdrawn everywhere, the pool covers it again
    try:
        wait_until(lambda: not routes6(lab, "core1", prefix(lab))
                   and not routes6(lab, "agg1", prefix(lab)), 15,
                   "no /64 left at agg1 and core1")
    except DeadlineError as exc:
        raise AssertionError(f"{exc}\n{why_left(lab)}") from None
    wait_until(lambda: reaches(lab), 20, "the CN to reach mn1 back home")


def test_the_previous_ar_redirects_the_prefix_into_the_overlay_until_bgp_converged(
        lab: Lab) -> None:
    """The IPv6 fast redirect: after ar1 -> ar2, ar1 moves the /64 from its access link into
    the VXLAN overlay towards ar2 on ar2's AUTH, and removes that route once its BGP points at
    ar2; back home, no /64 route is left but mn1's access route at ar1."""
    p = prefix(lab)
    seen = len(events(lab, "ar1"))
    move(lab, "ar2")

    def ar1_ev(ev: str) -> list[dict[str, Any]]:
        return [e for e in events(lab, "ar1")[seen:] if e.get("ev") == ev
                and (e.get("prefix") == p or p in e.get("prefixes", ()))]

    wait_until(lambda: bool(ar1_ev("redirect6_installed")), 10, "ar1 to install the redirect")
    (installed,) = ar1_ev("redirect6_installed")
    assert installed["to"] == "ar2" and installed["tunnel"] == "vxlan"
    (received,) = ar1_ev("redirect6_received")
    assert received["by"] == "ar2"
    # The access route went in the same step (nothing else detached it before).
    detached = ar1_ev("detached6")
    assert detached and detached[0]["reason"] == "redirected to ar2"
    wait_until(lambda: bool(ar1_ev("redirect6_removed")), 10, "ar1 to remove the redirect")
    assert [e["reason"] for e in ar1_ev("redirect6_removed")] == ["bgp converged"]
    assert not any(r.get("dev") == "vx0" for r in routes6(lab, "ar1", p))
    assert [e["ev"] for e in events(lab, "ar2") if e.get("ev") == "redirect6_acked"]
    wait_reach(lab, "ar2")

    move(lab, "ar1")  # home again: ar2 redirects back, then every /64 route goes

    def clean() -> bool:
        for node in (n.name for n in lab.topo.routers):
            left = routes6(lab, node, p)
            if node == "ar1":  # mn1's access route only
                left = [r for r in left if r.get("dev") != access_ifname("ar1")]
            if left:
                return False
        return True

    try:
        wait_until(clean, 15, "no /64 route left but mn1's access route at ar1")
    except DeadlineError as exc:
        raise AssertionError(f"{exc}\n{why_left(lab)}") from None
    wait_reach(lab, "ar1")
