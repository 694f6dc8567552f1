"""The Home Agent (draft 2.4): the AR agent's BGP speaker, RIB, authentication service and
Mobility (agents/ar.py, agents/handoff.py) reused as they are. What differs is where an
MN's addresses go: into a tunnel to the care-of address its Binding Update came from.

A Binding Update is the one-message AUTH with the mobility flag, sent from the care-of
address; the same message without the flag de-registers the addresses it lists.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path
from typing import Any

from .ar import ArAgent, check_config, run_agent
from .auth import AuthResult
from .contract import ArAgentConfig, ContractError, HaTunnel, Mode
from .macro import TunnelError, detect_tunnel, ip_batch_sync
from .macro import ip_sync as _ip

log = logging.getLogger("agents.ha")

IPv4Address = ipaddress.IPv4Address
NO_POOL = ipaddress.IPv4Network("0.0.0.0/32")


class HaAgent(ArAgent):
    def __init__(self, node: str, rundir: Path, config: ArAgentConfig,
                 tunnel: HaTunnel) -> None:
        super().__init__(node, rundir, NO_POOL, config)
        self.tunnel = tunnel
        self.kind = detect_tunnel()
        self.care_of: dict[IPv4Address, IPv4Address] = {}  # home address -> care-of address
        self._devices: dict[IPv4Address, str] = {}  # care-of address -> tunnel device
        self._serial = 0
        log.info("tunnels to care-of addresses: %s", self.kind)

    # --- what a Home Agent does differently from an AR ---------------------------------------

    async def _access_index(self, cfg: ArAgentConfig) -> int | None:
        return None

    def _serves(self, access: int | None, ifindex: int) -> bool:
        return True  # Binding Updates come from anywhere in the Internet

    def _mode(self) -> Mode:
        return Mode.DRAFT  # nothing to redirect from: the AS's routing converges on our /32

    def _start_filter(self) -> None:
        return None

    async def start_paging(self, cfg: ArAgentConfig) -> None:
        return None

    async def _on_authenticated(self, result: AuthResult) -> list[IPv4Address]:
        assert self.mobility is not None
        claimed = [p.network_address for p in result.addresses
                   if p.version == 4 and p.prefixlen == 32]
        homes = [a for a in claimed if isinstance(a, IPv4Address)]
        if not result.mobility:
            done = [a for a in homes if await self.mobility.deregister(a, result.peer_name)]
            self.mobility.events("deregistered", mn=result.peer_name, addrs=done)
            return done
        coa = IPv4Address(result.source[0])
        self.mobility.events("binding_update", mn=result.peer_name, care_of=coa, addrs=homes,
                             tunnel=self.kind)
        for a in homes:
            self.care_of[a] = coa
        return await self.mobility.on_authenticated(result)

    # --- the tunnel, on the handoff worker (handoff.Kernel) --------------------------------------

    def _attach_now(self, address: IPv4Address, ifindex: int) -> None:
        coa = self.care_of.get(address)
        if coa is None:
            raise TunnelError(f"no care-of address for {address}")
        # One ip process for the device and the neighbour entry: our /32 is announced only
        # after this returns, so every process start here delays the Binding Update.
        dev = self._devices.get(coa)
        cmds: list[list[str]] = []
        if dev is None:
            self._serial += 1
            dev = f"hat{self._serial}"
            t = self.tunnel
            if self.kind == "ipip":
                cmds.append(["link", "add", dev, "type", "ipip", "local", str(t.local),
                             "remote", str(coa)])
            else:
                cmds += [["link", "add", dev, "type", "vxlan", "id", str(t.vni), "local",
                          str(t.local), "remote", str(coa), "dstport", str(t.port),
                          "nolearning"],
                         ["link", "set", dev, "address", t.ha_mac]]
            cmds.append(["link", "set", dev, "mtu", str(t.mtu), "up"])
        if self.kind == "vxlan":
            # Frames to the MN carry its tunnel MAC; no ARP runs over the tunnel.
            cmds.append(["neigh", "replace", str(address), "lladdr", self.tunnel.mn_mac,
                         "dev", dev, "nud", "permanent"])
        ip_batch_sync(cmds)
        self._devices[coa] = dev
        index = self.fib.index_of(dev)
        if index is None:
            raise TunnelError(f"{dev} vanished")
        self.fib.add_access(address, index)
        self._prune()

    def _detach_now(self, address: IPv4Address) -> None:
        self.fib.del_access(address)
        self.care_of.pop(address, None)
        self._prune()

    def _prune(self) -> None:
        """Remove tunnels no home address uses any more."""
        used = set(self.care_of.values())
        for coa, dev in list(self._devices.items()):
            if coa not in used:
                try:
                    _ip("link", "del", dev)
                except TunnelError as exc:
                    log.warning("%s", exc)
                del self._devices[coa]

    def status(self) -> dict[str, Any]:
        return {**super().status(),
                "tunnel": {"kind": self.kind,
                           "care_of": {str(a): str(c) for a, c in self.care_of.items()},
                           "devices": {str(c): d for c, d in self._devices.items()}}}

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            for dev in list(self._devices.values()):
                try:
                    _ip("link", "del", dev)
                except TunnelError as exc:
                    log.warning("%s", exc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="agents.ha", description=__doc__)
    ap.add_argument("--node", required=True)
    ap.add_argument("--rundir", required=True, type=Path)
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--check", action="store_true", help="load the config and key, then exit")
    args = ap.parse_args(argv)
    if args.check:
        return check_config(args.config)

    def make() -> HaAgent:
        config = ArAgentConfig.load(args.config)
        if config.tunnel is None:
            raise ContractError(f"{args.config}: tunnel: missing (a Home Agent needs it)")
        return HaAgent(args.node, args.rundir, config, config.tunnel)

    return run_agent(args.rundir, make)


if __name__ == "__main__":
    sys.exit(main())
