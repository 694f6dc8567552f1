"""The AR's BGP RIB and its kernel FIB: best path per prefix, next hop resolved through OSPF.

The kernel has no recursive next hops, so each BGP route is installed via the gateway
and interface of the IGP route that covers its BGP next hop, and re-resolved whenever
the IGP's routes change (netlink events), which is the draft's recursive routing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .contract import REDIRECT_METRIC
from .exabgp_api import Route
from .netlink import (
    RT_SCOPE_LINK,
    RT_TABLE_MAIN,
    RTN_UNICAST,
    Netlink,
    NetlinkError,
    seg6_encap,
    seg6local_dx,
)

log = logging.getLogger(__name__)

RTPROT_FLATARCH = 250  # our routes, so we never resolve through or delete another's
METRIC = 200  # below zebra's routes (metric 20) should a prefix ever appear in both
PARK_METRIC = 90  # an idle MN's packets wait in the paging buffer, whatever else is there
ACCESS_METRIC = 100  # an MN attached here beats any BGP route for its /32


Net = ipaddress.IPv4Network | ipaddress.IPv6Network  # BGP routes of both families
Hop = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Path:
    gateway: str | None
    oif: int


def best(routes: Iterable[tuple[str, Route]]) -> Route | None:
    """Highest LOCAL_PREF wins (the draft's timestamp); then lowest next hop, then peer."""
    ranked = sorted(routes, key=lambda pr: (-pr[1].local_pref, int(pr[1].next_hop), pr[0]))
    return ranked[0][1] if ranked else None


def host(address: ipaddress.IPv4Address) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network((address, 32))


def _gw(gateway: str | None) -> Hop | None:
    return ipaddress.ip_address(gateway) if gateway else None


def _key(peer: str, path_id: str) -> str:
    return f"{peer}#{path_id}" if path_id else peer


class Rib:
    """Routes per (prefix, peer) as received from the route reflectors."""

    def __init__(self) -> None:
        self._by_prefix: dict[Net, dict[str, Route]] = {}

    def update(self, peer: str, announced: list[Route], withdrawn: list[Net],
               withdrawn_ids: list[str] | None = None) -> set[Net]:
        """Apply one UPDATE. With ADD-PATH a peer holds several paths per prefix, each
        under its path id; without it the id is empty and a peer holds one path."""
        changed: set[Net] = set()
        for r in announced:
            self._by_prefix.setdefault(r.prefix, {})[_key(peer, r.path_id)] = r
            changed.add(r.prefix)
        ids = withdrawn_ids or [""] * len(withdrawn)
        for p, pid in zip(withdrawn, ids, strict=True):
            paths = self._by_prefix.get(p)
            if paths and paths.pop(_key(peer, pid), None) is not None:
                changed.add(p)
                if not paths:
                    del self._by_prefix[p]
        return changed

    def drop_peer(self, peer: str) -> set[Net]:
        changed: set[Net] = set()
        for p, paths in list(self._by_prefix.items()):
            for key in [k for k in paths if k.split("#", 1)[0] == peer]:
                del paths[key]
                changed.add(p)
            if not paths:
                del self._by_prefix[p]
        return changed

    def best(self, prefix: Net) -> Route | None:
        return best(self._by_prefix.get(prefix, {}).items())

    def paths(self, prefix: Net) -> list[Route]:
        return list(self._by_prefix.get(prefix, {}).values())

    def prefixes(self) -> list[Net]:
        return list(self._by_prefix)


class KernelFib:
    """Installs best routes into the main table via pyroute2; skips what we must not own."""

    def __init__(self, skip: Callable[[Net], bool]) -> None:
        self._nl = Netlink()
        self._skip = skip
        self.installed: dict[Net, tuple[Route, Path]] = {}
        # An MN's address (its /32) or its IPv6 prefix (agents/handoff6.py) -> access ifindex.
        self.access: dict[ipaddress.IPv4Address | ipaddress.IPv6Network, int] = {}
        self.redirected: dict[ipaddress.IPv4Address, ipaddress.IPv4Address] = {}
        self.redirected6: dict[ipaddress.IPv6Network, ipaddress.IPv6Address] = {}
        # An idle MN's /32 or /64 -> the paging device (agents/paging.py).
        self.parked: dict[ipaddress.IPv4Address | ipaddress.IPv6Network, int] = {}
        # The fast redirect over SRv6 (issue 18, RFC 9433's naming: the previous AR
        # encapsulates, H.Encaps, to the new AR's End.DX4/End.DX6 SID): the SID of each peer
        # by its overlay address, filled by enable_srv6 once the kernel took our own SIDs.
        # Empty: the VXLAN overlay.
        self.srv6_sids: dict[ipaddress.IPv4Address | ipaddress.IPv6Address,
                             ipaddress.IPv6Address] = {}
        self.own_sids: list[ipaddress.IPv6Address] = []
        # Next hop -> its IGP path, kept from one pass to the next: a pass per UPDATE that
        # resolved afresh paid a netlink round trip and a scan of every installed route
        # (issue 15). The caller clears it when the IGP changed; a route of ours that comes
        # or goes over a hop drops that hop (see resolve).
        self.hop_paths: dict[Hop, Path | None] = {}

    def close(self) -> None:
        self._nl.close()

    def resolve(self, next_hop: Hop) -> Path | None:
        """The IGP path toward a BGP next hop, never through one of our own routes."""
        try:
            res = self._nl.route_get(next_hop)
        except NetlinkError as exc:
            log.debug("no route to next hop %s: %s", next_hop, exc)
            return None
        if res is None or res.table != RT_TABLE_MAIN or res.rtype != RTN_UNICAST:
            return None
        if res.oif is None:
            return None
        # The route get result has no proto; check the covering entry is not ours.
        for nb in self.installed:
            if next_hop in nb:
                return None
        return Path(str(res.gateway) if res.gateway else str(next_hop), res.oif)

    def sync(
        self,
        prefix: Net,
        route: Route | None,
        paths: dict[Hop, Path | None] | None = None,
    ) -> None:
        """Make the kernel match the RIB's best route for one prefix.

        `paths` memoises next-hop resolution across one pass: many prefixes share a
        next hop (one AR's loopback), and each resolution is a netlink round trip.
        """
        path: Path | None = None
        if route is not None and not self._skip(prefix):
            if paths is None:
                path = self.resolve(route.next_hop)
            else:
                if route.next_hop not in paths:
                    paths[route.next_hop] = self.resolve(route.next_hop)
                path = paths[route.next_hop]
        current = self.installed.get(prefix)
        if route is None or path is None:
            if current is not None:
                self._delete(prefix)
            return
        if current == (route, path):
            return
        try:
            self._nl.route_replace(
                dst=prefix, gateway=_gw(path.gateway), oif=path.oif, proto=RTPROT_FLATARCH,
                priority=METRIC,
            )
            if current is None:
                self._covering_changed(prefix)
            self.installed[prefix] = (route, path)
        except NetlinkError as exc:  # keep the agent alive, log why
            log.warning("install %s via %s failed: %s", prefix, path, exc)

    def _covering_changed(self, prefix: Net) -> None:
        """A route of ours over ``prefix`` came or went: the hops inside resolve anew."""
        memo = self.hop_paths
        for hop in [h for h in memo if h in prefix]:
            del memo[hop]

    def _delete(self, prefix: Net) -> None:
        if self.installed.pop(prefix, None) is not None:
            self._covering_changed(prefix)
        try:
            self._nl.route_delete(dst=prefix, proto=RTPROT_FLATARCH, priority=METRIC)
        except NetlinkError as exc:
            log.debug("delete %s: %s", prefix, exc)

    def flush(self) -> None:
        for p in list(self.installed):
            self._delete(p)
        for a in list(self.access):
            self.del_access(a)
        for a in list(self.redirected):
            self.del_redirect(a)
        for p in list(self.redirected6):
            self.del_redirect6(p)
        for a in list(self.parked):
            self.del_park(a)

    # --- host routes of the handoff: MNs attached here, and fast redirects ---------------

    def index_of(self, ifname: str) -> int | None:
        return self._nl.link_index(ifname)

    def link_up(self, ifindex: int) -> None:
        self._nl.link_up(ifindex)

    def ifname(self, ifindex: int) -> str:
        name = self._nl.link_name(ifindex)
        if name is None:
            raise NetlinkError(0, f"no interface with index {ifindex}")
        return name

    def _on_link(self, dst: Net, oif: int, metric: int) -> None:
        self._nl.route_replace(dst=dst, oif=oif, proto=RTPROT_FLATARCH, priority=metric,
                               scope=RT_SCOPE_LINK)

    def _off_link(self, dst: Net, metric: int, what: str) -> None:
        try:
            # The kernel matches the scope on delete: say link, as when it was added.
            self._nl.route_delete(dst=dst, proto=RTPROT_FLATARCH, priority=metric,
                                  scope=RT_SCOPE_LINK)
        except NetlinkError as exc:  # gone with its link already
            log.warning("delete %s %s: %s", what, dst, exc)

    def add_access(self, address: ipaddress.IPv4Address | ipaddress.IPv6Network,
                   ifindex: int) -> None:
        """An MN's address, or its IPv6 prefix, onto its access link."""
        self._on_link(_on_link_dst(address), ifindex, ACCESS_METRIC)
        self.access[address] = ifindex

    def del_access(self, address: ipaddress.IPv4Address | ipaddress.IPv6Network) -> None:
        ifindex = self.access.pop(address, None)
        if ifindex is not None:
            self._off_link(_on_link_dst(address), ACCESS_METRIC, "access route")
            if isinstance(address, ipaddress.IPv4Address):
                # The MN took its MAC with it: the next holder of a recycled address (a
                # lease released, then bound to another MN here) must be asked afresh, not
                # sent frames for the last one until the entry ages out.
                try:
                    self._nl.neigh_delete(address, ifindex)
                except NetlinkError as exc:
                    log.warning("forget the neighbour %s: %s", address, exc)

    def add_park(self, address: ipaddress.IPv4Address | ipaddress.IPv6Network,
                 oif: int) -> None:
        self._on_link(_on_link_dst(address), oif, PARK_METRIC)
        self.parked[address] = oif

    def del_park(self, address: ipaddress.IPv4Address | ipaddress.IPv6Network) -> None:
        if self.parked.pop(address, None) is not None:
            self._off_link(_on_link_dst(address), PARK_METRIC, "paging route")

    @property
    def redirect_tunnel(self) -> str:
        """How the fast redirect leaves: "srv6" or "vxlan" (reported in its events)."""
        return "srv6" if self.srv6_sids else "vxlan"

    def enable_srv6(self, own: dict[int, ipaddress.IPv6Address], oif: int,
                    peers: dict[ipaddress.IPv4Address | ipaddress.IPv6Address,
                                ipaddress.IPv6Address]) -> None:
        """Our End.DX4 and End.DX6 SIDs (``own``: by IP version), then a probe of H.Encaps;
        raises NetlinkError (the kernel's reason) if the kernel has no SRv6, leaving
        nothing behind, and the redirect stays on the VXLAN overlay."""
        done: list[ipaddress.IPv6Address] = []
        try:
            for version, sid in sorted(own.items()):
                self._nl.route_replace(dst=ipaddress.IPv6Network(sid), oif=oif,
                                       proto=RTPROT_FLATARCH, encap=seg6local_dx(version))
                done.append(sid)
            probe = ipaddress.IPv6Network(own[6] + 1)  # in our own /64: no MN's, no peer's
            self._nl.route_replace(dst=probe, oif=oif, proto=RTPROT_FLATARCH,
                                   encap=seg6_encap((own[6],)))
            self._nl.route_delete(dst=probe, proto=RTPROT_FLATARCH)
        except NetlinkError:
            for sid in done:
                with contextlib.suppress(NetlinkError):
                    self._nl.route_delete(dst=ipaddress.IPv6Network(sid), proto=RTPROT_FLATARCH)
            raise
        self.own_sids = done
        self.srv6_sids = dict(peers)

    def _tunnel(self, dst: Net, via: ipaddress.IPv4Address | ipaddress.IPv6Address,
                oif: int) -> None:
        sid = self.srv6_sids.get(via)
        if sid is not None:
            self._nl.route_replace(dst=dst, oif=oif, proto=RTPROT_FLATARCH,
                                   priority=REDIRECT_METRIC, encap=seg6_encap((sid,)),
                                   scope=RT_SCOPE_LINK if dst.version == 4 else 0)
        else:
            self._nl.route_replace(dst=dst, gateway=via, oif=oif, proto=RTPROT_FLATARCH,
                                   priority=REDIRECT_METRIC)

    def add_redirect(self, address: ipaddress.IPv4Address, via: ipaddress.IPv4Address,
                     oif: int) -> bool:
        """Tunnel ``address`` to the AR at overlay address ``via``: to its End.DX4 SID over
        SRv6, else on the overlay device."""
        try:
            self._tunnel(host(address), via, oif)
        except NetlinkError as exc:
            log.warning("redirect %s via %s failed: %s", address, via, exc)
            return False
        self.redirected[address] = via
        return True

    def del_redirect(self, address: ipaddress.IPv4Address) -> None:
        if self.redirected.pop(address, None) is None:
            return
        try:
            self._nl.route_delete(dst=host(address), proto=RTPROT_FLATARCH,
                                  priority=REDIRECT_METRIC)
        except NetlinkError as exc:
            log.debug("delete redirect %s: %s", address, exc)


    def add_redirect6(self, prefix: ipaddress.IPv6Network, via: ipaddress.IPv6Address,
                      oif: int) -> bool:
        """Tunnel an MN's /64 to the AR whose overlay link-local address is ``via``: to its
        End.DX6 SID over SRv6, else on the overlay device."""
        try:
            self._tunnel(prefix, via, oif)
        except NetlinkError as exc:
            log.warning("redirect %s via %s failed: %s", prefix, via, exc)
            return False
        self.redirected6[prefix] = via
        return True

    def del_redirect6(self, prefix: ipaddress.IPv6Network) -> None:
        if self.redirected6.pop(prefix, None) is None:
            return
        try:
            self._nl.route_delete(dst=prefix, proto=RTPROT_FLATARCH, priority=REDIRECT_METRIC)
        except NetlinkError as exc:
            log.debug("delete redirect %s: %s", prefix, exc)


def _on_link_dst(key: ipaddress.IPv4Address | ipaddress.IPv6Network) -> Net:
    return key if isinstance(key, ipaddress.IPv6Network) else host(key)
