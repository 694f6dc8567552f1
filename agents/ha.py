"""The Home Agent (draft 2.4): the AR agent's BGP speaker, RIB, authentication service and
Mobility (agents/ar.py, agents/handoff.py) reused as they are. What differs is where an
MN's addresses go: into a tunnel to the care-of address its Binding Update came from.

A Binding Update is the one-message AUTH with the mobility flag, sent from the care-of
address; the same message without the flag de-registers the addresses it lists. On a
dual-stack backbone it also binds the MN's IPv6 prefix an AR refused (PrefixMobility's
checks and LOCAL_PREF, issue 18): the prefix is routed into the same VXLAN tunnel.
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
from .contract import ArAgentConfig, ArIpv6, ContractError, HaTunnel, Mode
from .handoff6 import AgentPorts
from .macro import TunnelError, detect_tunnel, ip_batch_sync
from .macro import ip_sync as _ip

log = logging.getLogger("agents.ha")

IPv4Address = ipaddress.IPv4Address
IPv6Network = ipaddress.IPv6Network
NO_POOL = ipaddress.IPv4Network("0.0.0.0/32")


class HaAgent(ArAgent):
    def __init__(self, node: str, rundir: Path, config: ArAgentConfig,
                 tunnel: HaTunnel) -> None:
        super().__init__(node, rundir, NO_POOL, config)
        self.tunnel = tunnel
        self.kind = detect_tunnel()
        self.care_of: dict[IPv4Address, IPv4Address] = {}  # home address -> care-of address
        self.care_of6: dict[IPv6Network, IPv4Address] = {}  # IPv6 prefix -> care-of address
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

    async def start_auth(self) -> None:
        await super().start_auth()
        if self.prefixes is not None:
            # We are in no cluster: what we announce is tagged to leave one, like an AR's
            # route that must beat a far one (handoff6.PrefixMobility._must_escape).
            self.prefixes.escape_always = True
            self.prefixes.redirector = None  # no access link, no fast redirect to or from us

    def _ports6(self, cfg: ArAgentConfig, six: ArIpv6) -> AgentPorts:
        return HaPorts6(self.fib, self._on_handoff,
                        lambda line: self._spawn(self.channel.send(line)), six.loopback,
                        lambda: None, cfg.escape_community, agent=self)

    async def _on_authenticated(self, result: AuthResult
                                ) -> list[IPv4Address | IPv6Network]:
        assert self.mobility is not None
        claimed = [p.network_address for p in result.addresses
                   if p.version == 4 and p.prefixlen == 32]
        homes = [a for a in claimed if isinstance(a, IPv4Address)]
        prefixes = [p for p in result.addresses if isinstance(p, IPv6Network)]
        if not result.mobility:
            done: list[IPv4Address | IPv6Network] = [
                a for a in homes if await self.mobility.deregister(a, result.peer_name)]
            done += [p for p in prefixes if await self._deregister6(p, result.peer_name)]
            self.mobility.events("deregistered", mn=result.peer_name, addrs=done)
            return done
        coa = IPv4Address(result.source[0])
        self.mobility.events("binding_update", mn=result.peer_name, care_of=coa, addrs=homes,
                             prefixes=[str(p) for p in prefixes], tunnel=self.kind)
        for a in homes:
            self.care_of[a] = coa
        bound: list[IPv4Address | IPv6Network] = [*await self.mobility.on_authenticated(result)]
        if prefixes and self.prefixes is not None:
            if self.kind != "vxlan":
                # ipip carries no IPv6: refuse rather than announce a prefix we cannot deliver.
                self.mobility.events("checked6", mn=result.peer_name, accepted=[], refused={
                    str(p): f"a {self.kind} tunnel carries no IPv6" for p in prefixes})
                return bound
            for p in prefixes:
                self.care_of6[p] = coa
            try:
                # The AR's checks (AAAA + the prefix's own PTR, DNSSEC-validated, the plan's
                # length, the managed range) and LOCAL_PREF, then our tunnel (HaPorts6).
                bound += await self.prefixes.on_authenticated(result.peer_name, prefixes, 0)
            except Exception:  # noqa: BLE001 - IPv6 must never cost the IPv4 binding
                log.exception("IPv6 prefixes of %s", result.peer_name)
            for p in prefixes:
                if p not in bound and self.prefixes.attached.get(p) is None:
                    self.care_of6.pop(p, None)
        return bound

    async def _deregister6(self, prefix: IPv6Network, mn: str) -> bool:
        """The MN drops its binding for ``prefix``: withdraw it and take its route down."""
        assert self.prefixes is not None
        att = self.prefixes.attached.get(prefix)
        if att is None or att.mn != mn:
            return False
        self.prefixes.attached.pop(prefix)
        if self.prefixes.announced.pop(prefix, None) is not None:
            self.prefixes.bgp.withdraw6(prefix)
            self.prefixes.events("withdrawn6", prefix=str(prefix), reason="deregistered")
        await self.prefixes.kernel.detach6(prefix)
        return True

    # --- the tunnel, on the handoff worker (handoff.Kernel) --------------------------------------

    def _attach_now(self, address: IPv4Address, ifindex: int) -> None:
        coa = self.care_of.get(address)
        if coa is None:
            raise TunnelError(f"no care-of address for {address}")
        self._route_into_tunnel(coa, address, address)

    def _attach6_now(self, prefix: IPv6Network) -> None:
        """An MN's IPv6 prefix into the VXLAN tunnel to its care-of address: the /64 onto
        the device, the MN's address in it (the first, the one it holds) to its tunnel MAC."""
        coa = self.care_of6.get(prefix)
        if coa is None:
            raise TunnelError(f"no care-of address for {prefix}")
        self._route_into_tunnel(coa, prefix.network_address + 1, prefix)

    def _detach6_now(self, prefix: IPv6Network) -> None:
        self.fib.del_access(prefix)
        self.care_of6.pop(prefix, None)
        self._prune()

    def _route_into_tunnel(self, coa: IPv4Address,
                           neighbour: ipaddress.IPv4Address | ipaddress.IPv6Address,
                           route: IPv4Address | IPv6Network) -> None:
        """``route`` onto the tunnel device to ``coa`` (made if new), ``neighbour`` (the
        MN's address) fixed to the MN's tunnel MAC."""
        # One ip process for the device and the neighbour entry: our route is announced only
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
            # Frames to the MN carry its tunnel MAC; no ARP (no ND) runs over the tunnel.
            cmds.append(["neigh", "replace", str(neighbour), "lladdr", self.tunnel.mn_mac,
                         "dev", dev, "nud", "permanent"])
        ip_batch_sync(cmds)
        self._devices[coa] = dev
        index = self.fib.index_of(dev)
        if index is None:
            raise TunnelError(f"{dev} vanished")
        self.fib.add_access(route, index)
        self._prune()

    def _detach_now(self, address: IPv4Address) -> None:
        self.fib.del_access(address)
        self.care_of.pop(address, None)
        self._prune()

    def _prune(self) -> None:
        """Remove tunnels no home address uses any more."""
        used = {*self.care_of.values(), *self.care_of6.values()}
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
                           "care_of6": {str(p): str(c) for p, c in self.care_of6.items()},
                           "devices": {str(c): d for c, d in self._devices.items()}},
                "bound6": {str(p): lp for p, lp in self.prefixes.announced.items()}
                if self.prefixes is not None else {}}

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            for dev in list(self._devices.values()):
                try:
                    _ip("link", "del", dev)
                except TunnelError as exc:
                    log.warning("%s", exc)


class HaPorts6(AgentPorts):
    """PrefixMobility's kernel at the Home Agent: the prefix goes into the tunnel to the
    care-of address (HaAgent), not onto an access link."""

    def __init__(self, *args: Any, agent: HaAgent) -> None:
        super().__init__(*args)
        self.agent = agent

    def _attach_now(self, prefix: IPv6Network, ifindex: int) -> None:
        self.agent._attach6_now(prefix)

    def _detach_now(self, prefix: IPv6Network) -> None:
        self.agent._detach6_now(prefix)


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
