"""The MN's end of the Home Agent tunnel (draft 2.4): a point-to-point tunnel from its
care-of address to the HA, and source routing that sends its home addresses' packets into
it (reverse tunnelling), while the care-of address itself uses the visited network. The
VXLAN tunnel carries the IPv6 prefixes an AR refused as well (issue 18, docs/ipv6.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .contract import MnMacro
from .ra import eui64_link_local

log = logging.getLogger(__name__)

IPv4Address = ipaddress.IPv4Address
IPv6Network = ipaddress.IPv6Network
TABLE = 200  # the home addresses' routing table while away
RULE_PREF = 200
DEVICE = "faha0"


class TunnelError(Exception):
    """A tunnel between an MN's care-of address and its Home Agent could not be changed."""


def ip_batch_sync(commands: list[list[str]]) -> None:
    """Several iproute2 commands in one process (the HA's handoff worker runs this)."""
    res = subprocess.run(["ip", "-batch", "-"], input="".join(" ".join(c) + "\n"
                                                              for c in commands),
                         capture_output=True, text=True, timeout=10)
    if res.returncode != 0:
        raise TunnelError(f"ip -batch: {res.stderr.strip()}")


def ip_sync(*argv: str) -> None:
    res = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=10)
    if res.returncode != 0:
        raise TunnelError(f"ip {' '.join(argv)}: {res.stderr.strip()}")


def detect_tunnel(probe: str = "fa-ipip-probe") -> str:
    """'ipip' where the kernel has it, else 'vxlan' (point-to-point), the documented fallback.

    The MN and the HA make the same test, so both ends agree without negotiating."""
    try:
        ip_sync("link", "add", probe, "type", "ipip", "local", "127.0.0.1", "remote", "127.0.0.2")
    except TunnelError:
        return "vxlan"
    ip_sync("link", "del", probe)
    return "ipip"


Batch = Callable[[list[list[str]]], Awaitable[None]]


async def ip6_batch(commands: list[list[str]]) -> None:
    """iproute2 commands in one ``ip -6`` process: ``ip rule`` takes a rule's family from
    the command line only (a batch line cannot say -6, and "from <IPv6>" alone is refused)."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "-6", "-batch", "-", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate("".join(" ".join(c) + "\n" for c in commands).encode())
    if proc.returncode != 0:
        raise TunnelError(f"ip -6 -batch: {err.decode().strip()}")


@dataclass
class HaTunnel:
    settings: MnMacro
    kind: str  # "ipip" or "vxlan", as detect_tunnel finds it
    ip_batch: Batch  # runs iproute2 commands, in order, in one process
    ip6_batch: Batch = ip6_batch  # the same for the IPv6 rules (an ``ip -6`` process)
    homes: list[IPv4Address] = field(default_factory=list)
    prefixes6: list[IPv6Network] = field(default_factory=list)
    up: bool = False
    care_of: IPv4Address | None = None

    async def open(self, care_of: IPv4Address, ha: IPv4Address,
                   homes: list[IPv4Address], prefixes6: list[IPv6Network] | None = None
                   ) -> None:
        """``prefixes6``: IPv6 prefixes bound too (VXLAN only: ipip carries no IPv6)."""
        s = self.settings
        six = list(prefixes6 or ()) if self.kind == "vxlan" else []
        if self.up:
            await self.close()
        # One batch: packets from the HA are dropped until our end exists.
        if self.kind == "ipip":
            cmds = [["link", "add", DEVICE, "type", "ipip", "local", str(care_of),
                     "remote", str(ha)],
                    ["link", "set", DEVICE, "mtu", str(s.mtu), "up"],
                    ["route", "replace", "default", "dev", DEVICE, "table", str(TABLE)]]
        else:
            cmds = [["link", "add", DEVICE, "type", "vxlan", "id", str(s.vni), "local",
                     str(care_of), "remote", str(ha), "dstport", str(s.port), "nolearning"],
                    ["link", "set", DEVICE, "address", s.mn_mac],
                    ["link", "set", DEVICE, "mtu", str(s.mtu), "up"],
                    ["neigh", "replace", s.ha_inner, "lladdr", s.ha_mac, "dev", DEVICE,
                     "nud", "permanent"],
                    ["route", "replace", "default", "via", s.ha_inner, "dev", DEVICE,
                     "onlink", "table", str(TABLE)]]
        if six:
            # IPv6 over the same L2 tunnel: the HA's EUI-64 link-local address as the
            # gateway, its neighbour entry fixed (no ND over the tunnel, as no ARP).
            ha6 = eui64_link_local(s.ha_mac)
            cmds += [["neigh", "replace", ha6, "lladdr", s.ha_mac, "dev", DEVICE,
                      "nud", "permanent"],
                     ["route", "replace", "::/0", "via", ha6, "dev", DEVICE,
                      "table", str(TABLE)]]
        cmds += [["rule", "add", "from", str(a), "lookup", str(TABLE), "pref", str(RULE_PREF)]
                 for a in homes]
        self.up = True
        self.homes = list(homes)
        self.prefixes6 = six
        self.care_of = care_of
        await self.ip_batch(cmds)
        if six:
            await self.ip6_batch([["rule", "add", "from", str(p), "lookup", str(TABLE), "pref",
                                   str(RULE_PREF)] for p in six])

    async def close(self) -> None:
        cmds = [["rule", "del", "from", str(a), "lookup", str(TABLE), "pref", str(RULE_PREF)]
                for a in self.homes]
        rules6 = [["rule", "del", "from", str(p), "lookup", str(TABLE), "pref", str(RULE_PREF)]
                  for p in self.prefixes6]
        if self.up:
            cmds.append(["link", "del", DEVICE])
        self.homes, self.prefixes6, self.up, self.care_of = [], [], False, None
        if rules6:
            try:
                await self.ip6_batch(rules6)
            except Exception as exc:  # noqa: BLE001 - the rest must still go
                log.info("closing the tunnel's IPv6 rules: %s", exc)
        if cmds:
            try:
                await self.ip_batch(cmds)
            except Exception as exc:  # noqa: BLE001 - a half-built tunnel must still go
                log.info("closing the tunnel: %s", exc)
