"""The address plan: every block declared once, overlaps and exhaustion refused at load with
a reason that names the blocks, and a unique address for every MN whatever the counts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from topologies import model
from topologies.model import TopologyError
from topologies.model.plan import AddressPlan

ROOT = Path(__file__).resolve().parents[2]


def doc(name: str = "figure2.yaml") -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "topologies" / name).read_text()))


def with_mobiles(d: dict[str, Any], n: int) -> dict[str, Any]:
    d = copy.deepcopy(d)
    d["mobiles"] = [f"m{i}" for i in range(n)]
    d["dhcp"] = {"mobiles": [], "lease_s": 20}
    return d


def all_addresses(t: model.Topology) -> list[str]:
    out = [str(n.loopback) for n in t.routers]
    out += [str(i.address) for n in t.nodes.values() for i in n.interfaces]
    out += [str(n.pool_gateway) for n in t.by_role(model.Role.AR)]
    for mn in t.mobiles:
        m = t.mobile(mn)
        out += [str(a) for a in (m.address, m.link_local, m.anchored) if a is not None]
    out += [str(a) for a in t.overlay.values()]
    return out


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    # inside another range: both blocks named
    ("addressing", "services", "10.254.1.0/24",
     r"addressing.services 10.254.1.0/24 overlaps addressing.links 10.254.0.0/22"),
    ("internet", "cn_subnet", "10.70.0.0/24",
     r"internet.cn_subnet .* overlaps addressing.managed"),
    # on one of the lab's own blocks
    ("internet", "outside_subnet", "169.254.64.0/24",
     r"mn-link-local 169.254.64.0/18 overlaps internet.outside_subnet"),
    ("addressing", "links", "10.254.0.1/22", r"addressing.links: 10.254.0.1/22 has host bits"),
    # too small: the block that ran out, and for what
    ("addressing", "links", "10.254.0.0/28",
     r"addressing.links 10.254.0.0/28 ran out: no /31 left for link .* after 8"),
    ("addressing", "managed", "10.64.0.0/15",
     r"addressing.managed 10.64.0.0/15 ran out: no /16 left for cluster k3"),
])
def test_a_bad_plan_is_refused_naming_the_blocks(section: str, key: str, value: str,
                                                 message: str) -> None:
    d = doc()
    d[section][key] = value
    with pytest.raises(TopologyError, match=message):
        model.build(d)


def test_a_full_pool_names_the_ar_and_its_range() -> None:
    # 8 ARs with /24 pools hold 145 provisioned MNs each outside the DHCP range .100-.199.
    model.build(with_mobiles(doc(), 8 * 145))
    with pytest.raises(TopologyError, match=r"pool of ar1 10.64.0.0/24 ran out: no address "
                                            r"left for m1160"):
        model.build(with_mobiles(doc(), 8 * 145 + 1))


def test_a_thousand_mobiles_get_distinct_addresses_and_none_collides() -> None:
    t = model.build(with_mobiles(doc(), 1000))
    mns = [t.mobile(m) for m in t.mobiles]
    assert len({m.address for m in mns}) == 1000
    assert len({m.link_local for m in mns}) == 1000
    assert len({m.anchored for m in mns}) == 1000
    addrs = all_addresses(t)
    assert len(addrs) == len(set(addrs))
    for m in mns:
        assert m.address is not None and m.address in t.node(m.home).pool  # type: ignore[operator]
        off = int(m.address) - int(t.node(m.home).pool.network_address)  # type: ignore[union-attr]
        assert not t.dhcp.first <= off <= t.dhcp.last, "inside the DHCP range"


def test_more_mobiles_than_ars_in_uneven_clusters() -> None:
    t = model.load(ROOT / "topologies" / "uneven.yaml")
    assert [len(c.ars) for c in t.clusters] == [1, 3, 7]
    assert len(t.mobiles) == 12 and len(t.by_role(model.Role.AR)) == 11
    assert t.mobile("mn1").address != t.mobile("mn12").address  # both homed on ar1
    assert t.mobile("mn1").home == t.mobile("mn12").home == "ar1"
    addrs = all_addresses(t)
    assert len(addrs) == len(set(addrs))


def test_the_first_mobiles_keep_their_addresses() -> None:
    # The figures of earlier runs name these addresses: the plan keeps them.
    t = model.load(ROOT / "topologies" / "figure2.yaml")
    assert str(t.mobile("mn1").address) == "10.64.0.10"
    assert str(t.mobile("mn2").address) == "10.64.1.10"
    assert t.mobile("mn3").address is None and t.mobile("mn3").dhcp


def test_plan_is_generic_over_the_family() -> None:
    # IPv6 is a second instance of the same plan (nibble-boundary rules come with it).
    plan = AddressPlan(6)
    plan.declare("managed", "2001:db8:100::/40")
    plan.declare("cluster k1", "2001:db8:100::/44", inside="managed")
    pools = plan.allocator("cluster k1")
    assert str(pools.subnet(56, "ar1")) == "2001:db8:100::/56"
    with pytest.raises(TopologyError, match="overlaps managed"):
        plan.declare("links", "2001:db8:100:ff::/64")
    with pytest.raises(TopologyError, match="is not an IPv6 network"):
        plan.declare("cn", "198.51.100.0/24")


def with_ipv6(d: dict[str, Any], **v6: Any) -> dict[str, Any]:
    d = copy.deepcopy(d)
    d["addressing"]["ipv6"] = {"managed": "2001:db8:100::/40", **v6}
    return d


def test_ipv6_plan_gives_true_prefixes_on_nibble_boundaries() -> None:
    t = model.build(with_mobiles(with_ipv6(doc()), 1000))
    assert t.plan6 is not None
    assert [str(c.prefix6) for c in t.clusters] == [
        "2001:db8:100::/44", "2001:db8:110::/44", "2001:db8:120::/44", "2001:db8:130::/44"]
    ar1, ar2 = t.node("ar1"), t.node("ar2")
    assert str(ar1.pool6) == "2001:db8:100::/56" and str(ar2.pool6) == "2001:db8:100:100::/56"
    prefixes = [t.mobile(m).prefix6 for m in t.mobiles]
    assert len(set(prefixes)) == 1000
    assert all(p is not None and p.prefixlen == 64 for p in prefixes)
    m0 = t.mobile("m0")
    assert str(m0.prefix6) == "2001:db8:100:1::/64"  # the first /64 of ar1's pool is ar1's
    assert m0.prefix6 is not None and ar1.pool6 is not None
    assert m0.prefix6.subnet_of(ar1.pool6)


def test_dhcpv6_delegates_the_top_quarter_of_a_pool_above_every_planned_prefix() -> None:
    """No DHCPv6 delegation may collide with a named or population MN's planned /64: the
    server's range starts above the highest one, and an AR they fill has none."""
    t = model.build(with_mobiles(with_ipv6(doc()), 9))  # one /64 per AR: index 1
    assert t.dhcp6_range("ar1") == (192, 255)

    def population(count: int) -> model.Topology:
        d = with_ipv6(doc())
        d["addressing"]["pool_prefixlen"] = 22  # IPv4 room for the crowd
        d["population"] = {"count": count, "home": "weights", "weights": {"ar1": 1}}
        return model.build(d)

    # ar1 holds its named MN (1) and the crowd (2-200), then 1-255: none left.
    assert population(199).dhcp6_range("ar1") == (201, 255)
    assert population(254).dhcp6_range("ar1") is None
    assert population(254).dhcp6_range("ar2") == (192, 255)


def test_dhcp_ipv6_names_dhcp_mns_on_a_dual_stack_backbone_without_a_planned_prefix() -> None:
    """dhcp.ipv6: the DHCP MNs that take their /64s by DHCPv6; each refusal says why."""
    d = doc()
    d["dhcp"]["ipv6"] = ["mn3"]
    t = model.build(d)
    assert t.dhcp6_mobiles == ["mn3"]
    d["dhcp"]["ipv6"] = ["mn1"]
    with pytest.raises(TopologyError, match=r"dhcp.ipv6: mn1 not listed under dhcp.mobiles"):
        model.build(d)
    d["dhcp"]["ipv6"] = ["mn3"]
    d["addressing"]["ipv6"]["mobiles"] = ["mn3"]
    with pytest.raises(TopologyError, match=r"mn3 already hold a planned prefix"):
        model.build(d)
    d["addressing"]["ipv6"]["mobiles"] = []
    for key in ("loopbacks", "links"):
        del d["addressing"]["ipv6"][key]
    with pytest.raises(TopologyError, match=r"DHCPv6 needs a dual-stack backbone"):
        model.build(d)


@pytest.mark.parametrize(("v6", "message"), [
    ({"pool_prefixlen": 58}, r"pool_prefixlen: /58 is not on a nibble boundary"),
    ({"managed": "2001:db8:100::/42"}, r"managed: /42 is not on a nibble boundary"),
    ({"mn_prefixlen": 72}, r"need managed <= cluster_prefixlen < .* <= mn_prefixlen <= 64"),
    ({"managed": "10.96.0.0/12"}, r"is not an IPv6 network"),
    ({"poolsize": 56}, r"unknown key 'poolsize'"),
    ({"cluster_prefixlen": 40}, r"ran out: no /40 left for cluster k2"),
])
def test_a_bad_ipv6_plan_is_refused_with_the_reason(v6: dict[str, Any], message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        model.build(with_ipv6(doc(), **v6))
