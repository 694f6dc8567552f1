"""Handoffs in the Figure-2/3 lab with the real daemons (issue: draft 2.2 and 4).

The MN's radio link moves between ARs; its agent authenticates with one UDP message; ARs
announce timestamped /32s through ExaBGP and FRR reflects them. One lab for the module.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.labs import events, figure2_lab, received, status, udp_receiver, udp_stream
from topologies import model
from topologies.lab.daemons import wait_until
from topologies.lab.lab import Lab

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]
MN1 = "10.64.0.10"  # mn1's address, from ar1's pool
MN2 = "10.64.1.10"  # mn2's address, from ar2's pool


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from figure2_lab()


def host_routes(lab: Lab, node: str, address: str) -> list[dict[str, Any]]:
    out = lab.execs[node].check(["ip", "-j", "-4", "route", "show", "exact", f"{address}/32"])
    return list(json.loads(out or "[]"))


def reaches(lab: Lab, address: str) -> bool:
    return lab.execs["cn"].run(["ping", "-c", "1", "-W", "1", address]).returncode == 0


def via_dev(route: dict[str, Any]) -> str:
    return str(route.get("dev", ""))


def move(lab: Lab, mn: str, ar: str) -> dict[str, Any]:
    rec = lab.handoff(mn, ar)
    assert rec["ok"], rec
    return rec


def settle_at(lab: Lab, ar: str, address: str = MN1) -> None:
    """Until the CN reaches the MN and every AR but ``ar`` dropped its serving state."""
    def settled() -> bool:
        others = [a.name for a in lab.topo.by_role(model.Role.AR) if a.name != ar]
        busy = [a for a in others if address in status(lab, a)["mobility"]["attached"]
                or address in status(lab, a)["mobility"]["redirects"]]
        return not busy and reaches(lab, address)

    wait_until(settled, 20, f"{address} settled at {ar}", 0.2)


def test_route_moves_across_clusters_and_home_leaves_no_stale_host_route(lab: Lab) -> None:
    rec = move(lab, "mn1", "ar2")  # intra-cluster
    assert rec["rerouted"] == [f"{MN1}/32"] and rec["not_rerouted"] == []
    settle_at(lab, "ar2")
    wait_until(lambda: any(r.get("gateway") for r in host_routes(lab, "agg1", MN1)), 10,
               "agg1 to learn the /32")
    assert host_routes(lab, "core1", MN1) == []  # confined to the cluster (draft 2.2)

    move(lab, "mn1", "ar5")  # another cluster: the /32 must go through the core
    settle_at(lab, "ar5")
    wait_until(lambda: bool(host_routes(lab, "core1", MN1)), 10, "core1 to learn the /32")
    assert [via_dev(r) for r in host_routes(lab, "ar5", MN1)][0] == "ar5-acc"

    move(lab, "mn1", "ar1")  # home again: no /32 may remain anywhere
    settle_at(lab, "ar1")

    def clean() -> bool:
        for node in lab.topo.routers:
            routes = host_routes(lab, node.name, MN1)
            if node.name == "ar1":
                if [via_dev(r) for r in routes] != ["ar1-acc"]:
                    return False
            elif routes:
                return False
        return all(not status(lab, a.name)["mobility"]["announced"]
                   for a in lab.topo.by_role(model.Role.AR))

    wait_until(clean, 15, "no host route for mn1 but ar1's access route")


def test_redirect_is_installed_then_removed_after_bgp_converges(lab: Lab) -> None:
    move(lab, "mn1", "ar2")
    settle_at(lab, "ar2")
    installed = [e for e in events(lab, "ar1") if e["ev"] == "redirect_installed"]
    removed = [e for e in events(lab, "ar1") if e["ev"] == "redirect_removed"]
    assert installed and removed and removed[-1]["t"] > installed[-1]["t"]
    assert removed[-1]["reason"] == "bgp converged"
    assert status(lab, "ar1")["mobility"]["redirects"] == {}
    assert all(r.get("metric") != 150 for r in host_routes(lab, "ar1", MN1))
    move(lab, "mn1", "ar1")
    settle_at(lab, "ar1")


SAME_SECOND_TRIES = 5  # a busy machine can stretch the pair of moves over a second boundary


def test_same_second_handoffs_keep_newest_wins(lab: Lab) -> None:
    """Two handoffs inside one second: LOCAL_PREF is max(now, highest seen + 1)."""
    ar7 = str(lab.topo.node("ar7").loopback)

    def heard() -> bool:
        paths = status(lab, "ar8")["rib_host_routes"].get(f"{MN1}/32", [])
        return any(nh == ar7 for nh, _ in paths)

    for _ in range(SAME_SECOND_TRIES):
        wait_until(lambda: time.time() % 1.0 < 0.05, 2, "the start of a second", 0.005)
        move(lab, "mn1", "ar7")  # cluster k4 shares agg1 with k1: ar8 hears ar7's route at once
        wait_until(heard, 10, "ar8 to hear ar7's /32", 0.01)
        move(lab, "mn1", "ar8")
        ann7 = [e for e in events(lab, "ar7") if e["ev"] == "announced"][-1]
        ann8 = [e for e in events(lab, "ar8") if e["ev"] == "announced"][-1]
        assert ann8["local_pref"] > ann7["local_pref"]  # newest wins, whatever the timing
        if int(ann8["t"]) == int(ann7["t"]):
            break
        # The moves straddled a second: not the case under test. Home, and again.
        move(lab, "mn1", "ar1")
        settle_at(lab, "ar1")
    else:
        pytest.fail(f"no two announcements within one second in {SAME_SECOND_TRIES} tries")
    assert ann8["local_pref"] == ann7["local_pref"] + 1
    settle_at(lab, "ar8")
    # Every router that holds the /32 forwards toward ar8, none toward ar7.
    ar8_links = {i.address for i in lab.topo.node("ar8").interfaces}
    for agg in ("agg1", "agg4"):
        routes = host_routes(lab, agg, MN1)
        gateways = {h.get("gateway") for r in routes for h in [r, *r.get("nexthops", [])]}
        assert gateways - {None} <= {str(a) for a in ar8_links}, (agg, routes)
    move(lab, "mn1", "ar1")
    settle_at(lab, "ar1")


def _auth_from(lab: Lab, node: str, code: str) -> dict[str, Any]:
    res = lab.execs[node].run([sys.executable, "-c", code], timeout=30)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


REFUSAL = r'''
import asyncio, json, ipaddress
from agents.auth import KeyStore, Peer, StaticDirectory
from agents.mn import load_key_list
rd = "{rundir}"
ks = KeyStore.from_pem("mn2.example", open(rd + "/identity.pem", "rb").read())
peer = Peer(ks, StaticDirectory(load_key_list(__import__("pathlib").Path(rd + "/ar_keys.json"))))
async def main():
    s = await peer.authenticate(("169.254.0.1", 7411), "ar2.isp.test",
        ["{own}/32", "{other}/32", "192.0.2.1/32"], local_addr=("{own}", 0))
    print(json.dumps({{"rerouted": [str(p) for p in s.rerouted],
                      "not": [str(p) for p in s.not_rerouted]}}))
asyncio.run(main())
'''


def test_refused_addresses_are_named_and_never_announced(lab: Lab) -> None:
    got = _auth_from(lab, "mn2", REFUSAL.format(rundir=lab.rundir("mn2"), own=MN2, other=MN1))
    assert got["rerouted"] == [f"{MN2}/32"]
    assert sorted(got["not"]) == sorted([f"{MN1}/32", "192.0.2.1/32"])
    checked = [e for e in events(lab, "ar2") if e["ev"] == "checked"][-1]
    assert "PTR" in checked["refused"][MN1] or "not among" in checked["refused"][MN1]
    assert "outside" in checked["refused"]["192.0.2.1"]
    assert MN1 not in status(lab, "ar2")["mobility"]["announced"]


FORGED = r'''
import asyncio, json
from agents.auth import AuthError, KeyStore, Peer, StaticDirectory
from agents.mn import load_key_list
from pathlib import Path
keys = load_key_list(Path("{keys}"))
forger = KeyStore.generate("ar2.isp.test")  # ar2's name, not ar2's key
async def main():
    try:
        await Peer(forger, StaticDirectory(keys)).authenticate(
            ("{ar1}", 7411), "ar1.isp.test", ["{mn1}/32"], timeout=0.3, retries=1)
        print(json.dumps({{"accepted": True}}))
    except AuthError as exc:
        print(json.dumps({{"accepted": False, "error": type(exc).__name__}}))
asyncio.run(main())
'''


def test_forged_redirect_is_refused(lab: Lab) -> None:
    before = status(lab, "ar1")["auth"].get("BadMac", 0)
    got = _auth_from(lab, "ar3", FORGED.format(keys=lab.rundir("mn1") / "ar_keys.json",
                                                ar1=lab.topo.node("ar1").loopback, mn1=MN1))
    assert got["accepted"] is False
    wait_until(lambda: status(lab, "ar1")["auth"].get("BadMac", 0) > before, 5,
               "ar1 to count the bad MAC")
    assert status(lab, "ar1")["mobility"]["redirects"] == {}
    assert [via_dev(r) for r in host_routes(lab, "ar1", MN1)] == ["ar1-acc"]


def test_spoofed_source_is_dropped_at_the_access_router(lab: Lab) -> None:
    mn1 = lab.execs["mn1"]
    counter = ["nft", "-j", "list", "counter", "ip", "flatarch", "spoofed"]

    def dropped() -> int:
        doc = json.loads(lab.execs["ar1"].check(counter))
        return int(next(o["counter"]["packets"] for o in doc["nftables"] if "counter" in o))

    before = dropped()
    wait_until(lambda: reaches(lab, MN1), 10, "the real address to pass")
    mn1.check(["ip", "addr", "add", f"{MN2}/32", "dev", "mn1-eth0"])  # mn2's address
    try:
        res = mn1.run(["ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", MN2,
                       str(lab.topo.service("cn").interfaces[0].address)])
        assert res.returncode != 0
    finally:
        mn1.check(["ip", "addr", "del", f"{MN2}/32", "dev", "mn1-eth0"])
    assert dropped() >= before + 3


# --- idle mode (draft 4) --------------------------------------------------------------------

@pytest.fixture()
def receiver(lab: Lab) -> Iterator[Path]:
    with udp_receiver(lab, "mn1", lab.dir / "idle-recv.txt") as out:
        yield out


def _stream(lab: Lab, first: int, count: int) -> None:
    udp_stream(lab, MN1, first, count)


def test_idle_mn_is_paged_two_ars_away_and_gets_its_packets_in_order(
        lab: Lab, receiver: Path) -> None:
    ctl = lab.control("mn1")
    answer = ctl.request({"cmd": "idle"})
    assert answer["ok"] and answer["tal"] == ["ar1", "ar2", "ar3"]
    assert lab.handoff("mn1", "ar2")["authenticated"] is False  # idle: no signalling
    assert lab.handoff("mn1", "ar3")["authenticated"] is False
    bound = json.loads((lab.rundir("ar1") / "agent.json").read_text())["paging"]["buffer"]
    count = 40
    assert count < bound
    _stream(lab, 1000, count)
    wait_until(lambda: len(received(receiver, 1000)) >= count, 10, "every packet", 0.05)
    seqs = received(receiver, 1000)
    assert seqs == list(range(1000, 1000 + count))  # nothing lost, nothing reordered
    flushed = [e for e in events(lab, "ar1") if e["ev"] == "flushed"][-1]
    assert flushed["buffered"] >= 1 and flushed["dropped"] == 0
    assert flushed["reason"] == "redirected to ar3"
    assert ctl.request({"cmd": "status"})["ar"] == "ar3"
    move(lab, "mn1", "ar1")
    settle_at(lab, "ar1")


def test_unanswered_page_ends_and_frees_its_buffer(lab: Lab, receiver: Path) -> None:
    ctl = lab.control("mn1")
    assert ctl.request({"cmd": "idle"})["ok"]
    ctl.request({"cmd": "deaf", "on": True})  # switched off: it will not answer
    try:
        _stream(lab, 2000, 10)

        def timed_out() -> bool:
            return any(e["ev"] == "page_timeout" for e in events(lab, "ar1")
                       if e["t"] > time.time() - 30)

        wait_until(timed_out, 10, "the page to time out", 0.1)

        def freed() -> bool:  # the status file is rewritten every half second
            idle = status(lab, "ar1")["mobility"]["idle"][MN1]
            return bool(idle["buffered"] == 0 and idle["dropped"] >= 10 and not idle["paging"])

        wait_until(freed, 5, "ar1 to report the buffer freed", 0.1)
        assert received(receiver, 2000) == []
    finally:
        ctl.request({"cmd": "deaf", "on": False})
    _stream(lab, 3000, 1)  # a new packet pages again, and this time it is answered
    wait_until(lambda: received(receiver, 3000) == [3000], 10, "the MN to wake", 0.05)
    settle_at(lab, "ar1")


def test_idle_mn_leaving_its_tal_authenticates_at_the_first_ar_outside(lab: Lab) -> None:
    ctl = lab.control("mn1")
    assert ctl.request({"cmd": "idle"})["ok"]  # at ar1: the list is ar1, ar2, ar3
    assert lab.handoff("mn1", "ar2")["authenticated"] is False
    rec = lab.handoff("mn1", "ar5")  # outside the list
    assert rec["authenticated"] is True and rec["rerouted"] == [f"{MN1}/32"]
    assert ctl.request({"cmd": "status"})["idle"] is False
    settle_at(lab, "ar5")
    wait_until(lambda: MN1 not in status(lab, "ar1")["mobility"]["idle"], 5,
               "the last AR to let go", 0.1)
    move(lab, "mn1", "ar1")
    settle_at(lab, "ar1")
