"""The dual-stack backbone (issue 18): IPv6 numbering from the plan, the per-family render
data, the health record, and an IPv4-only topology untouched."""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents import contract
from agents import exabgp_api as api
from topologies import model
from topologies.lab.health import FamilyHealth, Health
from topologies.model import Role, TopologyError
from topologies.render import configs as render

ROOT = Path(__file__).resolve().parents[2]


def doc(v6: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    d = copy.deepcopy(yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text()))
    d["addressing"]["ipv6"].update(v6 or {})
    for key in drop:
        del d["addressing"]["ipv6"][key]
    return dict(d)


def test_ipv6_numbering_follows_ipv4() -> None:
    t = model.build(doc())
    bb = t.backbone6
    assert bb is not None
    lo_base = ipaddress.IPv4Address("10.255.0.0")
    for r in t.routers:
        assert r.loopback is not None
        offset = int(r.loopback) - int(lo_base)
        assert int(bb.loopback(r.name)) - int(ipaddress.IPv6Address("2001:db8:ff::")) == offset
    nets = set()
    for lk in t.links:
        a, b = bb.end(lk.a, lk.b), bb.end(lk.b, lk.a)
        assert a.network == b.network and a.network.prefixlen == 64
        assert (int(a.ip) & 0xF, int(b.ip) & 0xF) == (1, 2)
        nets.add(a.network)
    assert len(nets) == len(t.links)  # one /64 per link
    assert bb.owners()[str(bb.loopback("ar1"))] == "ar1"
    with pytest.raises(TopologyError, match="no IPv6 link between ar1 and ar8"):
        bb.end("ar1", "ar8")


def test_without_the_backbone_blocks_the_lab_stays_ipv4() -> None:
    t = model.build(doc(drop=("loopbacks", "links")))
    assert t.plan6 is not None and t.backbone6 is None
    assert "ospf6d" not in render.daemons_for(t.node("agg1"), t)
    assert render.bgpd_data(t, t.node("agg1"))["ipv6"] is None
    agent = render.agent_data(t, t.node("ar1"), Path("/run/x/ar1"))
    assert agent.ipv6 is None and '"ipv6"' not in agent.to_json()


@pytest.mark.parametrize(("v6", "message"), [
    ({"links": "2001:db8:4000::/48"}, r"addressing.ipv6.links .* overlaps addressing.ipv6"),
    ({"loopbacks": "10.255.0.0/24"}, r"is not an IPv6 network"),
    ({"links": "2001:db8:fe00::/63"}, r"links 2001:db8:fe00::/63 ran out: no /64 left"),
])
def test_a_bad_backbone_block_is_refused(v6: dict[str, Any], message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        model.build(doc(v6))


def test_ipv6_policy_mirrors_ipv4() -> None:
    t = model.build(doc())
    agg = render.bgpd_data(t, t.node("agg1"))["ipv6"]
    assert agg["aggregates"] == ["2001:db8:4000::/44", "2001:db8:4030::/44"]
    (own,) = agg["prefix_lists"]
    assert own["name"] == "OWN-MORE-SPECIFICS6"
    assert [(e["prefix"], e["ge"], e["le"]) for e in own["entries"]] == [
        ("2001:db8:4000::/44", 45, 128), ("2001:db8:4030::/44", 45, 128)]
    core = render.bgpd_data(t, t.node("core1"))["ipv6"]
    (out,) = core["prefix_lists"]
    assert [(e["action"], e["prefix"], e["le"]) for e in out["entries"]] == [
        ("permit", "2001:db8:4000::/40", 44), ("permit", core["networks"][0], 0),
        ("deny", "::/0", 128)]
    inet = render.bgpd_data(t, t.node("inet"))["ipv6"]
    assert inet["networks"] == [str(t.backbone6.end("cn", "inet").network)]  # type: ignore[union-attr]
    assert "ospf6d" in render.daemons_for(t.node("ar1"), t)


def test_the_ar_agent_gets_its_ipv6_side() -> None:
    t = model.build(doc())
    ar1 = t.node("ar1")
    cfg = render.agent_data(t, ar1, Path("/run/x/ar1"))
    assert cfg.ipv6 is not None and cfg.ipv6.pool == ar1.pool6
    assert str(cfg.ipv6.loopback) == "2001:db8:ff::7" and cfg.ipv6.mn_prefixlen == 64
    again = contract.ArAgentConfig.from_json(json.loads(cfg.to_json()))
    assert again == cfg
    line = api.announce(cfg.ipv6.pool, next_hop=cfg.ipv6.loopback)
    assert line == "announce route 2001:db8:4000::/56 next-hop 2001:db8:ff::7"
    assert api.announce(ipaddress.IPv4Network("10.64.0.0/24")) == \
        "announce route 10.64.0.0/24 next-hop self"


def test_health_record_adds_ipv6_only_on_a_dual_stack_backbone() -> None:
    assert "ipv6" not in Health(nodes=1).as_json()
    h = Health(nodes=1, bgp_established=2, bgp_total=2, pools_ok=1, pools_total=1,
               ipv6=FamilyHealth(bgp_established=1, bgp_total=2, pools_ok=1, pools_total=1))
    rec = h.as_json()
    assert rec["ipv6"] == {"bgp_sessions": {"established": 1, "total": 2}, "ospf_full": True,
                           "ospf_adjacencies": {"full": 0, "expected": 0},
                           "pools_reachable": {"ok": 1, "total": 1},
                           "core_more_specifics": []}
    assert not h.converged and not h.healthy and h.reachable
    assert "IPv6 BGP sessions established" in h.table()
    h.ipv6 = FamilyHealth(bgp_established=2, bgp_total=2, pools_total=1)
    assert h.converged and not h.reachable and not h.healthy


def test_every_ar_has_an_ipv6_pool_address_inside_its_pool() -> None:
    t = model.build(doc())
    for ar in t.by_role(Role.AR):
        data = render.ip6_data(t, ar)
        assert ar.pool6 is not None
        assert ipaddress.IPv6Address(data["pool6_gateway"]) in ar.pool6


def update6(announce: dict[str, list[dict[str, Any]]], withdraw: list[dict[str, Any]],
            lp: int = 100, v4: dict[str, list[str]] | None = None) -> str:
    upd: dict[str, Any] = {"attribute": {"origin": "igp", "local-preference": lp},
                           "announce": {"ipv6 unicast": announce}}
    if v4:
        upd["announce"]["ipv4 unicast"] = {nh: [{"nlri": p} for p in ps] for nh, ps in v4.items()}
    if withdraw:
        upd["withdraw"] = {"ipv6 unicast": withdraw}
    return json.dumps({"type": "update", "neighbor": {
        "address": {"local": "10.255.0.7", "peer": "10.255.0.3"}, "message": {"update": upd}}})


def test_exabgp_updates_are_read_in_both_families() -> None:
    line = update6({"2001:db8:ff::8": [{"nlri": "2001:db8:4000:100::/56",
                                        "path-information": "0.0.0.1"}]},
                   [{"nlri": "2001:db8:4000:3::/64", "path-information": "0.0.0.2"}],
                   lp=1795812671, v4={"10.255.0.8": ["10.64.1.0/24"]})
    ev = api.parse_line(line)
    assert isinstance(ev, api.Update)
    assert api.Route(ipaddress.IPv6Network("2001:db8:4000:100::/56"),
                     ipaddress.IPv6Address("2001:db8:ff::8"), 1795812671, "0.0.0.1") \
        in ev.announced
    assert api.Route(ipaddress.IPv4Network("10.64.1.0/24"), ipaddress.IPv4Address("10.255.0.8"),
                     1795812671) in ev.announced
    assert ev.withdrawn == [ipaddress.IPv6Network("2001:db8:4000:3::/64")]
    assert ev.withdrawn_ids == ["0.0.0.2"]


@pytest.mark.parametrize("announce", [
    {"10.255.0.8": [{"nlri": "2001:db8:4000:100::/56"}]},  # an IPv4 next hop in IPv6
    {"2001:db8:ff::8": [{"nlri": "10.64.1.0/24"}]},  # an IPv4 prefix in IPv6
    {"2001:db8:ff::8": [{"nlri": "2001:db8:4000:100::1/56"}]},  # host bits set
    {"2001:db8:ff::8": [{"nlri": 7}]},
    {"2001:db8:ff::8": "2001:db8::/32"},
])
def test_a_malformed_ipv6_update_raises_a_typed_error(announce: dict[str, Any]) -> None:
    with pytest.raises(api.ApiError):
        api.parse_line(update6(announce, []))


def test_mutated_ipv6_updates_never_escape_the_typed_errors() -> None:
    """A small fuzz of the IPv6 branch: random octet flips of a valid line parse or raise
    ApiError/ValueError (JSON), nothing else."""
    import random

    base = update6({"2001:db8:ff::8": [{"nlri": "2001:db8:4000:100::/56"}]},
                   [{"nlri": "2001:db8:4000:3::/64"}]).encode()
    rng = random.Random(18)
    for _ in range(3000):
        buf = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] = rng.randrange(32, 127)
        with contextlib.suppress(ValueError):
            api.parse_line(buf.decode())


def test_the_rib_orders_ipv6_paths_by_local_pref_like_ipv4() -> None:
    from agents.fib import Rib

    rib = Rib()
    p = ipaddress.IPv6Network("2001:db8:4000:1::/64")
    old = api.Route(p, ipaddress.IPv6Address("2001:db8:ff::7"), 100)
    new = api.Route(p, ipaddress.IPv6Address("2001:db8:ff::9"), 200)
    assert rib.update("a", [old], []) == {p}
    rib.update("b", [new], [])
    assert rib.best(p) == new
    rib.update("b", [], [p])
    assert rib.best(p) == old


def test_ipv6_route_messages_round_trip_and_refuse_mixed_families() -> None:
    import socket
    import struct

    from agents import netlink

    body = netlink.route_message(dst=ipaddress.IPv6Network("2001:db8:4000:100::/56"), oif=3,
                                 gateway=ipaddress.IPv6Address("fe80::1"), proto=250,
                                 priority=200)
    family, dst_len = struct.unpack_from("=BB", body)
    assert (family, dst_len) == (socket.AF_INET6, 56)
    info = netlink.parse_route(body)
    assert info.oif == 3 and info.gateway == ipaddress.IPv6Address("fe80::1")
    with pytest.raises(netlink.NetlinkError, match="another family"):
        netlink.route_message(dst=ipaddress.IPv6Network("2001:db8::/32"),
                              gateway=ipaddress.IPv4Address("10.0.0.1"))
    short = body[:12] + netlink.attr(netlink.RTA_GATEWAY, b"\x01\x02\x03\x04")
    with pytest.raises(netlink.NetlinkError, match="short gateway"):
        netlink.parse_route(short)


def test_nibble_names_follow_ip6_arpa() -> None:
    from topologies.lab.dnsplane6 import nibble_name

    host = ipaddress.IPv6Network("2001:db8:4000:1::1/128")
    assert nibble_name(host) == host.network_address.reverse_pointer + "."
    assert nibble_name(ipaddress.IPv6Network("2001:db8:4000:100::/56")) == \
        "1.0.0.0.0.4.8.b.d.0.1.0.0.2.ip6.arpa."
    from agents.dns import DnsRecordError

    with pytest.raises(DnsRecordError, match="not on a nibble boundary"):
        nibble_name(ipaddress.IPv6Network("2001:db8:4000::/58"))


def test_dual_stack_dns_has_aaaa_and_a_ptr_per_assigned_prefix() -> None:
    from topologies.lab.dnsplane6 import nibble_name, reverse_zones

    t = model.build(doc())
    rev = reverse_zones(t, ["mn1", "mn2", "mn3"])
    assert rev is not None and rev.parent == "0.4.8.b.d.0.1.0.0.2.ip6.arpa."
    by_ar = {pz.ar: pz for pz in rev.pools}
    assert sorted(by_ar) == [f"ar{i}" for i in range(1, 9)]
    mn1 = t.mobile("mn1").prefix6
    assert mn1 is not None
    assert (nibble_name(mn1), "mn1") in by_ar["ar1"].ptrs  # the containing prefix's PTR
    assert by_ar["ar1"].ptrs[0] == (nibble_name(ipaddress.IPv6Network("2001:db8:4000::/64")),
                                    "ar1")
    assert all(p.name.endswith(rev.parent) for p in rev.pools)
    assert reverse_zones(model.build(doc(drop=("loopbacks", "links"))), ["mn1"]) is None


def test_unbound_readiness_reads_long_ip6_arpa_owners() -> None:
    """dig separates an owner of 40 characters or more by a space, not a tab."""
    import subprocess

    from tests.unit.test_dns_plane import plane

    pl = plane()
    long_zone = "0.0.0.0.0.4.8.b.d.0.1.0.0.2.ip6.arpa."
    out = (";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1\n"
           ";; flags: qr rd ra ad; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1\n"
           f";{long_zone} IN SOA\n"
           ";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 2\n"
           ";; flags: qr rd ra ad; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1\n"
           ";isp.test.\t\t\tIN\tSOA\n"
           ";; ->>HEADER<<- opcode: QUERY, status: SERVFAIL, id: 3\n"
           ";; flags: qr rd ra; QUERY: 1, ANSWER: 0, AUTHORITY: 0, ADDITIONAL: 1\n"
           ";example.\t\t\tIN\tSOA\n")

    class Exec:
        def run(self, argv: list[str], timeout: float = 0) -> subprocess.CompletedProcess[str]:
            return subprocess.CompletedProcess(argv, 0, out, "")

    assert pl.validated_zones(Exec()) == {long_zone, "isp.test."}  # type: ignore[arg-type]


def test_the_source_filter_takes_ipv6_prefixes_into_the_ip6_table() -> None:
    from agents import nft

    class Recorder:
        def __init__(self) -> None:
            self.commands: list[str] = []

        def run(self, command: str) -> str:
            self.commands.append(command)
            return ""

    rec = Recorder()
    f = nft.SourceFilter(rec)  # type: ignore[arg-type]
    p = ipaddress.IPv6Network("2001:db8:4000:1::/64")
    f.allow("ar2-acc", p)
    f.allow("ar2-acc", ipaddress.IPv4Address("10.64.0.10"))
    f.revoke_address(p)
    assert rec.commands == [
        'add element ip6 flatarch6 mn_sources { "ar2-acc" . 2001:db8:4000:1::/64 }',
        'add element ip flatarch mn_sources { "ar2-acc" . 10.64.0.10 }',
        'delete element ip6 flatarch6 mn_sources { "ar2-acc" . 2001:db8:4000:1::/64 }']
    with pytest.raises(nft.NftError, match="bad interface name"):
        f.allow('x" ; flush ruleset', p)
