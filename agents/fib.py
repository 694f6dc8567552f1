"""The AR's BGP RIB and its kernel FIB: best path per prefix, next hop resolved through OSPF.

The kernel has no recursive next hops, so each BGP route is installed via the gateway
and interface of the IGP route that covers its BGP next hop, and re-resolved whenever
the IGP's routes change (netlink events), which is the draft's recursive routing.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .exabgp_api import Route

log = logging.getLogger(__name__)

RTPROT_FLATARCH = 250  # our routes, so we never resolve through or delete another's
METRIC = 200  # below zebra's routes (metric 20) should a prefix ever appear in both

Net = ipaddress.IPv4Network


@dataclass(frozen=True)
class Path:
    gateway: str | None
    oif: int


def best(routes: Iterable[tuple[str, Route]]) -> Route | None:
    """Highest LOCAL_PREF wins (the draft's timestamp); then lowest next hop, then peer."""
    ranked = sorted(routes, key=lambda pr: (-pr[1].local_pref, int(pr[1].next_hop), pr[0]))
    return ranked[0][1] if ranked else None


class Rib:
    """Routes per (prefix, peer) as received from the route reflectors."""

    def __init__(self) -> None:
        self._by_prefix: dict[Net, dict[str, Route]] = {}

    def update(self, peer: str, announced: list[Route], withdrawn: list[Net]) -> set[Net]:
        changed: set[Net] = set()
        for r in announced:
            self._by_prefix.setdefault(r.prefix, {})[peer] = r
            changed.add(r.prefix)
        for p in withdrawn:
            paths = self._by_prefix.get(p)
            if paths and paths.pop(peer, None) is not None:
                changed.add(p)
                if not paths:
                    del self._by_prefix[p]
        return changed

    def drop_peer(self, peer: str) -> set[Net]:
        changed = {p for p, paths in self._by_prefix.items() if peer in paths}
        return self.update(peer, [], list(changed))

    def best(self, prefix: Net) -> Route | None:
        return best(self._by_prefix.get(prefix, {}).items())

    def prefixes(self) -> list[Net]:
        return list(self._by_prefix)


class KernelFib:
    """Installs best routes into the main table via pyroute2; skips what we must not own."""

    def __init__(self, skip: Callable[[Net], bool]) -> None:
        from pyroute2 import IPRoute

        self._ipr: Any = IPRoute()
        self._skip = skip
        self.installed: dict[Net, tuple[Route, Path]] = {}

    def close(self) -> None:
        self._ipr.close()

    def resolve(self, next_hop: ipaddress.IPv4Address) -> Path | None:
        """The IGP path toward a BGP next hop, never through one of our own routes."""
        try:
            res = self._ipr.route("get", dst=str(next_hop))
        except Exception as exc:  # noqa: BLE001 - netlink says unreachable as an error
            log.debug("no route to next hop %s: %s", next_hop, exc)
            return None
        if not res:
            return None
        msg = res[0]
        if msg.get_attr("RTA_TABLE") not in (None, 254) or msg["type"] != 1:
            return None
        oif = msg.get_attr("RTA_OIF")
        gw = msg.get_attr("RTA_GATEWAY")
        if oif is None:
            return None
        # The route get result has no proto; check the covering entry is not ours.
        for nb in self.installed:
            if next_hop in nb:
                return None
        return Path(gw if gw else str(next_hop), int(oif))

    def sync(
        self,
        prefix: Net,
        route: Route | None,
        paths: dict[ipaddress.IPv4Address, Path | None] | None = None,
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
            self._ipr.route(
                "replace",
                dst=str(prefix),
                gateway=path.gateway,
                oif=path.oif,
                proto=RTPROT_FLATARCH,
                priority=METRIC,
            )
            self.installed[prefix] = (route, path)
        except Exception as exc:  # noqa: BLE001 - keep the agent alive, log why
            log.warning("install %s via %s failed: %s", prefix, path, exc)

    def _delete(self, prefix: Net) -> None:
        self.installed.pop(prefix, None)
        try:
            self._ipr.route(
                "del", dst=str(prefix), proto=RTPROT_FLATARCH, priority=METRIC
            )
        except Exception as exc:  # noqa: BLE001
            log.debug("delete %s: %s", prefix, exc)

    def flush(self) -> None:
        for p in list(self.installed):
            self._delete(p)
