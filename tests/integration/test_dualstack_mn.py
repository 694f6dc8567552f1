"""A dual-stack MN with the real daemons (issue 18, draft 2.2 and 2.3): mn1 holds the first
address of its IPv6 prefix and claims the prefix in every AUTH; the AR checks the AAAA and
the prefix's own PTR, routes the prefix onto the access link and, away from home, announces
it with the IPv4 LOCAL_PREF rule. The AR's DHCPv6 server delegates a /64 to a station that
proves its session. One lab for the module (Figure 2, mn1 dual-stack).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.contract import Layout, access_ifname
from agents.dns import prefix_reverse_name
from tests.integration.labs import (
    dualstack_mn_lab,
    events,
    mn_request,
    received,
    status,
    udp_receiver,
    udp_stream,
)
from topologies.lab import inject
from topologies.lab.daemons import DeadlineError, vtysh, wait_until
from topologies.lab.lab import Lab
from topologies.model import fqdn

ROOT = Path(__file__).resolve().parents[2]
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
    tunnel = status(lab, "ar1")["redirect_tunnel"]
    assert installed["to"] == "ar2" and installed["tunnel"] == tunnel["kind"]
    # SRv6 where the kernel has seg6 lightweight tunnels; VXLAN, with the kernel's reason,
    # where it has not (this machine's).
    assert tunnel["kind"] == "srv6" and tunnel["srv6"] == "in use" or \
        tunnel["kind"] == "vxlan" and tunnel["srv6"].startswith("unavailable"), tunnel
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


# --- idle mode for the /64 (draft 4, issue 18) ------------------------------------------------

@pytest.fixture()
def receiver(lab: Lab) -> Iterator[Path]:
    with udp_receiver(lab, "mn1", lab.dir / "idle6-recv.txt") as out:
        yield out


def stream6(lab: Lab, first: int, count: int) -> None:
    udp_stream(lab, address(lab), first, count)


def ar_events6(lab: Lab, node: str, ev: str, since: int) -> list[dict[str, Any]]:
    return [e for e in events(lab, node)[since:]
            if e.get("ev") == ev and e.get("family") == "ipv6"]


def back_home(lab: Lab) -> None:
    move(lab, "ar1")
    wait_until(lambda: not routes6(lab, "agg1", prefix(lab)), 15, "no /64 left at agg1")
    wait_reach(lab, "ar1")


def test_an_idle_mns_64_is_paged_two_ars_away_and_its_packets_follow_in_order(
        lab: Lab, receiver: Path) -> None:
    """mn1 goes idle at ar1 and moves to ar3 without signalling; the CN's IPv6 datagrams
    wait in ar1's paging buffer, ar1 pages the list, mn1 answers at ar3, and the buffer goes
    through the overlay with ar3's redirect of the /64: every datagram, in order."""
    seen = len(events(lab, "ar1"))
    answer = mn_request(lab, "mn1", "idle")
    assert answer["tal"] == ["ar1", "ar2", "ar3"] and prefix(lab) in answer["rerouted"]
    wait_until(lambda: prefix(lab) in status(lab, "ar1")["prefixes"]["idle"], 5,
               "ar1 to park the /64")
    assert lab.handoff("mn1", "ar2")["authenticated"] is False  # idle: no signalling
    assert lab.handoff("mn1", "ar3")["authenticated"] is False
    count = 40
    stream6(lab, 1000, count)
    try:
        wait_until(lambda: len(received(receiver, 1000)) >= count, 10, "every datagram", 0.05)
    except DeadlineError as exc:
        raise AssertionError(f"{exc}: got {received(receiver, 1000)}\n"
                             f"{ar_events6(lab, 'ar1', 'flushed', seen)}") from None
    assert received(receiver, 1000) == list(range(1000, 1000 + count))
    (start,) = ar_events6(lab, "ar1", "page_start", seen)
    assert start["addr"] == prefix(lab) and start["tal"] == ["ar1", "ar2", "ar3"]
    (flushed,) = ar_events6(lab, "ar1", "flushed", seen)
    assert flushed["buffered"] >= 1 and flushed["dropped"] == 0
    assert flushed["reason"] == "redirected to ar3"
    assert mn_request(lab, "mn1", "status")["ar"] == "ar3"
    wait_reach(lab, "ar3")
    back_home(lab)


def test_an_unanswered_ipv6_page_ends_and_a_later_packet_pages_again(
        lab: Lab, receiver: Path) -> None:
    seen = len(events(lab, "ar1"))
    mn_request(lab, "mn1", "idle")
    mn_request(lab, "mn1", "deaf", on=True)  # switched off: it answers no page
    try:
        stream6(lab, 2000, 10)
        wait_until(lambda: bool(ar_events6(lab, "ar1", "page_timeout", seen)), 10,
                   "the page to time out", 0.1)
        (timeout,) = ar_events6(lab, "ar1", "page_timeout", seen)
        assert timeout["freed"] == 10 and timeout["addr"] == prefix(lab)
        assert received(receiver, 2000) == []
    finally:
        mn_request(lab, "mn1", "deaf", on=False)
    stream6(lab, 3000, 1)  # pages again, and this time mn1 answers where it went idle
    wait_until(lambda: received(receiver, 3000) == [3000], 10, "mn1 to wake", 0.05)
    # The AR logs the flush after it has sent the buffer on: the packet can arrive first
    # (CI s4 read the events in between).
    wait_until(lambda: bool(ar_events6(lab, "ar1", "flushed", seen)), 5,
               "ar1 to log the flush", 0.05)
    flushed = ar_events6(lab, "ar1", "flushed", seen)
    assert [f["reason"] for f in flushed] == ["paged MN authenticated here"]
    wait_until(lambda: prefix(lab) not in status(lab, "ar1")["prefixes"]["idle"], 5,
               "ar1 to report the /64 awake")
    assert routes6(lab, "agg1", prefix(lab)) == []  # home: the pool still covers it


def test_a_restarted_ar_agent_recovers_the_64_it_announced_and_withdraws_it_later(
        lab: Lab) -> None:
    """ar2's agent is killed while mn1's /64 is attached there and announced (issues 18,
    20): its successor brings back the attachment and the announcement from the saved state
    (agents/arstate.py attached6, announced6); when mn1 moves home, it withdraws the /64 as
    the killed agent would have. Without them it would never learn it had announced it."""
    p = prefix(lab)
    move(lab, "ar2")
    wait_until(lambda: bool(routes6(lab, "agg1", p)), 10, "agg1 to learn the /64")
    wait_until(lambda: p in status(lab, "ar2")["prefixes"]["announced"], 5,
               "ar2's status to show the /64 announced")
    inject.kill_agent(lab, "ar2")

    def recovered() -> dict[str, Any]:
        return dict(status(lab, "ar2")["recovery"])

    wait_until(lambda: recovered().get("state") == "recovered", 15, "ar2's agent to recover")
    rec = recovered()
    assert rec["attached6"] == 1 and rec["announced6"] == 1 and rec["withdrawn6"] == 0, rec
    now = status(lab, "ar2")["prefixes"]
    assert now["attached"] == {p: fqdn("mn", "mn1")} and p in now["announced"]
    wait_reach(lab, "ar2")
    move(lab, "ar1")
    try:
        wait_until(lambda: not routes6(lab, "agg1", p) and not routes6(lab, "core1", p)
                   and not [r for r in routes6(lab, "ar2", p)], 15,
                   "the restarted ar2 to withdraw the /64 and drop its access route")
    except DeadlineError as exc:
        raise AssertionError(f"{exc}\n{why_left(lab)}") from None
    wait_reach(lab, "ar1")


def test_a_restarted_ar_agent_keeps_serving_the_64s_it_delegated(lab: Lab) -> None:
    """ar3's agent is killed while mn3 holds a /64 it delegated: the new agent brings the
    binding back (agents/arstate.py bindings6) with the /64's attachment, and mn3's next
    renewal is answered as before: its dhclient never notices."""
    mn, ar = "mn3", "ar3"
    wait_until(lambda: bool(mn_request(lab, mn, "status")["prefixes6"]), 20,
               f"{mn}'s delegated /64")
    (p,) = mn_request(lab, mn, "status")["prefixes6"]
    inject.kill_agent(lab, ar)
    wait_until(lambda: status(lab, ar)["recovery"].get("state") == "recovered", 15,
               f"{ar}'s agent to recover")
    rec = status(lab, ar)["recovery"]
    assert rec["bindings6"] == 1 and rec["attached6"] == 1, rec
    assert [b["prefix"] for b in status(lab, ar)["dhcp6"]["bindings"]] == [p]
    seen = len(events(lab, mn))
    wait_until(lambda: any(e.get("ev") == "delegation_renewed" and e.get("prefix") == p
                           for e in events(lab, mn)[seen:]), 25,
               f"{mn}'s renewal of {p} answered by the restarted {ar}")
    assert p in mn_request(lab, mn, "status")["prefixes6"]
    assert not any(e.get("ev") == "delegation_lost" for e in events(lab, mn)[seen:])


DHCLIENT_HOOK = """#!/bin/sh
echo "$reason $new_ip6_prefix $old_ip6_prefix" >> {log}
"""


def test_the_ar_delegates_a_64_by_dhcpv6_only_to_a_station_that_proves_its_session(
        lab: Lab, tmp_path: Path) -> None:
    """Debian's ``dhclient -6 -P`` on mn2 against its home AR's agent (agents/ardhcp6.py):
    the DUID carries the session proof the MN agent computes; the AR delegates a /64 of its
    pool's DHCPv6 quarter, routes it onto the access link and writes its PTR, which the
    validating resolver then answers; the release takes the route and the PTR away."""
    mn = "mn2"
    ar = lab.topo.mobile(mn).home
    mn_request(lab, mn, "attach", ar=ar)  # a fresh session here (an earlier test moved MNs)
    duid = bytes.fromhex(mn_request(lab, mn, "dhcp6_duid", serial=1)["duid"])
    lease, pid, log, hook = (tmp_path / "dhclient6.leases", tmp_path / "dhclient6.pid",
                             tmp_path / "hook.log", tmp_path / "hook.sh")
    lease.write_text('default-duid "' + "".join(f"\\{b:03o}" for b in duid) + '";\n')
    hook.write_text(DHCLIENT_HOOK.format(log=log))
    hook.chmod(0o755)
    log.touch()
    common = ["dhclient", "-6", "-P", "-v", "-lf", str(lease), "-pf", str(pid),
              "-sf", str(hook)]
    ifname = f"{mn}-eth0"
    ex = lab.execs[mn]

    def bindings() -> list[dict[str, Any]]:
        return list(status(lab, ar)["dhcp6"]["bindings"])

    try:
        # One try (-1); bound, dhclient goes to the background with its pid file.
        done = ex.run([*common, "-1", ifname], timeout=30)
        assert done.returncode == 0, done.stderr[-2000:]
        bound = [line.split() for line in log.read_text().splitlines()
                 if line.startswith("BOUND6")]
        assert bound, log.read_text()
        prefix = ipaddress.IPv6Network(bound[0][1])
        pool = lab.topo.node(ar).pool6
        assert pool is not None and prefix.subnet_of(pool) and prefix.prefixlen == 64
        assert lab.topo.dhcp6_range(ar) == (192, 255)
        assert int(prefix.network_address) - int(pool.network_address) >> 64 >= 192
        wait_until(lambda: [b["mn"] for b in bindings() if b["prefix"] == str(prefix)]
                   == [fqdn("mn", mn)], 5, f"{ar} to report the delegation")
        wait_until(lambda: any(r.get("dev") == access_ifname(ar)
                               for r in routes6(lab, ar, str(prefix))),
                   5, f"{ar}'s route for {prefix} on its access link")
        wait_until(lambda: ptr_of(lab, ar, prefix) == fqdn("mn", mn) + ".", 10,
                   f"the validated PTR of {prefix}")
    finally:
        # The release, and dhclient stopped by its pid file (dhclient -r does both).
        ex.run([*common, "-r", ifname], timeout=30)
    assert any(line.startswith("RELEASE6") for line in log.read_text().splitlines())
    wait_until(lambda: not routes6(lab, ar, str(prefix)), 5, f"{ar} to drop {prefix}")

    def ends() -> list[str]:
        return [e["ev"] for e in events(lab, ar) if e.get("prefix") == str(prefix)
                and e.get("ev") in ("delegation_ended", "ptr_deleted")]

    wait_until(lambda: "ptr_deleted" in ends(), 10, f"{ar} to delete the PTR of {prefix}")
    assert ends() == ["delegation_ended", "ptr_deleted"], ends()
    wait_until(lambda: all(b["prefix"] != str(prefix) for b in bindings()), 5,
               f"{ar}'s status to drop the binding")
    assert not pid.exists() or not Path(f"/proc/{pid.read_text().strip()}").exists()


def ptr_of(lab: Lab, ar: str, prefix: ipaddress.IPv6Network) -> str:
    """The PTR on a /64's own ip6.arpa name, as the lab's validating resolver answers the
    AR (which checks it at the MN's next handoff)."""
    assert lab.dns is not None
    out = lab.execs[ar].run(["dig", "+short", "+time=2", "+tries=1",
                             f"@{lab.dns.resolver_address}", "PTR",
                             prefix_reverse_name(prefix)])
    return out.stdout.strip()


def prefixes6(lab: Lab, mn: str) -> list[str]:
    return list(mn_request(lab, mn, "status")["prefixes6"])


def pings6(lab: Lab, prefix: str) -> bool:
    target = str(ipaddress.IPv6Network(prefix).network_address + 1)
    return lab.execs["cn"].run(["ping", "-6", "-c", "1", "-W", "1", target]).returncode == 0


def aaaa_of(lab: Lab, ar: str, mn: str) -> list[str]:
    assert lab.dns is not None
    out = lab.execs[ar].run(["dig", "+short", "+time=2", "+tries=1",
                             f"@{lab.dns.resolver_address}", "AAAA", fqdn("mn", mn)])
    return out.stdout.split()


def why_not_renewed(lab: Lab, mn: str, ars: tuple[str, ...]) -> str:
    """A failed renewal's report: the MN's DHCPv6 events and its clients' last lines, and
    what each AR's DHCPv6 server counted and logged."""
    mine = [e for e in events(lab, mn) if "dhcp6" in str(e.get("ev")) or "deleg" in
            str(e.get("ev")) or e.get("ev") == "attached"]
    lines = ["--- " + mn + " events:", *(json.dumps(e) for e in mine[-12:])]
    for log in sorted(lab.rundir(mn).glob("dhclient6-*.log")):
        lines += [f"--- {log.name}:", *log.read_text(errors="replace").splitlines()[-25:]]
    for ar in ars:
        six = status(lab, ar)["dhcp6"]
        lines.append(f"--- {ar} DHCPv6 counters {six['counters']} relayed {six['remote_id_seen']}")
        text = (lab.rundir(ar) / Layout.AGENT_LOG).read_text(errors="replace").splitlines()
        lines += [x for x in text if "DHCPv6" in x or "relay" in x][-12:]
    return "\n".join(lines)


def no_route_left(lab: Lab, prefix: str) -> bool:
    return all(not routes6(lab, r.name, prefix) for r in lab.topo.routers)


def test_a_dhcpv6_mn_keeps_its_64_across_a_handoff_renews_it_by_relay_rotates_and_releases(
        lab: Lab) -> None:
    """mn3's agent runs Debian's dhclient -6 -P itself (agents/delegations.py): its home AR
    delegates a /64, whose address the MN holds and writes as its AAAA; the MN claims the
    /64 in its next AUTH and the visited AR re-routes it; dhclient, started again with the
    new session's proof, renews it through the visited AR, which relays it with the
    Remote-ID naming mn3; a rotation takes a /64 of the visited AR, the old one is released
    as soon as no connection uses it, and no route for either is left once released."""
    mn, home, away = "mn3", lab.topo.mobile("mn3").home, "ar4"
    assert home == "ar3"
    wait_until(lambda: bool(prefixes6(lab, mn)), 20, f"{mn}'s first delegation")
    (first,) = prefixes6(lab, mn)
    pool3, pool4 = lab.topo.node(home).pool6, lab.topo.node(away).pool6
    assert pool3 is not None and pool4 is not None
    assert ipaddress.IPv6Network(first).subnet_of(pool3)
    address = str(ipaddress.IPv6Network(first).network_address + 1)
    wait_until(lambda: address in aaaa_of(lab, home, mn), 10, f"{mn}'s AAAA {address}")
    wait_until(lambda: ptr_of(lab, home, ipaddress.IPv6Network(first)) == fqdn("mn", mn) + ".",
               10, f"the PTR of {first}")
    wait_until(lambda: pings6(lab, first), 20, f"the CN to reach {address} at home")

    rec = lab.handoff(mn, away)
    assert rec["ok"], rec
    assert first in rec["rerouted"] and rec["not_rerouted"] == [], rec
    wait_until(lambda: pings6(lab, first), 20, f"the CN to reach {address} at {away}")

    # The renewal: dhclient again with the new proof, its Rebind relayed by ar4 to ar3.
    assert lab.topo.backbone6 is not None
    relay = str(lab.topo.backbone6.loopback(away))

    def relayed() -> list[dict[str, Any]]:
        return [r for r in status(lab, home)["dhcp6"]["remote_id_seen"]
                if r["relay"] == relay and r["remote_id"] == fqdn("mn", mn)]

    try:
        wait_until(lambda: bool(relayed()), 25, f"{home} to renew {first} relayed by {away}")
    except DeadlineError as exc:
        raise AssertionError(f"{exc}\n{why_not_renewed(lab, mn, (home, away))}") from None
    wait_until(lambda: any(e.get("ev") == "delegation_renewed" and e.get("prefix") == first
                           for e in events(lab, mn)), 10, f"{mn} to see the renewal")
    assert any(e.get("ev") == "dhcp6_restarted" for e in events(lab, mn))
    assert [b["prefix"] for b in status(lab, home)["dhcp6"]["bindings"]] == [first]
    assert pings6(lab, first)

    # Rotation (draft 2.3): a /64 of the AR we are on, newest first; the old one, used by
    # no connection, is released through the relay, and its owner ends it.
    rot = mn_request(lab, mn, "rotate", family="ipv6")
    second = rot["prefix6"]
    assert ipaddress.IPv6Network(second).subnet_of(pool4) and rot["prefixes6"][0] == second
    wait_until(lambda: prefixes6(lab, mn) == [second], 15, f"{mn} to release {first}")
    wait_until(lambda: all(b["prefix"] != first for b in status(lab, home)["dhcp6"]["bindings"]),
               10, f"{home} to end {first}")
    wait_until(lambda: no_route_left(lab, first), 15, f"no route for {first} left")
    wait_until(lambda: pings6(lab, second), 20, f"the CN to reach {second}")
    wait_until(lambda: aaaa_of(lab, away, mn)
               == [str(ipaddress.IPv6Network(second).network_address + 1)], 10,
               f"{mn}'s AAAA set to be the new /64's address alone")

    mn_request(lab, mn, "release", address=second)
    assert prefixes6(lab, mn) == []
    wait_until(lambda: not status(lab, away)["dhcp6"]["bindings"], 10, f"{away} to end {second}")
    wait_until(lambda: no_route_left(lab, second), 15, f"no route for {second} left")


# --- faults and a soak in both families (issue 18: --family on every scenario) -------------

def test_faults_keep_the_64s_sessions_and_leave_no_stale_64(lab: Lab, tmp_path: Path) -> None:
    from topologies.scenarios.faults import FaultsScenario

    result = FaultsScenario(lab, kinds=("exabgp_ar", "agent_ar"), out_dir=tmp_path,
                            families=["ipv4", "ipv6"]).run()
    for f in result["faults"]:
        v6 = f["by_family"]["ipv6"]
        assert v6["sessions_total"] == 2 and v6["sessions_survived"] == 2, f
        assert (v6["stale_routes_after"], v6["missing_routes_after"]) == (0, 0), f
        assert f["by_family"]["ipv4"]["sessions_survived"] == 4, f
        assert f["handoffs_failed"] == 0 and f["recovered_s"] is not None, f


def test_a_short_soak_in_both_families_fails_nothing_and_leaves_no_stale_route(
        lab: Lab, tmp_path: Path) -> None:
    from topologies.scenarios.soak import SoakScenario

    result = SoakScenario(lab, minutes=0.5, rate=1.0, out_dir=tmp_path,
                          families=["ipv4", "ipv6"]).run()
    assert result["handoffs"] >= 20 and result["failed"] == 0, result["errors"]
    assert (result["stale_routes_end"], result["missing_routes_end"]) == (0, 0)
    six = result["ipv6"]
    assert (six["stale_routes_end"], six["missing_routes_end"]) == (0, 0)
    assert six["reroute_ms"]["p99"] is not None


def test_a_walk_in_both_families_keeps_a_tcp_stream_on_each(lab: Lab, tmp_path: Path) -> None:
    """`scenario handoff --family both`: the /64 carries its own iperf3 stream through the
    same handoffs as the IPv4 address's, and both survive; each handoff has an IPv6 record
    on a shortest path with no core UPDATE for a move inside a cluster."""
    from topologies.scenarios.handoff import HandoffScenario

    result = HandoffScenario(lab, mn="mn1", modes=("redirect",), per_mode=4, period_s=2.0,
                             out_dir=tmp_path, families=["ipv4", "ipv6"]).run()
    for key in ("iperf", "iperf6"):
        assert result[key]["survived"] is True, result[key]
    six = [h for h in result["handoffs"] if h["family"] == "ipv6"]
    assert len(six) == len(result["handoffs"]) // 2 >= 4
    assert all(h["path_optimal"] for h in six), [h["path"] for h in six]
    assert all(h["core_updates"] == 0 for h in six if h["kind"] == "intra-cluster"), six
    assert "CN->MN's /64: survived=True" in HandoffScenario.table(result)


def test_the_dual_stack_walk_experiment_passes_every_check_in_each_family(
        lab: Lab, tmp_path: Path) -> None:
    """`flatarch run topologies/experiments/dual-stack-walk.yaml`, in this lab: a ping and
    a TCP stream to mn1's address and to its /64 through three handoffs; reachability, the
    path and the stale routes checked in each family; the run directory analyses offline
    to the same result."""
    from topologies.scenarios import declared, experiment

    path = ROOT / "topologies" / "experiments" / "dual-stack-walk.yaml"
    text = path.read_text()
    result = declared.DeclaredExperiment(
        lab, experiment.parse(text, str(path), path.parent), text, out_dir=tmp_path).run()
    assert result["failed"] == [], declared.table(result)
    assert {c["family"] for c in result["checks"]} == {"ipv4", "ipv6"}
    for family in ("ipv4", "ipv6"):
        moves = [h for h in result["handoffs"] if h["family"] == family]
        assert [h["to"] for h in moves] == ["ar2", "ar3", "ar1"]
        assert all(h["interruption_ms"] is not None for h in moves), moves
        stream = next(i for i in result["iperf"] if i["family"] == family)
        assert stream["survived"], stream
    again = declared.DeclaredExperiment.analysed(tmp_path)
    assert json.dumps(again, sort_keys=True, default=str) == json.dumps(
        result, sort_keys=True, default=str)
