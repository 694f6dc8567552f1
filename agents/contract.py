"""The contract between the lab and its agents: every agent's configuration as a frozen
dataclass with a strict ``from_json`` that names the bad field, the event and control
command names, the run directory's layout, and every constant both sides use.

Standard library only: the udhcpc hook imports it with site-packages skipped (``python -S``).
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

# --- constants both sides use ---------------------------------------------------------------

AUTH_PORT = 7411  # the one-message authentication (docs/protocol.md)
PAGING_PORT = 7412  # pages are broadcast to MNs on this UDP port
NAMED_PORT = 5300  # BIND's port for signed updates; Unbound owns 53 on the same address
RESOLVER_PORT = 53
ACCESS_GATEWAY = "169.254.0.1"  # every AR's address on its access link: the MN's gateway
ACCESS_MAC = "02:fa:00:00:00:01"  # and the same MAC everywhere: an anycast gateway
REDIRECT_METRIC = 150  # a fast redirect beats BGP until BGP itself points the same way
NFT_TABLE = "flatarch"  # the AR's nftables table, family ip (configs/nft/ar.nft.j2)
NFT_SOURCES_SET = "mn_sources"  # its set of (access interface . MN address) allowed


def access_ifname(node: str) -> str:
    """A cell's access interface into the radio (an AR's, or the visited network's)."""
    return f"{node}-acc"


# --- the run directory of a node ------------------------------------------------------------


class Layout:
    """File names inside a node's run directory (/run/flatarch/<lab>/<node>/)."""

    AGENT_CONFIG = "agent.json"
    AGENT_PID = "agent.pid"
    AGENT_STATUS = "agent.status.json"
    AGENT_LOG = "agent.log"
    AGENT_STDERR = "agent.stderr"
    EVENTS = "events.jsonl"
    CONTROL = "control.sock"
    KEY = "identity.pem"
    NONCE = "identity.nonce"
    TSIG = "tsig.json"
    AR_KEYS = "ar_keys.json"
    UDHCPC_HOOK = "udhcpc.hook"
    DHCLIENT6_HOOK = "dhclient6.hook"  # dhclient -6's script (configs/dhcp/dhclient6.hook.j2)
    TRUST_ANCHOR = "trust-anchor.ds"  # the lab root's DS, for stapled bundles (agents/staple.py)


def read_events(path: Path) -> list[dict[str, Any]]:
    """An events.jsonl as written (one JSON object per line); a torn last line is skipped."""
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


# --- names: events the agents log, commands their control sockets take -------------------


class Event(enum.StrEnum):
    """Every event an agent writes to its events.jsonl; scenarios read them by these names."""

    # AR: a handoff (agents/handoff.py)
    VERIFIED = "verified"
    CHECKED = "checked"
    NOT_TAKEN = "not_taken"  # checked, but a redirect told of the MN's later AUTH elsewhere
    ATTACHED = "attached"
    ANNOUNCED = "announced"
    OUTBID = "outbid"  # a late route of the AR the MN came from, out-announced once
    REDIRECT_SENT = "redirect_sent"
    REDIRECT_FAILED = "redirect_failed"
    REDIRECT_ACKED = "redirect_acked"
    REDIRECT_RECEIVED = "redirect_received"
    REDIRECT_REFUSED = "redirect_refused"
    REDIRECT_INSTALLED = "redirect_installed"
    REDIRECT_REMOVED = "redirect_removed"
    DETACHED = "detached"
    WITHDRAWN = "withdrawn"
    # AR: idle mode and paging (draft 4)
    IDLE = "idle"
    PAGE_START = "page_start"
    PAGE_SENT = "page_sent"
    PAGE_FAILED = "page_failed"
    PAGE_TIMEOUT = "page_timeout"
    PAGE_BROADCAST = "page_broadcast"
    FLUSHED = "flushed"
    # AR: addresses (draft 2.3)
    ASSIGNED = "assigned"
    LEASE_ENDED = "lease_ended"
    RECLAIM_ANNOUNCED = "reclaim_announced"
    DHCP_BOUND = "dhcp_bound"
    DHCP_RELAYED = "dhcp_relayed"
    PTR_SET = "ptr_set"
    PTR_DELETED = "ptr_deleted"
    PTR_FAILED = "ptr_failed"
    # AR: IPv6 prefixes by DHCPv6 (agents/handoff6.py, agents/ardhcp6.py; issue 18)
    ASSIGNED6 = "assigned6"
    DELEGATION_ENDED = "delegation_ended"
    RECLAIM6_ANNOUNCED = "reclaim6_announced"
    DHCP6_BOUND = "dhcp6_bound"
    DHCP6_RELAYED = "dhcp6_relayed"
    # AR: restart recovery (agents/arstate.py, docs/faults.md)
    RECOVERED = "recovered"
    # AR: services
    SERVICE_FAILED = "service_failed"
    # HA (draft 2.4)
    BINDING_UPDATE = "binding_update"
    DEREGISTERED = "deregistered"
    # MN
    AUTH_FAILED = "auth_failed"
    # A population MN's failed handoff, tried again at the same AR (agents/population.py)
    HANDOFF_RECOVERED = "handoff_recovered"
    HANDOFF_UNRECOVERED = "handoff_unrecovered"
    IDLE_MOVE = "idle_move"
    PAGED = "paged"
    HA_READY = "ha_ready"
    HA_PREPARE_FAILED = "ha_prepare_failed"
    BU_FAILED = "bu_failed"
    RETURNED = "returned"
    # MN: its DHCP client (agents/addresses.py)
    DHCP_STARTED = "dhcp_started"
    DHCP_RENEW = "dhcp_renew"  # with DHCP_BOUND: udhcpc's "bound" and "renew" events
    RELEASED = "released"
    CARE_OF = "care_of"
    DHCP_DECONFIG = "dhcp_deconfig"
    DHCP_NAK = "dhcp_nak"
    DHCP_LEASEFAIL = "dhcp_leasefail"
    DHCP_RENEW_REQUESTED = "dhcp_renew_requested"
    RELEASE_CONFIRMED = "release_confirmed"  # the MN saw its RELEASE take effect
    RELEASE_RESENT = "release_resent"
    RELEASE_UNCONFIRMED = "release_unconfirmed"
    DNS_REGISTERED = "dns_registered"
    DNS_FAILED = "dns_failed"
    # MN: its DHCPv6 clients (agents/delegations.py, issue 18)
    DHCP6_STARTED = "dhcp6_started"
    DELEGATED = "delegated"  # a /64 bound (dhclient's BOUND6, or a changed one)
    DELEGATION_RENEWED = "delegation_renewed"  # RENEW6 or REBIND6 of the /64 held
    DELEGATION_LOST = "delegation_lost"  # expired or ended by its owner (lifetimes 0)
    DELEGATION_RELEASED = "delegation_released"
    DHCP6_RESTARTED = "dhcp6_restarted"  # the client again, with the current session's proof
    # Stapled DNSSEC proofs (agents/staple.py): the MN builds them, the AR validates them
    STAPLE_BUILT = "staple_built"
    STAPLE_FAILED = "staple_failed"  # MN: no bundle could be built; its AUTH goes without
    STAPLE_VALIDATED = "staple_validated"
    STAPLE_REFUSED = "staple_refused"  # AR: typed reason; it falls back to the lookups
    # The RA after a handoff (agents/ra.py, draft 4): the AR's send, the MN's side
    RA_SENT = "ra_sent"
    RA_FAILED = "ra_failed"
    RA_RECEIVED = "ra_received"  # MN: the prefixes listed, and those it takes as refused
    RA_DROPPED = "ra_dropped"  # MN: off the link, malformed, or not after an AUTH of ours
    RA_MISSING = "ra_missing"  # MN: no RA in time; the AUTH_REPLY's lists stand
    PREFIX_UNBOUND = "prefix_unbound"  # MN: refused, and not bound at the Home Agent (why)
    PREFIX_BOUND = "prefix_bound"  # MN: refused prefixes bound at the Home Agent (issue 18)
    PREFIX_DEBOUND = "prefix_debound"  # MN: an AR re-routes them again; the tunnel goes


class Command(enum.StrEnum):
    """The control commands, one JSON object per line with "cmd" set to one of these."""

    # MN agent
    ATTACH = "attach"
    PREPARE_HA = "prepare_ha"
    DEREGISTER = "deregister"
    IDLE = "idle"
    DEAF = "deaf"
    STATUS = "status"
    DHCP = "dhcp"  # from the udhcpc hook
    ROTATE = "rotate"
    RELEASE = "release"
    IN_USE = "in_use"
    DNS_MODE = "dns_mode"  # {"cmd": "dns_mode", "mode": "lookup"|"stapled"}
    # {"cmd": "dhcp6_duid", "serial": N}: the lab DUID, with the session's proof, that a
    # DHCPv6 client on this MN sends (docs/addresses.md); answers {"duid": hex}
    DHCP6_DUID = "dhcp6_duid"
    DHCP6 = "dhcp6"  # from the dhclient -6 hook: {"serial": N, "event": reason, "env": {...}}
    # AR agent
    MODE = "mode"


class Mode(enum.StrEnum):
    """How an AR hands off: with the fast redirect, or by BGP alone as the draft says."""

    REDIRECT = "redirect"
    DRAFT = "draft"


class DnsMode(enum.StrEnum):
    """How an AR learns an MN's key and addresses: by looking them up in the MN's home zone
    (the draft), or from the DNSSEC proof the MN staples to its AUTH (issue 17)."""

    LOOKUP = "lookup"
    STAPLED = "stapled"


class ServiceState(enum.StrEnum):
    """What an agent reports of each of its services in agent.status.json."""

    STARTING = "starting"
    UP = "up"
    FAILED = "failed"
    OFF = "off"  # not configured on this node


# --- a strict loader for the configuration dataclasses -----------------------------------


class ContractError(ValueError):
    """A configuration document does not match its dataclass; the message names the field."""


T = TypeVar("T")


def _load(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _load(inner[0], value, where)
        raise ContractError(f"{where}: unsupported union {tp}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _load_dataclass(tp, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise ContractError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return tuple(_load(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ContractError(f"{where}: expected an object, got {type(value).__name__}")
        _, vt = typing.get_args(tp)
        return {str(k): _load(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ContractError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ContractError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ContractError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ContractError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ContractError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in tp)
            raise ContractError(f"{where}: {value!r} is not one of {allowed}") from None
    parsers = {ipaddress.IPv4Address: "an IPv4 address", ipaddress.IPv4Network: "an IPv4 network",
               ipaddress.IPv6Address: "an IPv6 address", ipaddress.IPv6Network: "an IPv6 network"}
    if tp in parsers:
        if not isinstance(value, str):
            raise ContractError(f"{where}: expected {parsers[tp]}, got {value!r}")
        try:
            return tp(value)
        except ValueError:
            raise ContractError(f"{where}: expected {parsers[tp]}, got {value!r}") from None
    raise ContractError(f"{where}: unsupported type {tp}")


def _load_dataclass(cls: type[T], doc: Any, where: str) -> T:
    if not isinstance(doc, dict):
        raise ContractError(f"{where}: expected an object, got {type(doc).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(doc) - set(fields))
    if unknown:
        raise ContractError(f"{where}: unknown field {unknown[0]!r}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name not in doc:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise ContractError(f"{path}: missing")
        kwargs[name] = _load(hints[name], doc[name], path)
    return cls(**kwargs)


OMIT_IF_NONE = {"omit_if_none": True}  # field metadata: a newer optional part, left out unset


def _dump(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # An optional part added later (IPv6) is left out when unset, so that existing
        # configurations stay byte-identical.
        return {f.name: _dump(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.metadata.get("omit_if_none") and getattr(value, f.name) is None)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _dump(v) for k, v in value.items()}
    if isinstance(value, Path | ipaddress.IPv4Address | ipaddress.IPv4Network
                  | ipaddress.IPv6Address | ipaddress.IPv6Network):
        return str(value)
    return value


class Config:
    """Mixin of the configuration dataclasses: strict load, and the JSON the lab writes."""

    @classmethod
    def from_json(cls: type[T], doc: Any, where: str = "") -> T:
        return _load_dataclass(cls, doc, where)

    @classmethod
    def load(cls: type[T], path: Path) -> T:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ContractError(f"{path}: {exc}") from None
        try:
            return _load_dataclass(cls, doc, "")
        except ContractError as exc:
            raise ContractError(f"{path}: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(_dump(self), indent=1, sort_keys=True) + "\n"


# --- the agents' configurations (agent.json) -----------------------------------------------


@dataclass(frozen=True)
class ArEntry(Config):
    """One AR of the AS as every AR agent and the HA know it."""

    fqdn: str
    loopback: ipaddress.IPv4Address
    pool: ipaddress.IPv4Network
    cluster: ipaddress.IPv4Network  # the cluster's aggregate, inside which host routes stay
    overlay: ipaddress.IPv4Address  # its address in the redirect mesh


@dataclass(frozen=True)
class HomeAgentEntry(Config):
    """The Home Agent as every AR knows it: the next hop of the host routes it announces.
    An MN back from outside the AS names it as where it came from (draft 2.4), and a route
    of that next hop is then the older one (agents/handoff.py, late_route_of_came_from)."""

    next_hop: ipaddress.IPv4Address
    next_hop6: ipaddress.IPv6Address | None = dataclasses.field(default=None,
                                                                metadata=OMIT_IF_NONE)


# The Home Agent's "pool" (it has none), as 0.0.0.0/32 is in IPv4: it originates nothing.
NO_POOL6 = ipaddress.IPv6Network("::/128")
# The fast redirect's SRv6 SIDs (issue 18, RFC 8986): in the AR's own /64 of its IPv6 pool
# (routed to it with the pool), the function part naming the behaviour: End.DX4, End.DX6.
SRV6_FUNCTIONS = {4: 0xD4, 6: 0xD6}


def srv6_sid(pool6: ipaddress.IPv6Network, version: int) -> ipaddress.IPv6Address:
    """The AR's SID that decapsulates a redirected packet of IP ``version`` and routes it
    onto the MN's access route (End.DX4 or End.DX6 with no next hop of its own)."""
    return pool6.network_address + SRV6_FUNCTIONS[version]


@dataclass(frozen=True)
class Dhcp6Server(Config):
    """The AR's DHCPv6 service (draft 2.3, issue 18): a /64 of its pool delegated (IA_PD)
    to each MN that authenticated on its access link. Its PTRs use DhcpServer's TSIG key."""

    first: int  # indices of the pool's MN prefixes it delegates (model.dhcp6_range)
    last: int
    valid_s: int
    remote_renewals: int  # renewals through another AR's relay before the lifetimes go to 0


@dataclass(frozen=True)
class ArIpv6(Config):
    """An AR's IPv6 side on a dual-stack backbone (issue 18, docs/ipv6.md)."""

    loopback: ipaddress.IPv6Address  # the next hop of every IPv6 route we announce
    pool: ipaddress.IPv6Network  # ours, on a nibble boundary (draft 2.3)
    managed: ipaddress.IPv6Network
    mn_prefixlen: int  # what each MN is given out of a pool: a true prefix
    loopbacks: dict[str, ipaddress.IPv6Address]  # every AR's, by node name
    clusters: dict[str, ipaddress.IPv6Network] = dataclasses.field(
        default_factory=dict)  # every AR's cluster aggregate, by node name
    # The fast redirect (issue 18): every AR's link-local address on the overlay, and its pool.
    overlays: dict[str, ipaddress.IPv6Address] = dataclasses.field(default_factory=dict)
    pools: dict[str, ipaddress.IPv6Network] = dataclasses.field(default_factory=dict)
    # The AR's DHCPv6 server (agents/dhcpd6.py); None: the HA, or no IPv6 pool.
    dhcp6: Dhcp6Server | None = dataclasses.field(default=None, metadata=OMIT_IF_NONE)


@dataclass(frozen=True)
class Paging(Config):
    port: int
    buffer: int  # packets buffered per idle MN; beyond it, new packets are dropped
    timeout_s: float  # an unanswered page ends, and its buffer is freed


@dataclass(frozen=True)
class DhcpServer(Config):
    """The AR's DHCP service (draft 2.3)."""

    lease_s: int
    remote_renewals: int  # renewals through another AR's relay before a NAK
    first: int  # host offsets into the AR's pool
    last: int
    home_agent: str  # the HA's DNS name, given in option 224; "" when there is none
    tsig: Path  # the AR's TSIG key, for its pool's PTR records
    primary: str  # BIND, for signed updates
    primary_port: int


@dataclass(frozen=True)
class HaTunnel(Config):
    """The MN-HA tunnel's constants (draft 2.4), the same on both ends."""

    vni: int
    port: int
    mtu: int
    ha_mac: str
    mn_mac: str
    ha_inner: str
    local: str = ""  # the HA's own end (the HA's config only)


@dataclass(frozen=True)
class ArAgentConfig(Config):
    """agent.json of an AR agent or of the Home Agent, rendered by topologies/render."""

    node: str
    identity: str  # our DNS name, the name in every AUTH we answer
    key: Path
    nonce: Path
    resolver: str
    resolver_port: int
    auth_port: int
    managed: ipaddress.IPv4Network  # the range the AS re-routes with host routes
    pool: ipaddress.IPv4Network  # ours ("0.0.0.0/32" for the HA: it has none)
    ars: dict[str, ArEntry]
    escape_community: str  # lets a host route leave its cluster (configs/frr/bgpd.conf.j2)
    overlay_dev: str  # the VXLAN device of the redirect mesh ("" for the HA)
    paging_dev: str  # the TUN device where idle MNs' packets wait ("" for the HA)
    tal: tuple[str, ...]  # our Tracking Area List, AR node names
    paging: Paging
    mode: Mode = Mode.REDIRECT
    dhcp: DhcpServer | None = None
    tunnel: HaTunnel | None = None  # the HA only
    trust_anchor: Path | None = None  # root DS (Layout.TRUST_ANCHOR); None: stapling refused
    ipv6: ArIpv6 | None = dataclasses.field(default=None, metadata=OMIT_IF_NONE)
    # The AR's BGP peers, its parent reflectors: a new ExaBGP's table is whole once each sent
    # its End-of-RIB (agents/ar.py _replay_rib). None: not given; the peers seen up count.
    bgp_peers: tuple[ipaddress.IPv4Address, ...] | None = dataclasses.field(
        default=None, metadata=OMIT_IF_NONE)
    # The AS's Home Agents by DNS name (an AR's only; the HA knows itself as one of ``ars``).
    home_agents: dict[str, HomeAgentEntry] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class MnDhcp6(Config):
    """A DHCPv6 MN's client settings (issue 18): its /64s come by prefix delegation."""

    hook: Path  # dhclient -6's script
    gateway: ipaddress.IPv6Address  # the ARs' link-local anycast gateway on the access link


@dataclass(frozen=True)
class MnDhcp(Config):
    link_local: ipaddress.IPv4Address  # to authenticate with before the first lease
    tsig: Path  # the MN's TSIG key, for its forward name
    primary: str
    primary_port: int
    hook: Path  # udhcpc's event script
    python: str  # the interpreter the hook runs under
    root: str  # the checkout, for the hook's PYTHONPATH
    ipv6: MnDhcp6 | None = dataclasses.field(default=None, metadata=OMIT_IF_NONE)


@dataclass(frozen=True)
class MnMacro(HaTunnel):
    outside: str = ""  # the cell of the visited network


@dataclass(frozen=True)
class MnAgentConfig(Config):
    """agent.json of a mobile node's agent."""

    name: str
    ifname: str
    address: ipaddress.IPv4Address | None  # provisioned; null when addresses come from DHCP
    identity: str
    key: Path
    resolver: str
    resolver_port: int
    auth_port: int
    paging_port: int
    gateway: str
    home: str
    ars: dict[str, str]  # AR node -> its DNS name
    dhcp: MnDhcp | None = None
    macro: MnMacro | None = None
    dns_mode: DnsMode = DnsMode.LOOKUP
    # A dual-stack MN's true prefix (issue 18): it holds the first address and claims it.
    prefix6: ipaddress.IPv6Network | None = dataclasses.field(default=None, metadata=OMIT_IF_NONE)

    def __post_init__(self) -> None:
        if (self.address is None) == (self.dhcp is None):
            raise ContractError("an MN has either a provisioned address or DHCP settings")
