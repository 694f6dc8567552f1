"""The AR agent's DHCPv6 side (issue 18, draft 2.3): agents/dhcpd6.py's server on the access
link, and its hooks on the AR: who authenticated there, each delegated /64's attachment in
agents/handoff6.PrefixMobility, and its PTR in the AR's pool's ip6.arpa zone.

The twin of what agents/ar.py does for DHCPv4 (its ``identity_on_link``, ``bound``, ``ended``
and ``relayed``), kept apart so that the agent holds one object per family's service.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from .contract import Dhcp6Server as Dhcp6Settings
from .contract import Event
from .dhcp6 import duid_text, server_duid
from .dhcpd import client_parts
from .dhcpd6 import (
    Binding6,
    Dhcp6Server,
    Dhcp6Service,
    Server6Config,
    eui64_mac,
    lease_key,
)
from .dns import LEASE_PTR_TTL, DnsError, DnsUpdater, prefix_reverse_name
from .handoff import EventLog
from .handoff6 import PrefixMobility
from .linkproof import LinkBindings
from .relayauth import RelayAuth6

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ArDhcp6Config:
    """What the AR's DHCPv6 side is given by the agent (from agent.json's ``ipv6``)."""

    fqdn: str  # ours: the server DUID's name, and our Interface-ID when we relay
    loopback: IPv6Address  # where other ARs relay to us
    pool: IPv6Network
    mn_prefixlen: int
    settings: Dhcp6Settings
    access: int  # the access link's ifindex
    access_name: str
    pools: dict[IPv6Network, IPv6Address]  # every AR's pool -> its IPv6 loopback


class ArDhcp6:
    """``Dhcp6Server`` and ``Dhcp6Service`` with the AR's hooks (dhcpd6.Hooks6)."""

    def __init__(self, config: ArDhcp6Config, on_link: LinkBindings, prefixes: PrefixMobility,
                 relay_auth: RelayAuth6, backbone: Callable[[int], bool],
                 ptr: DnsUpdater | None, events: EventLog,
                 spawn: Callable[[Awaitable[None]], None],
                 changed: Callable[[str], None] = lambda key: None) -> None:
        self.config, self.on_link, self.prefixes = config, on_link, prefixes
        self.ptr, self.events, self.spawn = ptr, events, spawn
        # Told the lease key of a binding the server changed in place (a renewal, a new
        # proof), before its event: the agent saves it (agents/arstate.py bindings6).
        self.changed = changed
        s = config.settings
        self.server = Dhcp6Server(
            Server6Config(server_duid(config.fqdn), config.loopback, config.pool,
                          config.mn_prefixlen, s.first, s.last, s.valid_s, s.remote_renewals,
                          f"{config.fqdn}/{config.access_name}".encode("ascii")),
            self, lambda ifindex: ifindex == config.access, relay_auth=relay_auth,
            backbone=backbone)
        self.service = Dhcp6Service(self.server, (config.access,))

    async def start(self) -> None:
        await self.service.start()
        prefixes = self.server.config.prefixes()
        log.info("DHCPv6 delegating %s..%s of %s, valid %d s", prefixes[0], prefixes[-1],
                 self.config.pool, self.config.settings.valid_s)

    def close(self) -> None:
        self.service.close()

    def expire(self) -> None:
        self.server.expire()

    def status(self) -> dict[str, Any]:
        return self.server.status()

    # --- dhcpd6.Hooks6 ------------------------------------------------------------------

    def identity_on_link(self, peer: IPv6Address, ifindex: int,
                         duid: bytes | None) -> str | None:
        # The station is its link-local address's MAC (EUI-64), and the DUID carries the same
        # session proof as DHCPv4's client identifier (agents/linkproof.py): a captured AUTH
        # replayed from another station names the MN but cannot prove it.
        mac, parts = eui64_mac(peer), client_parts(duid_text(duid))
        if mac is None or parts is None:
            return None
        return self.on_link.identity(mac, ifindex, *parts)

    def identity_of_prefix(self, prefix: IPv6Network, ifindex: int) -> str | None:
        att = self.prefixes.attached.get(prefix)
        return att.mn if att is not None and att.ifindex == ifindex else None

    def owner_of(self, prefix: IPv6Network) -> IPv6Address | None:
        return next((lb for pool, lb in self.config.pools.items() if prefix.subnet_of(pool)),
                    None)

    def bound(self, binding: Binding6, ifindex: int, renewal: bool) -> None:
        self.changed(lease_key(binding.duid) or "")
        self.events(Event.DHCP6_BOUND, mn=binding.mn, prefix=str(binding.prefix),
                    renewal=renewal, remote=not ifindex,
                    remote_renewals=binding.remote_renewals)
        if ifindex == self.config.access:
            self.spawn(self.prefixes.assigned(binding.prefix, binding.mn, ifindex))
        if not renewal:
            self.spawn(self._set_ptr(binding.prefix, binding.mn))

    def ended(self, binding: Binding6, reason: str) -> None:
        self.changed(lease_key(binding.duid) or "")
        self.prefixes.reclaim(binding.prefix, reason)
        self.spawn(self._set_ptr(binding.prefix, None))

    def relayed(self, prefix: IPv6Network, kind: str, expires: float | None) -> None:
        self.events(Event.DHCP6_RELAYED, prefix=str(prefix), kind=kind)
        if kind == "reply":
            self.prefixes.visitor_lease(prefix, expires)
        else:
            self.spawn(self.prefixes.lease_gone(prefix, f"relayed {kind}"))

    async def _set_ptr(self, prefix: IPv6Network, mn: str | None) -> None:
        """The PTR on the /64 itself names its holder (draft 2.3: the new AR looks up the
        containing prefix's PTR), in our pool's reverse zone, which only we may write."""
        if self.ptr is None:
            return
        zone = prefix_reverse_name(self.config.pool)
        try:
            if mn is None:
                await self.ptr.delete_ptr(prefix, zone)
            else:
                await self.ptr.set_ptr(prefix, mn, LEASE_PTR_TTL, zone)
            self.events(Event.PTR_SET if mn else Event.PTR_DELETED, prefix=str(prefix), mn=mn)
        except DnsError as exc:
            log.warning("PTR %s -> %s: %s", prefix, mn, exc)
            self.events(Event.PTR_FAILED, prefix=str(prefix), error=str(exc))
