"""The anchored baseline (draft Figure 1) switched on inside a running flat lab: a fixed anchor
(P-GW) on the `pgw` service node, a VXLAN tunnel to every AR (S-GW/eNB collapsed into the AR),
an MME co-located with the anchor and an HSS at the home network's distance (the
topology's `home:` link, laid on the MME-HSS flow by topologies/lab/shaping.py).

The flat plane keeps running; each MN gets a second, anchored address from the anchor's pool,
so both architectures are measured on one topology, one lab, one run (docs/baseline.md).
On a dual-stack backbone the plane can be dual-stack too (issue 18, LTE's PDN type IPv4v6):
each MN also holds an anchored /64, its bearer switched beside the IPv4 one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, ClassVar

from agents import epc
from agents.contract import ACCESS_GATEWAY, read_events
from agents.control import ControlError, request
from agents.ra import eui64_link_local
from topologies.lab.daemons import (
    Daemon,
    ForegroundDaemon,
    LabError,
    NodeExec,
    start_order,
    stop_order,
)
from topologies.lab.lab import Lab
from topologies.lab.radio import MnControl, access_ifname
from topologies.model import Node, Role, Topology
from topologies.model.plan import Allocator, Block
from topologies.model.topology import LAB_BLOCKS_V4, LAB_BLOCKS_V6
from topologies.render.configs import render

ANCHOR_POOL = IPv4Network(LAB_BLOCKS_V4["anchored"])  # session addresses (RFC 6598 space)
ANCHOR_POOL6 = IPv6Network(LAB_BLOCKS_V6["anchored6"])  # a dual-stack session's /64s
ANCHORED_PREFIXLEN6 = 64
TUNNEL: dict[str, Any] = {"dev": "gtp0", "vni": 2152, "port": epc.GTPU_PORT, "mtu": 1500,
                          "net": LAB_BLOCKS_V4["anchored-tunnel"]}
UPLINK_TABLE = 152
UPLINK_RULE_PRIORITY = 150

Progress = Callable[[str], None]


class BaselineError(LabError):
    """The anchored plane could not be set up or did not behave."""


# --------------------------------------------------------------------------- plain data


def anchor_node(topo: Topology) -> Node:
    try:
        return topo.service("pgw")
    except Exception:  # noqa: BLE001 - TopologyError: say what to add
        raise BaselineError(f"topology {topo.name} has no pgw service node; add "
                            "'services: pgw: {name: pgw, attach: <core>}'") from None


def anchored_address(topo: Topology, mn: str) -> IPv4Address:
    if mn not in topo.mobiles:
        raise BaselineError(f"no mobile node {mn!r}")
    address = topo.mobile(mn).anchored
    assert address is not None  # the plan gives every MN one
    return address


def anchored_prefix6(topo: Topology, mn: str) -> IPv6Network:
    """The MN's anchored /64: the (i+1)-th of the pool, i its place among the mobiles."""
    if mn not in topo.mobiles:
        raise BaselineError(f"no mobile node {mn!r}")
    i = list(topo.mobiles).index(mn) + 1
    return IPv6Network((int(ANCHOR_POOL6.network_address) + (i << (128 - ANCHORED_PREFIXLEN6)),
                        ANCHORED_PREFIXLEN6))


def anchored_address6(topo: Topology, mn: str) -> IPv6Address:
    """The address the MN holds in its anchored /64: the first, as in a flat /64."""
    return anchored_prefix6(topo, mn).network_address + 1


def dual_stack(topo: Topology) -> None:
    """Refuses a dual-stack plane where the backbone carries no IPv6."""
    if topo.backbone6 is None:
        raise BaselineError(f"an IPv6 anchored plane needs a dual-stack backbone; {topo.name} "
                            "has none (addressing.ipv6 with loopbacks and links)")


def tunnel_address6(topo: Topology, node: str) -> str:
    """A tunnel end's IPv6 address: its link-local, from its fixed tunnel MAC."""
    return eui64_link_local(tunnel_mac(topo, node))


def _tunnel_net() -> IPv4Network:
    return IPv4Network(str(TUNNEL["net"]))


def tunnel_address(topo: Topology, node: str) -> str:
    """The anchor is .1 in the tunnel subnet; AR number i is .2+i."""
    block = Allocator(Block("anchored-tunnel", _tunnel_net()))
    if node == anchor_node(topo).name:
        return str(block.host(1, node))
    ars = [a.name for a in topo.by_role(Role.AR)]
    return str(block.host(2 + ars.index(node), f"the anchored tunnel address of {node}"))


def tunnel_mac(topo: Topology, node: str) -> str:
    if node == anchor_node(topo).name:
        return "02:fa:04:00:00:01"
    index = [a.name for a in topo.by_role(Role.AR)].index(node) + 1
    return f"02:fa:04:01:{index >> 8:02x}:{index & 0xFF:02x}"


def _anchor_underlay(topo: Topology) -> str:
    return str(anchor_node(topo).interfaces[0].address)


def _tunnel_common(topo: Topology, node: str) -> dict[str, Any]:
    return {"name": node, "dev": TUNNEL["dev"], "vni": TUNNEL["vni"], "port": TUNNEL["port"],
            "mtu": TUNNEL["mtu"], "address": tunnel_address(topo, node),
            "prefixlen": _tunnel_net().prefixlen, "mac": tunnel_mac(topo, node)}


def pgw_data(topo: Topology, ipv6: bool = False) -> dict[str, Any]:
    pgw = anchor_node(topo).name
    return {
        **_tunnel_common(topo, pgw),
        "underlay": _anchor_underlay(topo),
        "ars": [{"name": a.name, "address": tunnel_address(topo, a.name),
                 "address6": tunnel_address6(topo, a.name) if ipv6 else "",
                 "mac": tunnel_mac(topo, a.name), "underlay": str(a.loopback)}
                for a in topo.by_role(Role.AR)],
    }


def enb_data(topo: Topology, ar: Node, ipv6: bool = False) -> dict[str, Any]:
    pgw = anchor_node(topo).name
    return {
        **_tunnel_common(topo, ar.name),
        "underlay": str(ar.loopback),
        "anchor": {"name": pgw, "address": tunnel_address(topo, pgw),
                   "address6": tunnel_address6(topo, pgw) if ipv6 else "",
                   "mac": tunnel_mac(topo, pgw), "underlay": _anchor_underlay(topo)},
        "pool": str(ANCHOR_POOL),
        "pool6": str(ANCHOR_POOL6) if ipv6 else "",
        "access": access_ifname(ar.name),
        "table": UPLINK_TABLE,
        "rule_priority": UPLINK_RULE_PRIORITY,
    }


def routes_data(topo: Topology, ipv6: bool = False) -> dict[str, dict[str, Any]]:
    """Static routes for the anchored pool: the Internet router sends it to the anchor's core
    router, which sends it to the anchor (the pool is never announced in the AS's BGP); the
    IPv6 pool the same way, over the backbone's IPv6 link addresses."""
    pgw = anchor_node(topo)
    core = pgw.interfaces[0].peer
    inet = topo.by_role(Role.INET)[0]
    if not any(i.peer == core for i in inet.interfaces):
        raise BaselineError(f"the anchor's router {core} has no link to {inet.name}")
    core_side = next(i for i in topo.nodes[core].interfaces if i.peer == inet.name)
    out: dict[str, dict[str, Any]] = {
        inet.name: {"name": inet.name,
                    "routes": [{"prefix": str(ANCHOR_POOL), "via": str(core_side.address)}]},
        core: {"name": core,
               "routes": [{"prefix": str(ANCHOR_POOL), "via": str(pgw.interfaces[0].address)}]},
    }
    if ipv6:
        dual_stack(topo)
        bb = topo.backbone6
        assert bb is not None
        out[inet.name]["routes"].append({"prefix": str(ANCHOR_POOL6),
                                         "via": str(bb.end(core, inet.name).ip)})
        out[core]["routes"].append({"prefix": str(ANCHOR_POOL6),
                                    "via": str(bb.end(pgw.name, core).ip)})
    return out


def ue_data(topo: Topology, mn: str, ipv6: bool = False) -> dict[str, Any]:
    return {"name": mn, "ifname": f"{mn}-eth0", "address": str(anchored_address(topo, mn)),
            "address6": str(anchored_address6(topo, mn)) if ipv6 else ""}


def render_baseline(topo: Topology, ipv6: bool = False) -> dict[str, dict[str, str]]:
    """Every baseline-mode file, per node: {node: {kind: text}}; kinds are the templates'
    (an AR's "ip6" is its IPv6 uplink rule, for `ip -6 -batch`)."""
    if ipv6:
        dual_stack(topo)
    pgw = anchor_node(topo).name
    out: dict[str, dict[str, str]] = {
        pgw: {"ip": render("baseline/pgw.batch.j2", pgw_data(topo, ipv6)),
              "bridge": render("baseline/pgw.bridge.j2", pgw_data(topo, ipv6))},
    }
    for ar in topo.by_role(Role.AR):
        data = enb_data(topo, ar, ipv6)
        out[ar.name] = {"ip": render("baseline/enb.batch.j2", data),
                        "nft": render("baseline/enb.nft.j2", data)}
        if ipv6:
            out[ar.name]["ip6"] = render("baseline/enb6.batch.j2", data)
    for node, data in routes_data(topo, ipv6).items():
        out.setdefault(node, {})["ip"] = render("baseline/routes.batch.j2", data)
    for mn in topo.mobiles:
        out[mn] = {"ip": render("baseline/ue.batch.j2", ue_data(topo, mn, ipv6))}
    return out


def mme_config(topo: Topology, events: Path, ipv6: bool = False) -> dict[str, Any]:
    return {
        "port": epc.MME_PORT,
        # The HSS runs beside the MME; the home distance is laid on this flow (shaping.py).
        "hss": "127.0.0.1",
        "hss_port": epc.HSS_PORT,
        "tunnel_dev": TUNNEL["dev"],
        "cells": {a.name: {"endpoint": tunnel_address(topo, a.name), "enb": str(a.loopback),
                           **({"endpoint6": tunnel_address6(topo, a.name)} if ipv6 else {})}
                  for a in topo.by_role(Role.AR)},
        "subscribers": {mn: str(anchored_address(topo, mn)) for mn in topo.mobiles},
        # A dual-stack session's /64 per subscriber; none: IPv4 sessions only.
        "subscribers6": {mn: str(anchored_prefix6(topo, mn)) for mn in topo.mobiles}
        if ipv6 else {},
        "events": str(events),
    }


# --------------------------------------------------------------------------- the plane


class AnchorRole(ForegroundDaemon):
    """One process of the anchored plane (agents/anchor.py): the HSS and MME on the anchor,
    an eNB relay per AR, a UE per MN."""

    kind: ClassVar[str]
    port: ClassVar[int | None] = None  # the UDP port it listens on, for readiness

    def __init__(self, node: str, plane_dir: Path, config: dict[str, Any]) -> None:
        super().__init__(node, plane_dir, json.dumps(config, indent=1, sort_keys=True) + "\n")

    def file(self, name: str) -> Path:
        return self.rundir / f"{self.node}.{name}"

    @property
    def conf_path(self) -> Path:
        return self.file(f"{self.kind}.json")

    @property
    def pid_path(self) -> Path:
        return self.file(f"{self.kind}.pid")

    @property
    def log_path(self) -> Path:
        return self.file(f"{self.kind}.log")

    @property
    def marker(self) -> str:
        return str(self.conf_path)  # the plane's files are not per node: the config is

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "agents.anchor", self.kind, "--config",
                str(self.conf_path), "--events", str(self.file(f"{self.kind}.events"))]

    def check_cmd(self) -> list[str]:
        return [*self.argv(), "--check"]

    def ready(self, ex: NodeExec) -> bool:
        self.exited()
        if self.port is None:
            return self.alive()
        out = ex.run(["ss", "-lun"]).stdout
        return any(f":{self.port}" + sep in out for sep in (" ", "\t"))

    def kill(self) -> None:
        """The anchor fails: SIGKILL, no goodbye (by pid, checked as for a stop)."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Hss(AnchorRole):
    kind = "hss"
    port = epc.HSS_PORT


class Mme(AnchorRole):
    kind = "mme"
    after = ("hss",)
    port = epc.MME_PORT


class Enb(AnchorRole):
    kind = "enb"
    after = ("mme",)
    port = epc.ENB_PORT


class Ue(AnchorRole):
    kind = "ue"
    after = ("enb",)

    def ready(self, ex: NodeExec) -> bool:
        super().ready(ex)
        try:
            request(self.file("ue.sock"), {"cmd": "status"}, timeout=2)
        except ControlError:
            return False
        return True


ROLES: dict[str, type[Daemon]] = {c.kind: c for c in (Hss, Mme, Enb, Ue)}


class AnchoredPlane:
    """Turns the baseline mode on in a running lab; every process it starts is a lab
    background process (pid file, stopped with the lab or by `flatarch down`)."""

    def __init__(self, lab: Lab, *, progress: Progress | None = None,
                 ipv6: bool = False) -> None:
        self.lab = lab
        self.topo = lab.topo
        self.ipv6 = ipv6  # dual-stack sessions: an anchored /64 per MN beside its address
        if ipv6:
            dual_stack(self.topo)
        self.pgw = anchor_node(self.topo).name
        self.home_rtt_ms = self.topo.home_rtt_ms  # in the links, not in the HSS
        self.progress = progress or lab.progress
        self.dir = lab.dir / "baseline"
        self.roles: dict[str, list[Daemon]] = {}
        self.killed = False
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> AnchoredPlane:
        try:
            self.start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def path(self, node: str, name: str) -> Path:
        return self.dir / f"{node}.{name}"

    def start(self) -> None:
        lab, topo = self.lab, self.topo
        if not lab.mobiles:
            raise BaselineError("the baseline needs a topology with mobile nodes")
        self.dir.mkdir(parents=True, exist_ok=True)
        files = render_baseline(topo, self.ipv6)
        for node, kinds in files.items():
            for kind, text in kinds.items():
                self.path(node, f"{kind}.batch").write_text(text)
        self.progress(f"baseline: anchor {self.pgw}, tunnels to "
                      f"{len(topo.by_role(Role.AR))} ARs, home RTT {self.home_rtt_ms:g} ms")
        pgw = lab.execs[self.pgw]
        # The anchor forwards between its tunnel and its uplink; a host has neither by default.
        for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0", "net.ipv4.icmp_ratelimit=0",
                    *(("net.ipv6.conf.all.forwarding=1", "net.ipv6.icmp.ratelimit=0")
                      if self.ipv6 else ())):
            pgw.check(["sysctl", "-q", "-w", key])
        for node, kinds in files.items():
            ex = lab.execs[node]
            ex.check(["ip", "-batch", str(self.path(node, "ip.batch"))])
            if "ip6" in kinds:
                ex.check(["ip", "-6", "-batch", str(self.path(node, "ip6.batch"))])
            if "bridge" in kinds:
                ex.check(["bridge", "-batch", str(self.path(node, "bridge.batch"))])
            if "nft" in kinds:
                ex.check(["nft", "-f", str(self.path(node, "nft.batch"))])
        keys = {mn: os.urandom(16).hex() for mn in lab.mobiles}
        roles: dict[str, list[Daemon]] = {self.pgw: [
            Hss(self.pgw, self.dir, {"port": epc.HSS_PORT, "subscribers": keys}),
            Mme(self.pgw, self.dir, mme_config(topo, self.path(self.pgw, "mme.events"),
                                               self.ipv6)),
        ]}
        for ar in topo.by_role(Role.AR):
            roles[ar.name] = [Enb(ar.name, self.dir, {
                "cell": ar.name, "mme": _anchor_underlay(topo), "mme_port": epc.MME_PORT})]
        for mn in lab.mobiles:
            roles[mn] = [Ue(mn, self.dir, {
                "imsi": mn, "key": keys[mn], "address": str(anchored_address(topo, mn)),
                "enb": ACCESS_GATEWAY, "enb_port": epc.ENB_PORT,
                "control": str(self.path(mn, "ue.sock")),
                "timeout_s": max(1.0, 3 * self.home_rtt_ms / 1000.0 + 0.5)})]
        # The same path as the lab's own daemons: dry-run every config, then start in the
        # declared order, each role until ready; stopped with the plane, or by `down`.
        for ds in roles.values():
            for d in ds:
                d.write()
                d.dry_run()
                self.lab._track(d.pid_path, d.marker)
        self._stack.callback(self._stop_roles)
        self.roles = roles
        self.lab.start_daemons(roles, classes=ROLES)

    def _stop_roles(self) -> None:
        for kind in stop_order(start_order(ROLES, ROLES), ROLES):
            for ds in self.roles.values():
                for d in ds:
                    if d.kind == kind:
                        d.stop()

    def role(self, node: str, kind: str) -> AnchorRole:
        d = next(d for d in self.roles.get(node, []) if d.kind == kind)
        assert isinstance(d, AnchorRole)
        return d

    # --- the procedures -----------------------------------------------------------------------

    def attach(self, mn: str) -> dict[str, Any]:
        """The UE attaches at whatever cell its radio is in now (initial attach or handoff)."""
        answer = MnControl(self.path(mn, "ue.sock")).request({"cmd": "attach"}, timeout=20)
        if not answer.get("ok"):
            raise BaselineError(f"{mn}: anchored attach failed: {answer.get('error')}")
        return answer

    def attach_all(self) -> None:
        for mn in self.lab.mobiles:
            self.attach(mn)

    def handoff(self, mn: str, ar: str) -> dict[str, Any]:
        """The radio moves; the UE attaches through the new AR's eNB; the MME authenticates it
        with the HSS and switches the anchor's bearer to the new AR."""
        radio = self.lab.radio
        if radio is None:
            raise BaselineError("the lab has no radio")
        previous = radio.where.get(mn)
        moved = radio.move(mn, ar)
        answer = self.attach(mn)
        return {"mn": mn, "from": previous, "to": ar, **moved, **answer}

    def procedures(self) -> list[dict[str, Any]]:
        return [e for e in read_events(self.path(self.pgw, "mme.events"))
                if e.get("ev") == "procedure"]

    def bearers(self, family: str = "-4") -> dict[str, str]:
        """The anchor's per-MN state now: anchored address (or, with "-6", /64) -> tunnel
        endpoint."""
        out = self.lab.execs[self.pgw].run(["ip", "-j", family, "route", "show", "dev",
                                            str(TUNNEL["dev"])]).stdout
        routes: list[dict[str, Any]] = json.loads(out or "[]")
        got: dict[str, str] = {}
        for r in routes:
            dst = str(r.get("dst", ""))
            with contextlib.suppress(ValueError):
                if family == "-6":
                    if ipaddress.IPv6Network(dst).subnet_of(ANCHOR_POOL6):
                        got[dst] = str(r.get("gateway", ""))
                elif "/" not in dst and ipaddress.IPv4Address(dst) in ANCHOR_POOL:
                    got[dst] = str(r.get("gateway", ""))
        return got

    def kill_anchor(self) -> float:
        """The anchor node fails: its processes die and its link goes down, so every bearer
        it held is gone with it (no standby anchor: that is Figure 1's single point)."""
        for kind in ("mme", "hss"):
            self.role(self.pgw, kind).kill()
        t = time.time()
        self.lab.execs[self.pgw].check(
            ["ip", "link", "set", anchor_node(self.topo).interfaces[0].name, "down"])
        self.killed = True
        return t


