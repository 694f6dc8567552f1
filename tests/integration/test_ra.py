"""The Router Advertisement after a handoff (draft 4, agents/ra.py) with the real daemons: the
RA is captured on mn1's access link and parsed; it lists exactly the prefix the new AR
re-routed, and nothing when the AR refused it, which mn1 then records as needing its Home
Agent. One lab for the module (Figure 2, mn1 dual-stack).
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv6Address, IPv6Network
from typing import Any

import dns.zone
import pytest

from agents import ra
from agents.dns import prefix_reverse_name
from tests.integration.labs import dualstack_mn_lab, events, mn_request, strip_dnssec
from topologies.lab.capture import Capture, CaptureSpec
from topologies.lab.daemons import wait_until
from topologies.lab.lab import Lab

pytestmark = pytest.mark.root
RA_FILTER = "icmp6 and ip6[40] == 134"  # no extension headers: the ICMPv6 type's octet


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from dualstack_mn_lab()


def prefix(lab: Lab) -> IPv6Network:
    p = lab.topo.mobile("mn1").prefix6
    assert p is not None
    return p


def judged(lab: Lab) -> int:
    return int(mn_request(lab, "mn1", "status")["ra"]["judged"])


def handoff_with_capture(lab: Lab, ar: str, name: str
                         ) -> tuple[dict[str, Any], list[tuple[Any, ra.RouterAdvert]]]:
    """Move mn1 to ``ar`` while capturing RAs on its interface; (its record, each RA's
    IPv6 header and parse), once mn1 has judged the RA."""
    pcap = lab.dir / "test-ra" / f"{name}.pcap"
    pcap.parent.mkdir(exist_ok=True)
    before = judged(lab)
    with Capture.in_lab(lab, CaptureSpec("mn1", "mn1-eth0"), pcap, RA_FILTER):
        rec = lab.handoff("mn1", ar)
        assert rec["ok"], rec
        wait_until(lambda: judged(lab) > before, 10, f"mn1 to judge the RA from {ar}")
    from scapy.layers.inet6 import IPv6
    from scapy.utils import rdpcap

    out = []
    for pkt in rdpcap(str(pcap)):
        ip6 = pkt[IPv6]
        out.append((ip6, ra.RouterAdvert.unpack(bytes(ip6.payload), IPv6Address(ip6.src),
                                                IPv6Address(ip6.dst))))  # checksum too
    return rec, out


def mn_link_local(lab: Lab) -> IPv6Address:
    mac = lab.execs["mn1"].check(["cat", "/sys/class/net/mn1-eth0/address"]).strip()
    return ra.mac_link_local(bytes.fromhex(mac.replace(":", "")))


def test_the_ra_after_a_handoff_lists_exactly_the_rerouted_prefix(lab: Lab) -> None:
    rec, adverts = handoff_with_capture(lab, "ar2", "rerouted")
    assert set(rec["rerouted"]) == {f"{lab.topo.mobile('mn1').address}/32", str(prefix(lab))}
    [(ip6, advert)] = adverts  # one RA, unicast to mn1, from the anycast gateway
    assert ip6.hlim == 255
    assert IPv6Address(ip6.src) == ra.ROUTER_LINK_LOCAL
    assert IPv6Address(ip6.dst) == mn_link_local(lab)
    assert advert.listed() == [prefix(lab)]
    assert advert.router_lifetime_s == 0 and not advert.prefixes[0].autonomous
    status = mn_request(lab, "mn1", "status")
    assert status["ra"]["last"]["listed"] == [str(prefix(lab))]
    assert status["ra"]["last"]["refused"] == [] and status["refused6"] == []
    sent = [e for e in events(lab, "ar2") if e["ev"] == "ra_sent"]
    assert sent and sent[-1]["prefixes"] == [str(prefix(lab))]


def _snapshot(lab: Lab, zone: str) -> dns.zone.Zone:
    assert lab.dns is not None
    dns_node = lab.execs[lab.topo.service("dns").name]
    out = dns_node.check(["dig", "@127.0.0.1", "-p", str(lab.dns.update_port), "+onesoa",
                          zone, "AXFR"])
    return dns.zone.from_text(out, origin=zone, relativize=False)


def test_a_prefix_the_ar_refused_is_left_out_and_recorded_for_the_home_agent(lab: Lab) -> None:
    """ar1's reverse zone served unsigned: the prefix's PTR no longer validates, so ar5
    refuses the prefix (and re-routes the /32); its RA lists nothing."""
    plane = lab.dns
    assert plane is not None
    pool6 = lab.topo.nodes["ar1"].pool6
    assert pool6 is not None
    zone = prefix_reverse_name(pool6)
    dns_node = lab.execs[lab.topo.service("dns").name]
    tampered = _snapshot(lab, zone)
    strip_dnssec(tampered)
    plane.serve_verbatim(zone, tampered.to_text(relativize=False))
    try:
        plane.restart_named(dns_node)
        plane.flush(zone)
        rec, adverts = handoff_with_capture(lab, "ar5", "refused")
        assert rec["not_rerouted"] == [str(prefix(lab))]
        [(ip6, advert)] = adverts
        assert ip6.hlim == 255 and advert.listed() == []
        status = mn_request(lab, "mn1", "status")
        assert status["refused6"] == [str(prefix(lab))]
        unbound = [e for e in events(lab, "mn1") if e["ev"] == "prefix_unbound"]
        assert unbound and unbound[-1]["prefixes"] == [str(prefix(lab))]
        assert unbound[-1]["by"] == "ra"
    finally:
        plane.serve_verbatim(zone, None)
        plane.restart_named(dns_node)
        plane.flush(zone)
    rec, adverts = handoff_with_capture(lab, "ar1", "home")  # home: re-routed again
    assert [a.listed() for _, a in adverts] == [[prefix(lab)]]
    assert mn_request(lab, "mn1", "status")["refused6"] == []
