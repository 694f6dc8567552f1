"""DNSSEC plane of the lab: BIND serves a private, signed DNS tree and Unbound validates it.

DnsPlane turns the topology and the identities into a plain data model, renders named.conf,
zone files and unbound.conf from Jinja2 templates, pre-generates each zone's KSK/ZSK (BIND's
dnssec-policy adopts them) and links the chain with DS records up to the lab root's key.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import jinja2

from agents import dns as adns
from agents.contract import NAMED_PORT
from topologies.lab import dnsplane6
from topologies.lab.daemons import Daemon, LabError, NodeExec, start_batch
from topologies.model import HOME_TLD, ISP_ZONE, Role, Topology
from topologies.render.configs import render as render_template
from topologies.render.identities import Identity

log = logging.getLogger(__name__)

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network


NS_NAME = f"ns.{ISP_ZONE}"
RESOLVER_PORT = 53
INFRA_TTL = 60  # SOA, NS, DS, DNSKEY, glue
RECORD_TTL = 5  # keys, nonces, addresses, PTRs: short so rollovers show within seconds
NEGATIVE_TTL = 5
TSIG_ALGORITHM = "hmac-sha256"
POLICY = "flatarch"
DNSSEC_ALGORITHM = "ECDSAP256SHA256"
# Issue 17: RRSIGs live two hours and are renewed with 30 minutes left, so an old but validly
# signed stapled answer is worthless after at most two hours (docs/dns.md, "Stapled proofs").
SIGNATURES_VALIDITY = "PT2H"
SIGNATURES_REFRESH = "PT30M"
SIGNATURES_JITTER = "PT10M"  # spreads expirations (BIND's default, 12 h, exceeds the validity)
POLICY_FILE = "policy.conf"
QUERY_LOG = "named.queries.log"  # every query reaching BIND (topologies/analysis/dnscount.py)
NAMED_LOG = "named.log"  # BIND's own log: its updates among it (dnscount.parse_update_log)
# The resolver's counters a scenario reads (unbound-control stats_noreset), cumulative.
UNBOUND_COUNTERS = ("total.num.queries", "total.num.cachemiss", "total.num.cachehits")



def _policy() -> dict[str, Any]:
    return {"name": POLICY, "algorithm": DNSSEC_ALGORITHM.lower(),
            "dnskey_ttl": INFRA_TTL, "max_zone_ttl": INFRA_TTL, "propagation_delay": 60,
            "signatures_validity": SIGNATURES_VALIDITY, "signatures_refresh": SIGNATURES_REFRESH,
            "signatures_jitter": SIGNATURES_JITTER}


class DnsPlaneError(LabError):
    """The DNS plane cannot be built from this input, or its tools failed."""


@dataclass(frozen=True)
class DsRecord:
    key_tag: int
    algorithm: int
    digest_type: int
    digest: str

    def data(self) -> dict[str, Any]:
        return {
            "key_tag": self.key_tag,
            "algorithm": self.algorithm,
            "digest_type": self.digest_type,
            "digest": self.digest,
        }


@dataclass
class _Zone:
    name: str  # absolute, trailing dot; "." for the root
    kind: str  # root, tld, isp, home, rev-parent, rev-pool
    parent: str | None
    records: list[dict[str, Any]]
    grants: list[dict[str, Any]]

    @property
    def label(self) -> str:
        return "root" if self.name == "." else self.name.rstrip(".")

    @property
    def file(self) -> str:
        return f"{self.label}.db"


def _fqdn(name: str) -> str:
    return adns.normalize(name) + "."


def _rec(owner: str, rtype: str, ttl: int, **fields: Any) -> dict[str, Any]:
    return {"owner": owner, "type": rtype, "ttl": ttl, **fields}


def render(template: str, data: Mapping[str, Any]) -> str:
    try:
        return render_template(template, data)
    except jinja2.TemplateError as exc:
        raise DnsPlaneError(f"{template}: {exc}") from exc


_SAFE_TXT = re.compile(r"^[A-Za-z0-9=.:_-]*$")
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9-]{0,61}[a-z0-9])?$")


def _check_name(name: str, where: str) -> str:
    canon = adns.normalize(name)
    if len(canon) > 253 or not all(_LABEL.match(lb) for lb in canon.split(".")):
        raise DnsPlaneError(f"{where}: {name!r} is not a valid lowercase DNS name")
    return canon


SIGNING_S_PER_IDENTITY = 0.02  # the signed zones' start-up, on top of Named.ready_timeout


class Named(Daemon):
    """BIND 9, authoritative only; daemonizes and writes the pid file named.conf names.

    Ready once every zone in ``signed_zones`` is served with signatures, so that Unbound,
    started next, never primes its trust anchor against a half-signed tree.
    """

    kind = "named"
    # After the routing plane, so that zone signing overlaps OSPF and BGP convergence.
    after = ("zebra", "ospfd", "bgpd", "exabgp", "dnsmasq")
    ready_timeout = 60.0

    def __init__(
        self, node: str, rundir: Path, config: str, signed_zones: Sequence[str] = (),
        port: int = NAMED_PORT, identities: int = 0,
    ):
        super().__init__(node, rundir, config)
        self.signed_zones = list(signed_zones)
        self.port = port
        # BIND signs a zone in small increments: 10,000 population MNs (their records and
        # TSIG keys) took about 120 s to serve signed here, 3,000 under 60 s.
        self.ready_timeout = Named.ready_timeout + SIGNING_S_PER_IDENTITY * identities

    def serving_signed(self, ex: NodeExec) -> set[str]:
        """Zones whose SOA this BIND already serves with an RRSIG."""
        if not self.signed_zones:
            return set()
        argv = ["dig", "@127.0.0.1", "-p", str(self.port), "+norec", "+dnssec", "+tries=1",
                "+time=1", "+noall", "+answer"]
        for z in self.signed_zones:
            argv += [z, "SOA"]
        res = ex.run(argv, timeout=30)
        seen = set()
        for line in res.stdout.splitlines():
            f = line.split()
            if len(f) > 4 and f[3] == "RRSIG" and f[4] == "SOA":
                seen.add(f[0].lower())
        return seen

    def ready(self, ex: NodeExec) -> bool:
        if not self.alive():
            raise LabError(f"{self.node}/named exited during start-up: {self.log_tail()}")
        return self.serving_signed(ex) >= set(self.signed_zones)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"no log at {self.log_path}"
        return " | ".join(text.strip().splitlines()[-lines:])

    def check_cmd(self) -> list[str]:
        return ["named-checkconf", "-z", str(self.conf_path)]

    def start_cmd(self) -> list[str]:
        # One worker thread: the machine is small and shared, the load is tiny.
        return ["named", "-4", "-n", "1", "-c", str(self.conf_path)]


class Unbound(Daemon):
    """Unbound, the validating recursive resolver every lab node asks; ready once it
    validates every lab zone (``validates``, set by the plane that knows the zones)."""

    kind = "unbound"
    after = ("named",)
    ready_timeout = 60.0

    def __init__(self, node: str, rundir: Path, config: str) -> None:
        super().__init__(node, rundir, config)
        self.validates: Callable[[NodeExec], bool] = lambda ex: True

    def ready(self, ex: NodeExec) -> bool:
        return self.alive() and self.validates(ex)

    def check_cmd(self) -> list[str]:
        return ["unbound-checkconf", str(self.conf_path)]

    def start_cmd(self) -> list[str]:
        return ["unbound", "-c", str(self.conf_path)]


class DnsPlane:
    """Every zone, key and config of the lab's DNS, and the two daemons on the dns node."""

    def __init__(self, topo: Topology, rundir: Path, identities: Sequence[Identity]):
        self.topo = topo
        self.rundir = Path(rundir)
        self.node = topo.service("dns")
        if len(self.node.interfaces) != 1:
            raise DnsPlaneError(f"dns node {self.node.name} must have exactly one interface")
        self.address: IPv4Address = self.node.interfaces[0].address
        self.identities: dict[str, Identity] = {}
        for ident in identities:
            name = _check_name(ident.name, f"identity {ident.name!r}")
            if name in self.identities:
                raise DnsPlaneError(f"identity {name} given twice")
            self._check_identity(name, ident)
            self.identities[name] = ident
        # Only MNs with a zone of their own can shadow one another; a population's are all
        # one label under the home domain (checked in _check_identity).
        mns = [n for n, i in self.identities.items() if i.role == "mn" and not i.bulk]
        for a in mns:
            for b in mns:
                if b.endswith("." + a):
                    raise DnsPlaneError(f"mn identity {b} lies inside mn {a}'s home zone")
        self._zones = self._layout()
        self._tsig = {
            n: base64.b64encode(secrets.token_bytes(32)).decode() for n in self.tsig_names
        }
        self._served: dict[str, str] = {}  # zone -> file served verbatim (tamper tests)
        self._ds: dict[str, DsRecord] | None = None
        self._named: Named | None = None
        self._unbound: Unbound | None = None

    # -- naming ---------------------------------------------------------------------------

    def identity_name(self, role: str, node_name: str) -> str:
        """The DNS name of a lab entity: ARs and HAs under the ISP zone, MNs under example."""
        label = _check_name(node_name, f"{role} node name")
        if "." in label:
            raise DnsPlaneError(f"{role} node name {node_name!r} must be a single label")
        if role in ("ar", "ha"):
            return f"{label}.{ISP_ZONE}"
        if role == "mn":
            return f"{label}.{HOME_TLD}"
        raise DnsPlaneError(f"unknown identity role {role!r} (ar, ha, mn)")

    def _check_identity(self, name: str, ident: Identity) -> None:
        if ident.role in ("ar", "ha"):
            if not name.endswith("." + ISP_ZONE) or name.count(".") != ISP_ZONE.count(".") + 1:
                raise DnsPlaneError(f"{ident.role} identity {name} must be <label>.{ISP_ZONE}")
        elif ident.role == "mn":
            if not name.endswith("." + HOME_TLD):
                raise DnsPlaneError(f"mn identity {name} must be under {HOME_TLD}.")
            if ident.bulk and name.count(".") != HOME_TLD.count(".") + 1:
                raise DnsPlaneError(f"population identity {name} must be <label>.{HOME_TLD}")
        else:
            raise DnsPlaneError(f"identity {name}: unknown role {ident.role!r}")
        try:
            if adns.suite_of_spki(ident.spki) is not ident.suite:
                raise DnsPlaneError(f"identity {name}: SPKI does not match suite {ident.suite}")
        except adns.DnsRecordError as exc:
            raise DnsPlaneError(f"identity {name}: {exc}") from None
        if (ident.nonce is None) != (ident.nonce_expires is None):
            raise DnsPlaneError(f"identity {name}: nonce and nonce_expires go together")

    @property
    def ar_names(self) -> list[str]:
        return [self.identity_name("ar", n.name) for n in self.topo.by_role(Role.AR)]

    @property
    def tsig_names(self) -> list[str]:
        """Every name that holds a TSIG key: every identity and every AR of the topology."""
        return sorted(set(self.identities) | set(self.ar_names))

    def tsig_key_for(self, name: str) -> tuple[str, str, str]:
        """(key name, base64 secret, algorithm) allowed to update ``name``'s records."""
        canon = adns.normalize(name)
        if canon not in self._tsig:
            raise DnsPlaneError(f"no TSIG key for {canon}: not an identity or AR of this lab")
        return canon, self._tsig[canon], TSIG_ALGORITHM

    def tsig_path(self, name: str) -> Path:
        """JSON key file for agents in lab nodes (``python -m agents.dns --tsig``)."""
        return self.rundir / "tsig" / f"{adns.normalize(name)}.json"

    # -- addresses ------------------------------------------------------------------------

    resolver_port: ClassVar[int] = RESOLVER_PORT
    update_port: ClassVar[int] = NAMED_PORT

    @property
    def resolver_address(self) -> IPv4Address:
        """Where lab nodes send queries (Unbound, port 53) and signed dynamic updates (BIND,
        ``update_port``): both listen on the dns host's interface."""
        return self.address

    update_address = resolver_address

    # -- zone layout ----------------------------------------------------------------------

    def _pool_zones(self) -> list[tuple[str, str, IPv4Network]]:
        """(reverse zone, AR node, /24) for every /24 of every AR pool (byte boundaries)."""
        out = []
        for ar in self.topo.by_role(Role.AR):
            if ar.pool is None:
                raise DnsPlaneError(f"{ar.name} has no address pool")
            if ar.pool.prefixlen > 24:
                raise DnsPlaneError(
                    f"{ar.name} pool {ar.pool}: reverse zones need pools of /24 or shorter"
                )
            for net24 in ar.pool.subnets(new_prefix=24):
                octets = str(net24.network_address).split(".")[:3]
                out.append((".".join(reversed(octets)) + ".in-addr.arpa.", ar.name, net24))
        return out

    def _address_of(self, ident: Identity) -> IPv4Address | None:
        if ident.address is not None:
            return ident.address
        label = adns.normalize(ident.name).split(".")[0]
        node = self.topo.nodes.get(label)
        if node is None:
            return None
        if ident.role == "ar" and node.role is Role.AR:
            return node.pool_gateway
        if ident.role == "ha" and node.service == "ha":
            return node.interfaces[0].address
        return None

    def _key_records(self, ident: Identity) -> list[dict[str, Any]]:
        owner = adns.key_owner(ident.name) + "."
        out = [
            _rec(owner, "TLSA", RECORD_TTL, usage=adns.TLSA_USAGE, selector=adns.TLSA_SELECTOR,
                 matching=adns.TLSA_MATCHING, data=ident.spki.hex().upper())
        ]
        if ident.nonce is not None and ident.nonce_expires is not None:
            out.append(_rec(owner, "TXT", RECORD_TTL,
                            strings=adns.nonce_strings(ident.nonce, ident.nonce_expires)))
        return out

    def _layout(self) -> dict[str, _Zone]:
        """Every zone with its records, minus the DS records that need generated keys."""
        ns = NS_NAME + "."
        zones: dict[str, _Zone] = {}

        def add(name: str, kind: str, parent: str | None) -> _Zone:
            z = _Zone(name, kind, parent, [_rec(name, "NS", INFRA_TTL, target=ns)], [])
            zones[name] = z
            return z

        root = add(".", "root", None)
        add("test.", "tld", ".")
        add(HOME_TLD + ".", "tld", ".")
        isp = add(ISP_ZONE + ".", "isp", "test.")
        glue = _rec(ns, "A", INFRA_TTL, address=str(self.address))
        # Glue for the delegations whose name server lies below the cut (test., isp.test.).
        root.records.append(glue)
        zones["test."].records.append(glue)
        isp.records.append(glue)

        mns = sorted(n for n, i in self.identities.items() if i.role == "mn")
        home = zones[HOME_TLD + "."]
        for name in mns:
            ident = self.identities[name]
            # A population MN's records go into its home domain's one zone (issue 15).
            z = home if ident.bulk else add(name + ".", "home", HOME_TLD + ".")
            if ident.address is not None:
                z.records.append(_rec(name + ".", "A", RECORD_TTL, address=str(ident.address)))
                z.records.append(_rec(adns.addrs_owner(name) + ".", "TXT", RECORD_TTL,
                                      strings=adns.order_strings([ident.address])))
            six = dnsplane6.aaaa(self.topo, name.split(".")[0])
            if six is not None:
                # At the MN's own name: a population MN's zone is its home domain's.
                z.records.append(_rec(name + ".", "AAAA", RECORD_TTL, address=six))
            z.records.extend(self._key_records(ident))
            if ident.bulk:
                continue
            # The MN controls its forward name (both families: a DHCPv6 MN writes its AAAA),
            # its address order and its own key.
            z.grants = [
                {"key": name + ".", "rule": "name", "target": name + ".",
                 "types": ["A", "AAAA"]},
                {"key": name + ".", "rule": "name", "target": adns.addrs_owner(name) + ".",
                 "types": ["TXT"]},
                {"key": name + ".", "rule": "name", "target": adns.key_owner(name) + ".",
                 "types": ["TLSA", "TXT"]},
            ]
        if any(self.identities[n].bulk for n in mns):
            # One rule for the whole population: each MN's key may change its own name and
            # the names below it (its address order and key), nothing else in the zone.
            home.grants = [{"key": "*", "rule": "selfsub", "target": ".",
                            "types": ["A", "AAAA", "TLSA", "TXT"]}]

        auths = sorted(set(self.ar_names) | {n for n, i in self.identities.items()
                                              if i.role in ("ar", "ha")})
        for name in auths:
            auth = self.identities.get(name)
            addr: IPv4Address | None
            if auth is not None:
                addr = self._address_of(auth)
                isp.records.extend(self._key_records(auth))
            else:
                addr = self.topo.nodes[name.split(".")[0]].pool_gateway
            if addr is not None:
                isp.records.append(_rec(name + ".", "A", RECORD_TTL, address=str(addr)))
            # Authenticators roll their own key and refresh their own nonce.
            isp.grants.append({"key": name + ".", "rule": "name",
                               "target": adns.key_owner(name) + ".", "types": ["TLSA", "TXT"]})
        isp.records.sort(key=lambda r: (r["owner"] != isp.name, r["owner"], r["type"]))

        pools = self._pool_zones()
        parents = sorted({".".join(z.split(".")[2:]) for z, _, _ in pools})
        for p in parents:
            add(p, "rev-parent", ".")
        for zname, ar, net24 in pools:
            z = add(zname, "rev-pool", ".".join(zname.split(".")[2:]))
            ar_name = self.identity_name("ar", ar)
            gw = self.topo.nodes[ar].pool_gateway
            if gw in net24:
                z.records.append(_rec(gw.reverse_pointer + ".", "PTR", RECORD_TTL,
                                      target=ar_name + "."))
            # An MN provisioned with an address was assigned it by this pool's AR.
            for mn_name, ident in sorted(self.identities.items()):
                if ident.role == "mn" and ident.address is not None and ident.address in net24:
                    z.records.append(_rec(ident.address.reverse_pointer + ".", "PTR",
                                          RECORD_TTL, target=mn_name + "."))
            # An AR writes PTRs only inside the pool it assigns from.
            z.grants = [{"key": ar_name + ".", "rule": "zonesub", "target": "",
                         "types": ["PTR"]}]
        rev6 = dnsplane6.reverse_zones(self.topo, [n.split(".")[0] for n in mns])
        if rev6 is not None:  # issue 18: the same in ip6.arpa, on nibble boundaries
            add(rev6.parent, "rev-parent", ".")
            for pz in rev6.pools:
                z = add(pz.name, "rev-pool", rev6.parent)
                z.records += [_rec(owner, "PTR", RECORD_TTL,
                                   target=self.identity_name(
                                       "ar" if node == pz.ar else "mn", node) + ".")
                              for owner, node in pz.ptrs]
                z.grants = [{"key": self.identity_name("ar", pz.ar) + ".", "rule": "zonesub",
                             "target": "", "types": ["PTR"]}]
        return zones

    @property
    def zone_names(self) -> list[str]:
        return list(self._zones)

    def zone_of(self, name: str) -> str:
        """The lab zone that holds ``name`` (deepest match), absolute with trailing dot."""
        fq = _fqdn(name) if name != "." else "."
        best = "."
        for z in self._zones:
            if z != "." and (fq == z or fq.endswith("." + z)) and len(z) > len(best):
                best = z
        return best

    # -- data model and rendering ---------------------------------------------------------

    def _paths(self) -> dict[str, str]:
        return {
            "named_dir": str(self.rundir / "named"),
            "keys": str(self.rundir / "named" / "keys"),
            "named_pid": str(self.rundir / "named.pid"),
            "named_log": str(self.rundir / NAMED_LOG),
            "named_queries": str(self.rundir / QUERY_LOG),
            "unbound_dir": str(self.rundir / "unbound"),
            "unbound_pid": str(self.rundir / "unbound.pid"),
            "unbound_log": str(self.rundir / "unbound.log"),
            "unbound_ctl": str(self.rundir / "unbound.ctl"),
        }

    def _access(self) -> list[str]:
        nets: set[IPv4Network] = {IPv4Network("127.0.0.0/8"), self.topo.managed,
                                  self.topo.cn_network}
        for link in self.topo.links:
            nets.add(link.network)
        for node in self.topo.nodes.values():
            if node.loopback is not None:
                nets.add(IPv4Network(f"{node.loopback}/32"))
        return [str(n) for n in ipaddress.collapse_addresses(sorted(nets))]

    def model(self, ds: Mapping[str, DsRecord], tsig: Mapping[str, str]) -> dict[str, Any]:
        """The plain data every template reads; ``ds`` maps zone -> its KSK's DS."""
        missing = [z for z in self._zones if z not in ds]
        if missing:
            raise DnsPlaneError(f"no DS for zones {missing}")
        p = self._paths()
        zones = []
        for z in self._zones.values():
            records = list(z.records)
            for child in self._zones.values():
                if child.parent == z.name:
                    records.append(_rec(child.name, "NS", INFRA_TTL, target=NS_NAME + "."))
                    records.append(_rec(child.name, "DS", INFRA_TTL, **ds[child.name].data()))
            for r in records:
                for s in r.get("strings", []):
                    if not _SAFE_TXT.match(s):
                        raise DnsPlaneError(f"TXT string {s!r} at {r['owner']} needs quoting")
            rank = {"NS": 0, "A": 1, "DS": 2}
            # Apex first, then by owner: a stable, readable zone file.
            records.sort(key=lambda r: (r["owner"] != z.name, r["owner"],
                                        rank.get(r["type"], 3), r["type"]))
            zones.append({
                "origin": z.name,
                "file": z.file,
                "ttl": INFRA_TTL,
                "soa": {"ttl": INFRA_TTL, "mname": NS_NAME + ".",
                        "rname": f"hostmaster.{ISP_ZONE}.", "serial": 1, "refresh": 3600,
                        "retry": 600, "expire": 86400, "minimum": NEGATIVE_TTL},
                "records": records,
            })
        named_zones = []
        for z in self._zones.values():
            served = self._served.get(z.name)
            named_zones.append({
                "name": z.name,
                "file": served or z.file,
                "signed": served is None,
                "key_directory": f"{p['keys']}/{z.label}",
                "grants": z.grants if served is None else [],
            })
        anchor = ds["."]
        return {
            "policy": _policy(),
            "tsig": [{"name": n + ".", "algorithm": TSIG_ALGORITHM, "secret": tsig[n]}
                     for n in self.tsig_names],
            "named": {
                "directory": p["named_dir"],
                "pid_file": p["named_pid"],
                "log_file": p["named_log"],
                "query_log": p["named_queries"],
                "session_keyfile": f"{p['named_dir']}/session.key",
                "port": NAMED_PORT,
                "listen": ["127.0.0.1", str(self.address)],
                "zones": named_zones,
            },
            "zones": zones,
            "unbound": {
                "directory": p["unbound_dir"],
                "pid_file": p["unbound_pid"],
                "log_file": p["unbound_log"],
                "control_socket": p["unbound_ctl"],
                "interfaces": [str(self.address), "127.0.0.1"],
                "port": RESOLVER_PORT,
                "access": self._access(),
                "trust_anchor": {"owner": ".", **anchor.data()},
                "bogus_ttl": 2,
                "max_ttl": 300,
                "max_negative_ttl": NEGATIVE_TTL,
                # Names Unbound would otherwise answer from its built-in local zones.
                "nodefault": sorted({z for z in self._zones
                                     if z in ("test.",) or z.count(".") == 3
                                     and z.endswith(".in-addr.arpa.")}
                                    | ({dnsplane6.DOC_REVERSE} if any(
                                        z.endswith(dnsplane6.DOC_REVERSE) for z in self._zones)
                                       else set())),
                # With a home distance, the home zones' server is asked on this node's own
                # address, whose flow the delay line holds (topologies/lab/shaping.py).
                "stubs": [{"name": z, "address": f"{self._stub_address(zone)}@{NAMED_PORT}"}
                          for z, zone in self._zones.items()],
            },
        }

    def _stub_address(self, zone: _Zone) -> str:
        far = zone.kind == "home" and self.topo.home_link.delayed
        return str(self.address) if far else "127.0.0.1"

    def render_all(self, ds: Mapping[str, DsRecord], tsig: Mapping[str, str]) -> dict[str, str]:
        """Every rendered file, keyed by path relative to the run directory."""
        m = self.model(ds, tsig)
        out = {
            "named.conf": render("bind/named.conf.j2", m),
            POLICY_FILE: render("bind/policy.conf.j2", m),
            "unbound.conf": render("unbound/unbound.conf.j2", m),
        }
        for z in m["zones"]:
            out[f"named/{z['file']}"] = render("bind/zone.db.j2", {"zone": z})
        return out

    # -- keys -----------------------------------------------------------------------------

    @staticmethod
    def _tool(cmd: Sequence[str]) -> str:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DnsPlaneError(f"{cmd[0]}: {exc}") from exc
        if res.returncode != 0:
            raise DnsPlaneError(f"{' '.join(cmd)}: {(res.stderr or res.stdout).strip()}")
        return res.stdout

    def _keygen(self, zone: _Zone, keydir: Path) -> DsRecord:
        keydir.mkdir(parents=True, exist_ok=True)
        # The policy's one combined signing key, with its role in a .state file, so that
        # named adopts it rather than retiring it and making its own.
        policy = self.rundir / POLICY_FILE
        ksk = self._tool(["dnssec-keygen", "-q", "-k", POLICY, "-l", str(policy),
                          "-K", str(keydir), zone.name]).split()[-1]
        # SHA-256 digest only (-2): what the parent publishes and Unbound trusts.
        out = self._tool(["dnssec-dsfromkey", "-2", str(keydir / f"{ksk}.key")]).split()
        try:
            i = out.index("DS")
            return DsRecord(int(out[i + 1]), int(out[i + 2]), int(out[i + 3]), out[i + 4])
        except (ValueError, IndexError):
            raise DnsPlaneError(f"cannot parse dnssec-dsfromkey output {out!r}") from None

    # -- lifecycle ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Keys, DS, every config and zone file, TSIG key files; dry-run both daemons."""
        for tool in ("named", "unbound", "dnssec-keygen", "dnssec-dsfromkey", "named-checkconf",
                     "unbound-checkconf"):
            if shutil.which(tool) is None:
                raise DnsPlaneError(f"{tool} not found: install bind9, bind9-utils, unbound")
        ctl = self.rundir / "unbound.ctl"
        if len(str(ctl)) > 100:
            raise DnsPlaneError(f"run directory too long for a unix socket path: {ctl}")
        self.rundir.mkdir(parents=True, exist_ok=True)
        for sub in ("named", "unbound", "tsig"):
            shutil.rmtree(self.rundir / sub, ignore_errors=True)
            (self.rundir / sub).mkdir()
        self._served.clear()
        keys = self.rundir / "named" / "keys"
        (self.rundir / POLICY_FILE).write_text(render("bind/policy.conf.j2",
                                                      {"policy": _policy()}))
        self._ds = {z.name: self._keygen(z, keys / z.label) for z in self._zones.values()}
        for name in self.tsig_names:
            path = self.tsig_path(name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({"name": name, "secret": self._tsig[name],
                           "algorithm": TSIG_ALGORITHM}, fh)
        self._write()
        (self.rundir / "trust-anchor.ds").write_text(
            ". IN DS {key_tag} {algorithm} {digest_type} {digest}\n".format(
                **self._ds["."].data())
        )
        log.info("dns plane prepared in %s: %d zones", self.rundir, len(self._zones))

    def _write(self) -> None:
        if self._ds is None:
            raise DnsPlaneError("prepare() has not run")
        files = self.render_all(self._ds, self._tsig)
        signed = [z for z in self._zones if z not in self._served]
        self._named = Named(self.node.name, self.rundir, files.pop("named.conf"), signed,
                            identities=len(self.identities))
        self._unbound = Unbound(self.node.name, self.rundir, files.pop("unbound.conf"))
        self._unbound.validates = lambda ex: self.validated_zones(ex) == set(self._zones)
        for rel, text in files.items():
            (self.rundir / rel).write_text(text)
        for d in (self._named, self._unbound):
            d.write()
            d.dry_run()

    def daemons(self) -> list[Daemon]:
        """Start order: BIND first (Unbound's only upstream), then Unbound."""
        if self._named is None or self._unbound is None:
            raise DnsPlaneError("prepare() has not run")
        return [self._named, self._unbound]

    @property
    def named(self) -> Named:
        if self._named is None:
            raise DnsPlaneError("prepare() has not run")
        return self._named

    @property
    def unbound(self) -> Unbound:
        if self._unbound is None:
            raise DnsPlaneError("prepare() has not run")
        return self._unbound

    def unbound_stats(self, ex: NodeExec) -> dict[str, float]:
        """The resolver's UNBOUND_COUNTERS now (``ex``: the DNS node), cumulative since it
        started; empty if unbound-control does not answer."""
        res = ex.run(["unbound-control", "-c", str(self.unbound.conf_path), "stats_noreset"])
        out: dict[str, float] = {}
        for line in res.stdout.splitlines():
            key, _, value = line.partition("=")
            if key in UNBOUND_COUNTERS:
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
        return out

    @property
    def trust_anchor(self) -> DsRecord:
        if self._ds is None:
            raise DnsPlaneError("prepare() has not run")
        return self._ds["."]

    # -- health ---------------------------------------------------------------------------

    def validated_zones(self, ex: NodeExec) -> set[str]:
        """Zones whose SOA Unbound returns NOERROR with AD set."""
        argv = ["dig", f"@{self.address}", "-p", str(RESOLVER_PORT), "+dnssec", "+tries=1",
                "+time=1", "+noall", "+comments", "+question"]
        for z in self._zones:
            argv += [z, "SOA"]
        out = ex.run(argv, timeout=30).stdout
        ok: set[str] = set()
        status = flags = ""
        for line in out.splitlines():
            if "->>HEADER<<-" in line:
                status = line.split("status:")[1].split(",")[0].strip()
            elif line.startswith(";; flags:"):
                flags = line.split(";")[2]
            # dig separates long owner names (ip6.arpa) by a space, not a tab.
            elif (line.startswith(";") and line[1:].split()[1:3] == ["IN", "SOA"]
                  and status == "NOERROR" and " ad" in flags):
                ok.add(line[1:].split()[0].lower())
        return ok

    def ready(self, ex: NodeExec) -> bool:
        """BIND serves every zone signed, and Unbound validates every zone (AD)."""
        if not (self.named.alive() and self.unbound.alive()):
            return False
        # Ask Unbound only once BIND is complete, so it never caches a half-loaded tree.
        want = set(self._zones)
        if self.named.serving_signed(ex) != want:
            return False
        return self.validated_zones(ex) == want

    def start(self, ex: NodeExec) -> None:
        """Start both daemons in order, each until ready (a lab starts them itself)."""
        for d in self.daemons():
            start_batch([(d, ex)])

    def stop(self) -> None:
        for d in reversed(self.daemons()):
            d.stop()

    # -- operations for tests and experiments ---------------------------------------------

    def flush(self, zone: str = ".") -> None:
        """Forget cached records, keys and failures at or below ``zone``."""
        try:
            adns.unbound_flush(self.unbound.conf_path, zone)()
        except adns.DnsError as exc:
            raise DnsPlaneError(str(exc)) from exc

    def serve_verbatim(self, zone: str, text: str | None) -> None:
        """Serve ``zone`` from ``text`` as-is, unsigned by BIND (None: back to normal).

        Stands for stale or tampered data; the caller restarts BIND (restart_named).
        """
        fq = _fqdn(zone)
        if fq not in self._zones:
            raise DnsPlaneError(f"{zone} is not a zone of this plane")
        if text is None:
            self._served.pop(fq, None)
        else:
            fname = f"{self._zones[fq].label}.verbatim.db"
            (self.rundir / "named" / fname).write_text(text)
            self._served[fq] = fname
        self._write()

    def restart_named(self, ex: NodeExec) -> None:
        """Restart BIND with the current named.conf; returns once its zones are served."""
        self.named.stop()
        start_batch([(self.named, ex)])

    def validation_failures(self, name: str) -> list[str]:
        """Unbound's logged reasons for failing to validate ``name`` (val-log-level 2)."""
        try:
            text = self.unbound.log_path.read_text(errors="replace")
        except OSError:
            return []
        tag = f"validation failure <{_fqdn(name)} "
        return [ln.split("info: ", 1)[-1] for ln in text.splitlines() if tag in ln]

    def bench_resolution(
        self, client: NodeExec, names: Sequence[str], rounds: int = 20
    ) -> dict[str, Any]:
        """Cold/cached validated key-lookup latency measured from a lab node."""
        argv = [sys.executable, "-m", "agents.dns", "--resolver", str(self.resolver_address),
                "bench", *names, "--rounds", str(rounds),
                "--flush-conf", str(self.unbound.conf_path)]
        res = client.run(argv, timeout=60 + 5 * rounds)
        if res.returncode != 0:
            raise DnsPlaneError(f"bench in {client.name}: {res.stderr.strip()}")
        result: dict[str, Any] = json.loads(res.stdout)
        return result


def fake_ds(zone: str) -> DsRecord:
    """Deterministic stand-in DS for golden files and unit tests (never a real key)."""
    digest = hashlib.sha256(zone.encode()).hexdigest().upper()
    return DsRecord(int(digest[:4], 16), 13, 2, digest)


def fake_tsig(name: str) -> str:
    return base64.b64encode(hashlib.sha256(b"tsig:" + name.encode()).digest()).decode()


__all__ = [
    "DnsPlane",
    "DnsPlaneError",
    "DsRecord",
    "Identity",
    "Named",
    "Unbound",
    "fake_ds",
    "fake_tsig",
]
