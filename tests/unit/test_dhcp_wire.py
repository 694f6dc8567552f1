"""DHCPv4 wire format (agents/dhcp.py): round trips, option 82, the Home Agent option, strict
rejection of malformed datagrams, and a real DISCOVER from Debian's busybox udhcpc."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agents.auth.keys import Suite
from agents.auth.keystore import KeyStore
from agents.dhcp import (
    BOOTREPLY,
    BOOTREQUEST,
    MAGIC,
    OPT_CLIENT_ID,
    OPT_HOME_AGENT,
    OPT_LEASE_TIME,
    OPT_SERVER_ID,
    DhcpError,
    DhcpMessage,
    MessageType,
    RelayAgentInfo,
)
from agents.dhcpd import (
    BROADCAST,
    ZERO,
    DhcpServer,
    Lease,
    ServerConfig,
    client_identity,
    client_parts,
    make_client_id,
)
from agents.linkproof import link_key, link_proof, proves
from agents.relayauth import ALG_RELAY, RelayAuth

CAPTURE = Path(__file__).resolve().parents[1] / "data" / "udhcpc-discover.bin"


def ack() -> DhcpMessage:
    return DhcpMessage(
        BOOTREPLY, 0x12345678, bytes.fromhex("02fa00000009"), MessageType.ACK,
        yiaddr=IPv4Address("10.64.0.10"), giaddr=IPv4Address("169.254.0.1"),
        options={OPT_SERVER_ID: IPv4Address("10.64.0.1").packed,
                 OPT_LEASE_TIME: (600).to_bytes(4, "big"),
                 OPT_HOME_AGENT: b"ha.isp.test"},
        relay=RelayAgentInfo(b"ar2-acc", b"mn1.example"),
    )


def test_round_trip_with_relay_info_and_home_agent() -> None:
    msg = ack()
    data = msg.pack()
    assert len(data) == 300 and data[236:240] == MAGIC
    back = DhcpMessage.unpack(data)
    assert back == msg
    assert back.server_id == IPv4Address("10.64.0.1") and back.lease_time == 600
    assert back.home_agent == "ha.isp.test"
    assert back.relay == RelayAgentInfo(b"ar2-acc", b"mn1.example")


def test_long_option_is_split_and_concatenated() -> None:  # RFC 3396
    msg = replace(ack(), options={OPT_HOME_AGENT: b"h" * 300})
    assert DhcpMessage.unpack(msg.pack()).options[OPT_HOME_AGENT] == b"h" * 300


def test_a_real_udhcpc_discover_parses() -> None:
    msg = DhcpMessage.unpack(CAPTURE.read_bytes())
    assert msg.op == BOOTREQUEST and msg.message_type is MessageType.DISCOVER
    assert len(msg.chaddr) == 6 and msg.options[12] == b"mn1"
    assert OPT_HOME_AGENT in msg.options[55]  # udhcpc -O 224 asks for the HA option


@pytest.mark.parametrize("mutate, why", [
    (lambda d: d[:200], "shorter"),
    (lambda d: d[:236] + b"\0\0\0\0" + d[240:], "magic"),
    (lambda d: bytes([3]) + d[1:], "op"),
    (lambda d: d[:240] + bytes([53, 1, 9]) + d[243:], "message type"),
    (lambda d: d[:240] + bytes([51, 40]) + d[242:244], "runs past"),
    (lambda d: d.rstrip(b"\0")[:-1], "no end"),
    (lambda d: d.rstrip(b"\0") + b"\x07", "after the option end"),
    (lambda d: d + bytes(1300), "longer"),
])
def test_malformed_datagrams_are_rejected_with_a_reason(mutate: object, why: str) -> None:
    data = ack().pack()
    with pytest.raises(DhcpError, match=why):
        DhcpMessage.unpack(mutate(data))  # type: ignore[operator]


def test_bad_option_values_are_the_parsers_error() -> None:
    bad = replace(ack(), options={OPT_SERVER_ID: b"\x0a\x40"})
    with pytest.raises(DhcpError, match="server identifier"):
        DhcpMessage.unpack(bad.pack())
    blank = replace(ack(), options={OPT_HOME_AGENT: b"ha isp"})
    with pytest.raises(DhcpError, match="home agent"):
        DhcpMessage.unpack(blank.pack())


# --- the DHCP test vectors of docs/protocol.md ----------------------------------------------
# ``python -m tests.unit.test_dhcp_wire`` prints the fenced blocks pasted into the document;
# the tests below read them back, rebuild every message octet by octet from the layout the
# document gives, and check that our server and relay produce exactly those octets.

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
VECTOR_MN, VECTOR_SERIAL = "mn3.example", 1
VECTOR_MSK = bytes(range(0x40, 0x60))  # the MN's session MSK at the AR (§14.2's proof)
VECTOR_CHADDR = bytes.fromhex("02fa00000003")
# What busybox udhcpc 1.35 adds to every request (tests/data/udhcpc-discover.bin): maximum
# message size 576, its parameter request list with -O 224, and its vendor class.
UDHCPC_OPTIONS = {57: bytes.fromhex("0240"), 55: bytes.fromhex("0103060c0f1c2ae0"),
                  60: b"udhcp 1.35.0"}
OWNER = ServerConfig(
    server_id=IPv4Address("10.255.0.1"), pool=IPv4Network("10.64.0.0/24"), first=100, last=199,
    lease_s=60, remote_renewals=2, router=IPv4Address("169.254.0.1"),
    dns=IPv4Address("10.253.0.2"), home_agent="ha.isp.test",
    circuit_id=b"ar1.isp.test/ar1-acc")
RELAY = replace(OWNER, server_id=IPv4Address("10.255.0.2"), pool=IPv4Network("10.64.1.0/24"),
                circuit_id=b"ar2.isp.test/ar2-acc")
ACCESS = 7
# The two ARs' identities for the relay authenticator (docs/protocol.md §14.7): P-256 keys
# from fixed scalars, as in the authentication vectors.
OWNER_NAME, RELAY_NAME = "ar1.isp.test", "ar2.isp.test"
VECTOR_NOW = 1_800_000_000.0


def _private(name: str) -> bytes:
    return hashlib.sha256(f"flatarch relay vector {name}".encode()).digest()


def _keystore(name: str) -> KeyStore:
    return KeyStore.from_private_bytes(name, Suite.P256, _private(name))


def _pair_key(me: str, other: str, alg: bytes = ALG_RELAY) -> bytes:
    return _keystore(me).pair_key(_keystore(other).published_key(), alg)


def documented_pair_key(vec: dict[str, str], label: bytes) -> bytes:
    """The relay key of section 14.7 from the vector's scalars alone: LTSS = ECDH of the two
    ARs' keys; the key = KDF(LTSS, label, both names sorted), computed at both ends."""
    relay = ec.derive_private_key(int(vec["relay_private"], 16), ec.SECP256R1())
    owner = ec.derive_private_key(int(vec["owner_private"], 16), ec.SECP256R1())
    ltss = relay.exchange(ec.ECDH(), owner.public_key())
    assert ltss == owner.exchange(ec.ECDH(), relay.public_key())
    names = sorted((vec["relay_name"], vec["owner_name"]))
    other_info = bytes([len(label)]) + label + b"".join(
        bytes([len(n)]) + n.encode("ascii") for n in names) + bytes([1]) + (256).to_bytes(2, "big")
    return hashlib.sha256(b"\x00\x00\x00\x01" + ltss + other_info).digest()


class VectorHooks:
    """The one MN of the vectors: authenticated on the access link, holding the address."""

    def __init__(self, held: IPv4Address | None = None) -> None:
        self.held = held

    def identity_on_link(self, chaddr: bytes, ifindex: int,
                         client_id: bytes | None) -> str | None:
        parts = client_parts(client_id)
        if parts is None or parts[0] != VECTOR_MN or parts[2] is None or ifindex != ACCESS:
            return None
        ok = proves(link_key(VECTOR_MSK), chaddr, parts[0], parts[1], parts[2])
        return VECTOR_MN if ok else None

    def identity_of_source(self, address: IPv4Address, ifindex: int) -> str | None:
        return VECTOR_MN if address == self.held and ifindex == ACCESS else None

    def owner_of(self, address: IPv4Address) -> IPv4Address | None:
        return OWNER.server_id if address in OWNER.pool else None

    def bound(self, lease: Lease, ifindex: int, renewal: bool) -> None:
        pass

    def ended(self, lease: Lease, reason: str) -> None:
        pass

    def relayed(self, address: IPv4Address, kind: str, expires: float | None) -> None:
        pass


def _server(config: ServerConfig, held: IPv4Address | None = None) -> DhcpServer:
    me, other = ((OWNER_NAME, RELAY) if config.server_id == OWNER.server_id
                 else (RELAY_NAME, OWNER))
    peer = RELAY_NAME if me == OWNER_NAME else OWNER_NAME
    auth = RelayAuth(config.server_id, {other.server_id: peer},
                     lambda name: _pair_key(me, name), clock=lambda: VECTOR_NOW)
    return DhcpServer(config, VectorHooks(held), lambda ifindex: ifindex == ACCESS,
                      clock=lambda: VECTOR_NOW, relay_auth=auth)


def _client(kind: MessageType, xid: int, ciaddr: IPv4Address = ZERO) -> DhcpMessage:
    cid = _vector_cid()
    return DhcpMessage(BOOTREQUEST, xid, VECTOR_CHADDR, kind, ciaddr=ciaddr,
                       options={**UDHCPC_OPTIONS, OPT_CLIENT_ID: cid})


def _vector_cid() -> bytes:
    proof = link_proof(link_key(VECTOR_MSK), VECTOR_CHADDR, VECTOR_MN, VECTOR_SERIAL)
    return make_client_id(VECTOR_MN, VECTOR_SERIAL, proof)


def compute_dhcp_vectors() -> dict[str, list[tuple[str, str]]]:
    """Every input and output of the two vectors, in document order."""
    discover = _client(MessageType.DISCOVER, 0x5D3E1A07)
    [offer] = _server(OWNER).handle(discover.pack(), ZERO, BROADCAST, ACCESS)
    yiaddr = DhcpMessage.unpack(offer.data).yiaddr
    renewal = _client(MessageType.REQUEST, 0x5D3E1A08, ciaddr=yiaddr)
    [relayed] = _server(RELAY, held=yiaddr).handle(renewal.pack(), yiaddr, OWNER.server_id,
                                                   ACCESS)
    cid = _vector_cid().hex()
    return {
        "offer": [
            ("server_id", str(OWNER.server_id)), ("pool", str(OWNER.pool)),
            ("first", str(OWNER.first)), ("last", str(OWNER.last)),
            ("lease_s", str(OWNER.lease_s)), ("router", str(OWNER.router)),
            ("dns", str(OWNER.dns)), ("home_agent", str(OWNER.home_agent)),
            ("msk", VECTOR_MSK.hex()),
            ("client_id", cid), ("chaddr", VECTOR_CHADDR.hex()), ("xid", f"{discover.xid:08x}"),
            ("discover", discover.pack().hex()),
            ("yiaddr", str(yiaddr)), ("offer", offer.data.hex()),
        ],
        "relayed_request": [
            ("relay_server_id", str(RELAY.server_id)),
            ("circuit_id", RELAY.circuit_id.decode("ascii")), ("remote_id", VECTOR_MN),
            ("owner_server_id", str(OWNER.server_id)),
            ("client_id", cid), ("chaddr", VECTOR_CHADDR.hex()), ("xid", f"{renewal.xid:08x}"),
            ("ciaddr", str(yiaddr)), ("client_request", renewal.pack().hex()),
            ("relay_name", RELAY_NAME), ("owner_name", OWNER_NAME),
            ("relay_private", _private(RELAY_NAME).hex()),
            ("owner_private", _private(OWNER_NAME).hex()),
            ("pair_key", _pair_key(RELAY_NAME, OWNER_NAME).hex()),
            ("counter", str(int(VECTOR_NOW * 1e9))),
            ("relayed_request", relayed.data.hex()),
        ],
    }


def render_dhcp_vectors() -> str:
    return "".join(
        f"```dhcp-vector {name}\n" + "".join(f"{k} = {v}\n" for k, v in items) + "```\n\n"
        for name, items in compute_dhcp_vectors().items()).rstrip("\n") + "\n"


def load_dhcp_vectors() -> dict[str, dict[str, str]]:
    blocks = re.findall(r"^```dhcp-vector (\w+)\n(.*?)^```", DOC.read_text(), re.S | re.M)
    return {name: dict(line.split(" = ", 1) for line in body.strip().splitlines())
            for name, body in blocks}


DHCP_VECTORS = load_dhcp_vectors()


def hand_packed(op: int, xid: int, hops: int, addrs: tuple[str, str, str, str], chaddr: bytes,
                options: list[tuple[int, bytes]]) -> bytes:
    """The layout the document gives, without agents.dhcp: RFC 2131's fixed fields, the
    magic cookie, the options in the order listed, END, zeros up to 300 octets."""
    head = bytes([op, 1, len(chaddr), hops]) + xid.to_bytes(4, "big") + bytes(4)
    head += b"".join(IPv4Address(a).packed for a in addrs)
    head += chaddr.ljust(16, b"\0") + bytes(64 + 128)
    opts = b"".join(bytes([code, len(value)]) + value for code, value in options)
    return (head + bytes.fromhex("63825363") + opts + b"\xff").ljust(300, b"\0")


def test_document_has_the_dhcp_vectors() -> None:
    assert set(DHCP_VECTORS) == {"offer", "relayed_request"}
    for name, items in compute_dhcp_vectors().items():
        assert DHCP_VECTORS[name] == dict(items), f"regenerate the {name} vector"


def test_offer_vector_octet_by_octet() -> None:
    vec = DHCP_VECTORS["offer"]
    xid, chaddr = int(vec["xid"], 16), bytes.fromhex(vec["chaddr"])
    cid = bytes.fromhex(vec["client_id"])
    # The proof of §14.2, from the MSK, computed as a third party would.
    k = hmac.new(bytes.fromhex(vec["msk"]), b"FLATARCH-v1 DHCP link", hashlib.sha256).digest()
    text = f"{VECTOR_MN}#{VECTOR_SERIAL}"
    proof = hmac.new(k, chaddr + text.encode(), hashlib.sha256).digest()[:8]
    assert cid == b"\x00" + f"{text}#{proof.hex()}".encode()
    udhcpc = [(57, UDHCPC_OPTIONS[57]), (55, UDHCPC_OPTIONS[55]), (60, UDHCPC_OPTIONS[60])]
    zero = "0.0.0.0"
    assert bytes.fromhex(vec["discover"]) == hand_packed(
        1, xid, 0, (zero, zero, zero, zero), chaddr, [(53, b"\x01"), *sorted(udhcpc),
                                                      (61, cid)])
    lease = int(vec["lease_s"])
    ip = IPv4Address
    expected = hand_packed(2, xid, 0, (zero, vec["yiaddr"], zero, zero), chaddr, [
        (53, b"\x02"), (1, ip("255.255.255.255").packed), (3, ip(vec["router"]).packed),
        (6, ip(vec["dns"]).packed), (51, lease.to_bytes(4, "big")),
        (54, ip(vec["server_id"]).packed), (58, (lease // 2).to_bytes(4, "big")),
        (59, (lease * 7 // 8).to_bytes(4, "big")), (224, vec["home_agent"].encode("ascii"))])
    data = bytes.fromhex(vec["offer"])
    assert data == expected
    msg = DhcpMessage.unpack(data)
    assert msg.pack() == data
    assert msg.message_type is MessageType.OFFER and msg.op == BOOTREPLY
    assert msg.yiaddr == IPv4Address(vec["yiaddr"]) in IPv4Network(vec["pool"])
    assert int(msg.yiaddr) - int(IPv4Network(vec["pool"]).network_address) == int(vec["first"])
    assert msg.server_id == IPv4Address(vec["server_id"]) and msg.lease_time == lease
    assert msg.home_agent == vec["home_agent"] and msg.relay is None


def test_relayed_request_vector_octet_by_octet() -> None:
    vec = DHCP_VECTORS["relayed_request"]
    xid, chaddr = int(vec["xid"], 16), bytes.fromhex(vec["chaddr"])
    cid = bytes.fromhex(vec["client_id"])
    client_opts = [(53, b"\x03"), *sorted(UDHCPC_OPTIONS.items()), (61, cid)]
    zero = "0.0.0.0"
    assert bytes.fromhex(vec["client_request"]) == hand_packed(
        1, xid, 0, (vec["ciaddr"], zero, zero, zero), chaddr, client_opts)
    circuit, remote = vec["circuit_id"].encode("ascii"), vec["remote_id"].encode("ascii")
    # Sub-option 8 (§14.7): algorithm 2, RDM 0, the counter, then HMAC-SHA-256 over the whole
    # datagram with these 32 octets zero.
    head = bytes([2, 0]) + int(vec["counter"]).to_bytes(8, "big")
    rai = bytes([1, len(circuit)]) + circuit + bytes([2, len(remote)]) + remote
    rai += bytes([8, 42]) + head + bytes(32)
    zeroed = hand_packed(1, xid, 1, (vec["ciaddr"], zero, zero, vec["relay_server_id"]),
                         chaddr, [*client_opts, (82, rai)])  # option 82 last: RFC 3046
    key = bytes.fromhex(vec["pair_key"])
    mac = hmac.new(key, zeroed, hashlib.sha256).digest()
    at = zeroed.index(bytes([8, 42]) + head) + 12
    expected = zeroed[:at] + mac + zeroed[at + 32:]
    data = bytes.fromhex(vec["relayed_request"])
    assert data == expected
    msg = DhcpMessage.unpack(data)
    assert msg.pack() == data
    assert msg.message_type is MessageType.REQUEST and msg.op == BOOTREQUEST
    assert (msg.hops, msg.giaddr, msg.ciaddr) == (1, IPv4Address(vec["relay_server_id"]),
                                                  IPv4Address(vec["ciaddr"]))
    assert msg.relay == RelayAgentInfo(circuit, remote, head + mac)
    assert client_identity(msg.options[OPT_CLIENT_ID]) == vec["remote_id"]


def test_relay_pair_key_vector_from_the_documented_derivation() -> None:
    vec = DHCP_VECTORS["relayed_request"]
    key = documented_pair_key(vec, b"FLATARCH-v1 DHCP relay")
    assert key.hex() == vec["pair_key"]
    assert _pair_key(OWNER_NAME, RELAY_NAME) == key  # the same from the other end


def test_the_owner_acks_the_documented_relayed_request_to_the_relay() -> None:
    vec = DHCP_VECTORS["relayed_request"]
    owner = _server(OWNER)
    address = IPv4Address(vec["ciaddr"])
    cid = bytes.fromhex(vec["client_id"])
    owner.leases[cid] = Lease(address, cid, vec["remote_id"], bytes.fromhex(vec["chaddr"]),
                              expires=1_800_000_010.0, bound=True)
    [reply] = owner.handle(bytes.fromhex(vec["relayed_request"]),
                           IPv4Address(vec["relay_server_id"]),
                           IPv4Address(vec["owner_server_id"]), 3)
    assert (reply.dest, reply.port) == (IPv4Address(vec["relay_server_id"]), 67)
    ack = DhcpMessage.unpack(reply.data)
    assert ack.message_type is MessageType.ACK and ack.yiaddr == address
    assert ack.relay is not None and ack.relay.remote_id == vec["remote_id"].encode()
    assert owner.leases[cid].remote_renewals == 1


if __name__ == "__main__":
    print(render_dhcp_vectors(), end="")
