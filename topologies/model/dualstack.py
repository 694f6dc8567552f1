"""IPv6 on the backbone (issue 18): a /128 loopback per router and a /64 per link, from the
IPv6 plan's infrastructure blocks, numbered like IPv4 (the k-th loopback and the k-th link
of the topology are the k-th in both families), so that the two plans read side by side.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .errors import TopologyError
from .plan import AddressPlan, Allocator

IPv6Address = ipaddress.IPv6Address
IPv6Interface = ipaddress.IPv6Interface
IPv6Network = ipaddress.IPv6Network

LINK_PREFIXLEN = 64  # every link a /64: SLAAC-sized, and ::1/::2 read like the IPv4 ends
LOOPBACKS = "addressing.ipv6.loopbacks"
LINKS = "addressing.ipv6.links"


@dataclass(frozen=True)
class Backbone6:
    """The IPv6 addresses of the backbone: router loopbacks and both ends of every link,
    keyed by (node, peer) as a node's interfaces are."""

    loopbacks: dict[str, IPv6Address] = field(default_factory=dict)
    ends: dict[tuple[str, str], IPv6Interface] = field(default_factory=dict)
    # The MNs that hold and claim their IPv6 prefix (addressing.ipv6.mobiles; default none,
    # so an IPv4 handoff's record is the same on a dual-stack backbone).
    mobiles: tuple[str, ...] = ()

    def end(self, node: str, peer: str) -> IPv6Interface:
        try:
            return self.ends[(node, peer)]
        except KeyError:
            raise TopologyError(f"no IPv6 link between {node} and {peer}") from None

    def loopback(self, node: str) -> IPv6Address:
        try:
            return self.loopbacks[node]
        except KeyError:
            raise TopologyError(f"{node} has no IPv6 loopback") from None

    def owners(self) -> dict[str, str]:
        """Address -> node, for naming BGP peers and next hops."""
        out = {str(a): n for n, a in self.loopbacks.items()}
        out.update({str(i.ip): n for (n, _), i in self.ends.items()})
        return out


def backbone(plan6: AddressPlan, routers: list[str], links: list[tuple[str, str]],
             mobiles: tuple[str, ...] = ()) -> Backbone6 | None:
    """The backbone's IPv6 addresses, when the plan declares its two blocks; ``routers``
    in loopback order, ``links`` in the IPv4 plan's link order."""
    try:
        lo, p2p = plan6.allocator(LOOPBACKS), plan6.allocator(LINKS)
    except TopologyError:
        return None  # an IPv6 plan for pools and MN prefixes only: an IPv4 backbone
    out = Backbone6(mobiles=mobiles)
    for k, name in enumerate(routers, start=1):
        addr = lo.host(k, f"the IPv6 loopback of {name}")
        assert isinstance(addr, IPv6Address)
        out.loopbacks[name] = addr
    for a, b in links:
        net = _subnet(p2p, f"link {a}-{b}")
        out.ends[(a, b)] = IPv6Interface((net.network_address + 1, net.prefixlen))
        out.ends[(b, a)] = IPv6Interface((net.network_address + 2, net.prefixlen))
    return out


def _subnet(alloc: Allocator, purpose: str) -> IPv6Network:
    net = alloc.subnet(LINK_PREFIXLEN, purpose)
    assert isinstance(net, IPv6Network)
    return net
