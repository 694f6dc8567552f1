"""A prefix the AR refused is bound at the Home Agent (issue 18, draft 4), with the real
daemons: mn3 (DHCP, so it has a Home Agent) dual-stack; the visited AR refuses its /64, the
HA checks it as an AR does, announces it and tunnels it over VXLAN to mn3, and a later
re-route by an AR makes the HA withdraw it everywhere. Then mn3 leaves the AS: its Binding
Update from the visited network binds its /64 too. One lab for the module.

The refusal must be the visited AR's own: ar1's reverse zone served unsigned (test_ra.py's
set-up) would make the HA refuse too, through the same resolver. Here ar5 alone cannot get
the prefix's PTR: its path to the resolver rejects reverse IPv6 lookups of a /64's name
(an nft rule in ar5 answering them with ICMP port unreachable), so ar5 refuses the /64 with
a DNS failure while the /32 it re-routes passes.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from ipaddress import IPv6Address, IPv6Network
from typing import Any

import pytest
import yaml

from agents.dns import prefix_reverse_name
from tests.integration.labs import ROOT, events, mn_request
from topologies import model
from topologies.lab.daemons import vtysh, wait_until
from topologies.lab.lab import Lab
from topologies.model import Role
from topologies.render.configs import daemons_for, render

pytestmark = pytest.mark.root
MN, HOME, VISITED = "mn3", "ar3", "ar5"
NFT_TABLE = "fa_test_ha6"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    doc = copy.deepcopy(yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text()))
    doc["addressing"]["ipv6"]["mobiles"] = [MN]
    with Lab(model.build(doc), ready_timeout=120) as running:
        running.set_mode("redirect")
        wait_until(lambda: bool(mn_request(running, MN, "status")["addresses"]), 30,
                   f"{MN} to hold a DHCP address")
        mn_request(running, MN, "prepare_ha")
        yield running


def prefix(lab: Lab) -> IPv6Network:
    p = lab.topo.mobile(MN).prefix6
    assert p is not None
    return p


def address6(lab: Lab) -> str:
    return str(prefix(lab).network_address + 1)


def ha6(lab: Lab) -> IPv6Address:
    bb = lab.topo.backbone6
    assert bb is not None
    ha = lab.topo.service("ha")
    return bb.end(ha.name, ha.interfaces[0].peer).ip


def ha_status(lab: Lab) -> dict[str, Any]:
    return dict(json.loads((lab.rundir("ha") / "agent.status.json").read_text()))


def bgp_next_hops(lab: Lab, node: str) -> set[str]:
    out = vtysh(lab.execs[node], lab.rundir(node), f"show bgp ipv6 unicast {prefix(lab)} json")
    doc = json.loads(out or "{}")
    return {nh["ip"] for p in doc.get("paths", []) for nh in p.get("nexthops", [])
            if "ip" in nh}


def routes6(lab: Lab, node: str) -> list[dict[str, Any]]:
    out = lab.execs[node].check(["ip", "-j", "-6", "route", "show", "exact", str(prefix(lab))])
    return list(json.loads(out or "[]"))


def reaches(lab: Lab) -> bool:
    return lab.execs["cn"].run(["ping", "-6", "-c", "1", "-W", "1", address6(lab)]
                               ).returncode == 0


def tunnel_tx(lab: Lab) -> int:
    """Packets the HA sent into its tunnels (hat*), the IPv6 ones to mn3 among them."""
    out = lab.execs["ha"].check(["ip", "-j", "-s", "link", "show", "type", "vxlan"])
    return sum(int(d["stats64"]["tx"]["packets"]) for d in json.loads(out or "[]")
               if d["ifname"].startswith("hat"))


def refuse_reverse6_at(lab: Lab, ar: str) -> None:
    """``ar``'s resolver path answers every query for a /64's reverse name with ICMP port
    unreachable (configs/bench/dns-refuse-reverse6.nft.j2)."""
    cfg = json.loads((lab.rundir(ar) / "agent.json").read_text())
    rules = render("bench/dns-refuse-reverse6.nft.j2", {
        "table": NFT_TABLE, "resolver": cfg["resolver"], "port": cfg["resolver_port"]})
    path = lab.dir / "test-ha6" / f"{ar}.nft"
    path.parent.mkdir(exist_ok=True)
    path.write_text(rules)
    lab.execs[ar].check(["nft", "-f", str(path)])


def test_a_prefix_the_visited_ar_refused_is_bound_at_the_home_agent(lab: Lab) -> None:
    p = prefix(lab)
    assert len(prefix_reverse_name(p).rstrip(".").split(".")) == 16 + 2  # the rule's offset
    assert ha_status(lab)["tunnel"]["kind"] == "vxlan"
    refuse_reverse6_at(lab, VISITED)
    try:
        rec = lab.handoff(MN, VISITED)
        assert rec["ok"], rec
        assert rec["not_rerouted"] == [str(p)], rec
        lease = mn_request(lab, MN, "status")["address"]
        assert rec["rerouted"] == [f"{lease}/32"], rec
        wait_until(lambda: any(e["ev"] == "prefix_bound" for e in events(lab, MN)), 10,
                   f"{MN} to bind the refused /64 at its HA")
        bound = [e for e in events(lab, MN) if e["ev"] == "prefix_bound"][-1]
        assert bound["prefixes"] == [str(p)] and bound["by"] == "ra"
        assert bound["care_of"] == lease and bound["tunnel"] == "vxlan"
        assert mn_request(lab, MN, "status")["bound6"] == [str(p)]
        refused = [e for e in events(lab, VISITED) if e["ev"] == "checked6"][-1]
        assert refused["accepted"] == [] and "DNS" in refused["refused"][str(p)]
        # The HA accepted it through the same checks, announced it, and routes it into
        # the tunnel to the care-of address.
        checked = [e for e in events(lab, "ha") if e["ev"] == "checked6"][-1]
        assert checked["accepted"] == [str(p)], checked
        wait_until(lambda: str(p) in ha_status(lab)["bound6"]
                   and ha_status(lab)["tunnel"]["care_of6"] == {str(p): lease}, 10,
                   "the HA's status to show the IPv6 binding")
        wait_until(lambda: str(ha6(lab)) in bgp_next_hops(lab, "core1"), 10,
                   "core1 to hear the /64 from the HA")
        route = lab.execs["ha"].check(["ip", "-6", "route", "get", address6(lab)])
        assert " dev hat" in route, route
        before = tunnel_tx(lab)
        wait_until(lambda: reaches(lab), 20, "the CN to reach mn3's IPv6 address via the HA")
        assert tunnel_tx(lab) > before  # the echo went into the tunnel
    finally:
        lab.execs[VISITED].run(["nft", "delete", "table", "inet", NFT_TABLE])
    # A later re-route by an AR (home, with a newer LOCAL_PREF): the HA withdraws and
    # removes its route, and the home AR withdraws in turn once nothing else is left.
    back = lab.handoff(MN, HOME)
    assert back["ok"] and str(p) in back["rerouted"], back
    wait_until(lambda: ha_status(lab)["bound6"] == {}
               and ha_status(lab)["tunnel"]["care_of6"] == {}
               and ha_status(lab)["tunnel"]["devices"] == {}, 15, "the HA to drop the /64")
    assert any(e["ev"] == "withdrawn6" and e["prefix"] == str(p) for e in events(lab, "ha"))
    assert any(e["ev"] == "prefix_debound" for e in events(lab, MN))
    bgpd = [n.name for n in lab.topo.nodes.values() if "bgpd" in daemons_for(n, lab.topo)]
    wait_until(lambda: all(str(ha6(lab)) not in bgp_next_hops(lab, n) for n in bgpd), 15,
               "the HA's /64 gone at every BGP router")
    wait_until(lambda: not any(routes6(lab, n) for n in bgpd), 15, "no /64 left at them")
    # Nor at any AR but home (its access route), nor at the HA.
    others = [n.name for n in lab.topo.by_role(Role.AR) if n.name != HOME]
    wait_until(lambda: not any(routes6(lab, n) for n in [*others, "ha"]), 15,
               "no /64 left at the other ARs and the HA")
    wait_until(lambda: reaches(lab), 20, "the CN to reach mn3 at home")
    _figures(lab)


def test_leaving_the_as_takes_the_64_to_the_home_agent_and_returning_brings_it_back(
        lab: Lab) -> None:
    # Outside the AS no AR routes mn3's /64: its Binding Update from the visited network
    # binds it with its IPv4 address, and the CN reaches it through the HA's tunnel.
    p = prefix(lab)
    rec = lab.handoff(MN, "inet")
    assert rec["ok"] and rec["tunnel"] == "vxlan", rec
    assert str(p) in rec["rerouted"], rec
    wait_until(lambda: str(p) in ha_status(lab)["bound6"]
               and ha_status(lab)["tunnel"]["care_of6"] == {str(p): rec["care_of"]}, 10,
               "the HA to bind the /64 to the care-of address")
    wait_until(lambda: str(ha6(lab)) in bgp_next_hops(lab, "core1"), 10,
               "core1 to hear the /64 from the HA")
    before = tunnel_tx(lab)
    wait_until(lambda: reaches(lab), 20, "the CN to reach mn3's IPv6 address outside the AS")
    assert tunnel_tx(lab) > before
    # Home again: the home AR's newer route makes the HA withdraw, as for a refused prefix.
    back = lab.handoff(MN, HOME)
    assert back["ok"] and str(p) in back["rerouted"], back
    wait_until(lambda: ha_status(lab)["bound6"] == {}
               and ha_status(lab)["tunnel"]["devices"] == {}, 15, "the HA to drop the /64")
    bgpd = [n.name for n in lab.topo.nodes.values() if "bgpd" in daemons_for(n, lab.topo)]
    wait_until(lambda: all(str(ha6(lab)) not in bgp_next_hops(lab, n) for n in bgpd), 15,
               "the HA's /64 gone at every BGP router")
    wait_until(lambda: reaches(lab), 20, "the CN to reach mn3 at home")


def _figures(lab: Lab) -> None:
    """Where the binding's time goes, from the agents' event clocks (one lab host, so one
    clock): printed and written beside the lab for the report, never asserted."""
    mn, ha = events(lab, MN), events(lab, "ha")
    attached = [e for e in mn if e["ev"] == "attached" and e["ar"] == VISITED][-1]
    ra_judged = [e for e in mn if e["ev"] == "ra_received" and e["ar"] == VISITED][-1]
    bound = [e for e in mn if e["ev"] == "prefix_bound"][-1]
    bu = [e for e in ha if e["ev"] == "binding_update" and e.get("prefixes")][-1]
    announced = [e for e in ha if e["ev"] == "announced6"][-1]
    withdrawn = [e for e in ha if e["ev"] == "withdrawn6"][-1]
    home = [e for e in mn if e["ev"] == "attached" and e["ar"] == HOME][-1]
    out = {"tunnel": bound["tunnel"],
           "auth_reply_to_ra_judged_ms": round((ra_judged["t"] - attached["t"]) * 1000, 1),
           "ra_judged_to_bound_ms": round((bound["t"] - ra_judged["t"]) * 1000, 1),
           "bu_received_to_announced_ms": round((announced["t"] - bu["t"]) * 1000, 1),
           "home_auth_to_ha_withdrawn_ms": round((withdrawn["t"] - home["t"]) * 1000, 1)}
    (lab.dir / "test-ha6" / "figures.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out))
