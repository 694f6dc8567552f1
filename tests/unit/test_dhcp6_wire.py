"""DHCPv6 wire format (agents/dhcp6.py, docs/protocol.md section 16): every option round
trips, the strict parser's refusals raise Dhcp6Error and nothing else, a Solicit captured from
Debian's ``dhclient -6 -P`` parses, and the document's vectors are rebuilt octet by octet.

``python -m tests.unit.test_dhcp6_wire`` prints the vector blocks pasted into the document.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from dataclasses import replace
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

import pytest

from agents import dhcp6
from agents.dhcp6 import (
    ClientId,
    Dhcp6Error,
    Dhcp6Message,
    ElapsedTime,
    IaAddress,
    IaNa,
    IaPd,
    IaPrefix,
    InterfaceId,
    MessageType,
    OptionRequest,
    Preference,
    RapidCommit,
    RawOption,
    Relay6Message,
    RelayMsg,
    RemoteId,
    ServerId,
    StatusCode,
)
from agents.dhcpd6 import Dhcp6Server, Server6Config, UnsignedRelayAuth
from agents.relayauth import ALG_RELAY6, RelayAuth6
from tests.unit.test_dhcp_wire import (
    OWNER_NAME,
    RELAY_NAME,
    VECTOR_NOW,
    _pair_key,
    _private,
    documented_pair_key,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
CAPTURE = Path(__file__).resolve().parents[1] / "data" / "dhclient6-solicit.bin"
MN, MN_DUID = "mn1.example", dhcp6.make_duid("mn1.example", 1)
MN_LL = IPv6Address("fe80::fa:ff:fe00:3")
OWNER = Server6Config(
    server_duid=dhcp6.server_duid("ar1.isp.test"), address=IPv6Address("2001:db8:ff::7"),
    pool=IPv6Network("2001:db8:4000:100::/56"), prefixlen=64, first=1, last=255, valid_s=60,
    remote_renewals=2, interface_id=b"ar1.isp.test/ar1-acc")
RELAY_ADDRESS = IPv6Address("2001:db8:ff::8")
ACCESS = 7


def roundtrip(msg: dhcp6.Message) -> dhcp6.Message:
    data = msg.pack()
    back = dhcp6.unpack(data)
    assert back == msg and back.pack() == data
    return back


def test_every_option_round_trips() -> None:
    prefix = IPv6Network("2001:db8:4000:101::/64")
    msg = Dhcp6Message(MessageType.REPLY, 0xABCDEF, (
        ServerId(OWNER.server_duid), ClientId(MN_DUID), ElapsedTime(300), Preference(255),
        RapidCommit(), OptionRequest((23, 24, 39)),
        IaNa(1, 10, 20, (IaAddress(IPv6Address("2001:db8::1"), 30, 60,
                                   (StatusCode(0, "ok"),)), StatusCode(0, "\u00e9"))),
        IaPd(3, 30, 48, (IaPrefix(60, 60, prefix, (RawOption(99, b"x"),)),)),
        RawOption(23, bytes(16))))
    roundtrip(msg)
    relay = Relay6Message(MessageType.RELAY_FORW, 0, RELAY_ADDRESS, MN_LL, (
        InterfaceId(b"ar2"), RemoteId(dhcp6.LAB_ENTERPRISE, MN.encode()), RelayMsg(msg)))
    twice = Relay6Message(MessageType.RELAY_FORW, 1, RELAY_ADDRESS, MN_LL, (RelayMsg(relay),))
    assert roundtrip(twice).inner == relay


def test_dhclient_solicit_parses() -> None:
    # Captured from isc-dhcp-client 4.4.3 ``dhclient -6 -P`` with default-duid set to the
    # lab's DUID-EN in its lease file (as the MN's hook writes it).
    msg = dhcp6.unpack(CAPTURE.read_bytes())
    assert isinstance(msg, Dhcp6Message) and msg.msg_type == MessageType.SOLICIT
    assert msg.client_duid == MN_DUID and msg.server_duid is None
    ia = msg.find(IaPd)
    assert ia is not None and ia.iaid == 3 and ia.options == ()  # IAID: the MAC's last octets
    assert msg.find(OptionRequest) == OptionRequest((23, 24, 39, 31))
    assert msg.pack() == CAPTURE.read_bytes()


def h(*parts: str) -> bytes:
    return bytes.fromhex("".join(parts))


HDR = "01123456"
BAD = [
    ("", "shorter than a header"),
    ("00123456", "unknown message type 0"),
    ("0e123456", "unknown message type 14"),
    (HDR + "000100", "truncated option header"),
    (HDR + "00010005aabb", "runs past the end"),
    (HDR + "00010002aabb", "DUID of 2 octets"),
    (HDR + "00010003aabbcc00010003aabbcc", "option 1 repeated"),
    (HDR + "000800010a", "elapsed time of 1 octets"),
    (HDR + "000700020000", "preference of 2 octets"),
    (HDR + "000e000100", "rapid commit of 1 octets"),
    (HDR + "00060003001700", "option request of odd length"),
    (HDR + "0009000401123456", "option 9 in a client/server message"),
    (HDR + "00250005000000007f", "option 37 in a client/server message"),
    (HDR + "0012000178", "option 18 in a client/server message"),
    (HDR + "0005001820010db8000000000000000000000001000000000000003c", "outside an IA"),
    (HDR + "0019000b0000000300000000000000", "IA_PD of 11 octets"),
    (HDR + "0019000c000000030000003c0000001e", "T1 60 exceeds T2 30"),
    (HDR + "0019000c00000003000000000000000000" "19000c000000030000000000000000",
     "with IAID 3"),
    (HDR + "00190029000000030000000000000000" "001a0019" "0000003c0000001e40"
     "20010db8400001010000000000000000", "preferred lifetime 60 exceeds valid 30"),
    (HDR + "00190029000000030000000000000000" "001a0019" "000000000000000081"
     "20010db8400001010000000000000000", "prefix length 129"),
    (HDR + "00190029000000030000000000000000" "001a0019" "000000000000000040"
     "20010db8400001010000000000000001", "host bits set"),
    (HDR + "00190014000000030000000000000000" "00010003aabbcc00", "option 1 inside IA_PD"),
    (HDR + "00030029000000010000000000000000" "001a0019" "000000000000000040"
     "20010db8400001010000000000000000", "option 26 inside IA_NA"),
    (HDR + "000d0001" "00", "status code shorter"),
    (HDR + "000d0003" "0000ff", "not UTF-8"),
    ("0c00" + "00" * 31, "relay message of 33 octets"),
    ("0c09" + "00" * 32, "hop count 9"),
    ("0c00" + "00" * 32, "without a relay message option"),
    ("0c00" + "00" * 32 + "00010003aabbcc", "option 1 in a relay message"),
    ("0c00" + "00" * 32 + "000900020112", "shorter than a header"),
    ("0c00" + "00" * 32 + "0025000400000000" + "0009000401123456", "remote-id of 4"),
    ("0c00" + "00" * 32 + "00120000", "empty interface-id"),
]


@pytest.mark.parametrize(("data", "why"), BAD, ids=[w for _, w in BAD])
def test_strict_unpack(data: str, why: str) -> None:
    with pytest.raises(Dhcp6Error, match=why):
        dhcp6.unpack(h(data))


def test_nesting_and_size_limits() -> None:
    inner: dhcp6.Message = Dhcp6Message(MessageType.SOLICIT, 1, (ClientId(MN_DUID),))
    for hop in range(dhcp6.HOP_COUNT_LIMIT + 1):
        inner = Relay6Message(MessageType.RELAY_FORW, min(hop, 8), RELAY_ADDRESS, MN_LL,
                              (RelayMsg(inner),))
    with pytest.raises(Dhcp6Error, match="nested deeper"):
        dhcp6.unpack(inner.pack())
    with pytest.raises(Dhcp6Error, match="more than 1452"):
        dhcp6.unpack(h(HDR) + struct.pack("!HH", 99, 1450) + bytes(1450))
    with pytest.raises(ValueError, match="longer than one frame"):
        Dhcp6Message(MessageType.SOLICIT, 1, (RawOption(99, bytes(1500)),)).pack()


def test_unknown_options_are_kept_and_the_lab_duid_is_read() -> None:
    msg = dhcp6.unpack(h(HDR, "0063000141"))
    assert isinstance(msg, Dhcp6Message) and msg.options == (RawOption(99, b"A"),)
    assert dhcp6.duid_text(MN_DUID) == b"\x00mn1.example#1"
    assert dhcp6.duid_text(h("0003000102fa00000003")) is None  # a DUID-LL: not the lab's
    assert dhcp6.duid_text(OWNER.server_duid) == b"\x00ar1.isp.test"


# --- the vectors of docs/protocol.md section 16 ---------------------------------------------

class _Hooks:
    def identity_on_link(self, peer: IPv6Address, ifindex: int,
                         duid: bytes | None) -> str | None:
        return MN if peer == MN_LL and ifindex == ACCESS else None

    def identity_of_prefix(self, prefix: IPv6Network, ifindex: int) -> str | None:
        return MN

    def owner_of(self, prefix: IPv6Network) -> IPv6Address | None:
        return OWNER.address if prefix.subnet_of(OWNER.pool) else None

    def bound(self, *_: object) -> None: ...

    def ended(self, *_: object) -> None: ...

    def relayed(self, *_: object) -> None: ...


def compute_vectors() -> dict[str, list[tuple[str, str]]]:
    solicit = CAPTURE.read_bytes()
    owner = Dhcp6Server(OWNER, _Hooks(), lambda i: i == ACCESS, clock=lambda: 1_800_000_000.0,
                        relay_auth=UnsignedRelayAuth({RELAY_ADDRESS: "ar2.isp.test"}))
    [advertise] = owner.handle(solicit, MN_LL, dhcp6.ALL_SERVERS, ACCESS)
    prefix = IPv6Network("2001:db8:4000:101::/64")
    request = Dhcp6Message(MessageType.REQUEST, 0x5678AB, (
        ClientId(MN_DUID), ServerId(OWNER.server_duid), ElapsedTime(0),
        IaPd(3, 3600, 5400, (IaPrefix(7200, 7200, prefix),))))
    owner.handle(request.pack(), MN_LL, dhcp6.ALL_SERVERS, ACCESS)
    relay_cfg = Server6Config(
        server_duid=dhcp6.server_duid("ar2.isp.test"), address=RELAY_ADDRESS,
        pool=IPv6Network("2001:db8:4000:200::/56"), prefixlen=64, first=1, last=255,
        valid_s=60, remote_renewals=2, interface_id=b"ar2.isp.test/ar2-acc")
    relay = Dhcp6Server(relay_cfg, _Hooks(), lambda i: i == ACCESS,
                        clock=lambda: 1_800_000_000.0,
                        relay_auth=UnsignedRelayAuth({OWNER.address: "ar1.isp.test"}))
    renew = Dhcp6Message(MessageType.RENEW, 0x9ABCDE, (
        ClientId(MN_DUID), ServerId(OWNER.server_duid), ElapsedTime(0),
        IaPd(3, 3600, 5400, (IaPrefix(7200, 7200, prefix),))))
    [forward] = relay.handle(renew.pack(), MN_LL, dhcp6.ALL_SERVERS, ACCESS)
    [reply] = owner.handle(forward.data, RELAY_ADDRESS, OWNER.address, 3)
    # The same renewal between two ARs that run the authenticator of section 16.4.
    key = _pair_key(RELAY_NAME, OWNER_NAME, ALG_RELAY6)
    owner.relay_auth = RelayAuth6(OWNER.address, {RELAY_ADDRESS: RELAY_NAME}, lambda n: key,
                                  clock=lambda: VECTOR_NOW)
    relay.relay_auth = RelayAuth6(RELAY_ADDRESS, {OWNER.address: OWNER_NAME}, lambda n: key,
                                  clock=lambda: VECTOR_NOW)
    renew2 = replace(renew, xid=0x9ABCDF)
    [signed] = relay.handle(renew2.pack(), MN_LL, dhcp6.ALL_SERVERS, ACCESS)
    [signed_reply] = owner.handle(signed.data, RELAY_ADDRESS, OWNER.address, 3)
    return {
        "advertise": [("server_duid", OWNER.server_duid.hex()), ("pool", str(OWNER.pool)),
                      ("valid_s", str(OWNER.valid_s)), ("solicit", solicit.hex()),
                      ("advertise", advertise.data.hex())],
        "relayed_renew": [("relay", str(RELAY_ADDRESS)), ("owner", str(OWNER.address)),
                          ("renew", renew.pack().hex()), ("relay_forward", forward.data.hex()),
                          ("relay_reply", reply.data.hex())],
        "relay_auth6": [("relay", str(RELAY_ADDRESS)), ("owner", str(OWNER.address)),
                        ("relay_name", RELAY_NAME), ("owner_name", OWNER_NAME),
                        ("relay_private", _private(RELAY_NAME).hex()),
                        ("owner_private", _private(OWNER_NAME).hex()),
                        ("pair_key", key.hex()), ("counter", str(int(VECTOR_NOW * 1e9))),
                        ("renew", renew2.pack().hex()), ("relay_forward", signed.data.hex()),
                        ("relay_reply", signed_reply.data.hex())],
    }


def render_vectors() -> str:
    return "\n".join(
        f"```dhcp6-vector {name}\n" + "".join(f"{k} = {v}\n" for k, v in items) + "```\n"
        for name, items in compute_vectors().items())


def load_vectors() -> dict[str, dict[str, str]]:
    blocks = re.findall(r"^```dhcp6-vector (\w+)\n(.*?)^```", DOC.read_text(), re.S | re.M)
    return {name: dict(line.split(" = ", 1) for line in body.strip().splitlines())
            for name, body in blocks}


VECTORS = load_vectors()


def test_document_has_the_vectors() -> None:
    for name, items in compute_vectors().items():
        assert VECTORS.get(name) == dict(items), f"regenerate the {name} vector"


def opt(code: int, body: bytes) -> bytes:
    return struct.pack("!HH", code, len(body)) + body


def test_advertise_octet_by_octet() -> None:
    vec = VECTORS["advertise"]
    solicit = bytes.fromhex(vec["solicit"])
    server = bytes.fromhex(vec["server_duid"])
    client = MN_DUID
    prefix = IPv6Network(vec["pool"]).network_address.packed[:7] + b"\x01" + bytes(8)
    iaprefix = opt(26, struct.pack("!IIB", 60, 60, 64) + prefix)
    want = (bytes([2]) + solicit[1:4] + opt(2, server) + opt(1, client)
            + opt(25, struct.pack("!III", 3, 30, 48) + iaprefix) + opt(7, b"\xff"))
    assert bytes.fromhex(vec["advertise"]) == want


def relayed_by_hand(vec: dict[str, str]) -> tuple[bytes, bytes]:
    """The vector's Relay-Forward of its renew and the owner's Relay-Reply, unsigned, from
    section 16.1's layout."""
    renew = bytes.fromhex(vec["renew"])
    forward = (bytes([12, 0]) + IPv6Address(vec["relay"]).packed + MN_LL.packed
               + opt(18, b"ar2.isp.test/ar2-acc")
               + opt(37, struct.pack("!I", 32473) + b"mn1.example") + opt(9, renew))
    iaprefix = opt(26, struct.pack("!IIB", 60, 60, 64) + IPv6Network(
        "2001:db8:4000:101::/64").network_address.packed)
    reply = (bytes([7]) + renew[1:4] + opt(2, OWNER.server_duid) + opt(1, MN_DUID)
             + opt(25, struct.pack("!III", 3, 30, 48) + iaprefix))
    back = (bytes([13, 0]) + IPv6Address(vec["relay"]).packed + MN_LL.packed
            + opt(18, b"ar2.isp.test/ar2-acc") + opt(9, reply))
    return forward, back


def test_relayed_renew_octet_by_octet() -> None:
    vec = VECTORS["relayed_renew"]
    forward, back = relayed_by_hand(vec)
    assert bytes.fromhex(vec["relay_forward"]) == forward
    assert bytes.fromhex(vec["relay_reply"]) == back


def test_relay_auth6_octet_by_octet() -> None:
    """The signed Relay-Forward is section 16.3's, then the Authentication option (11) of
    section 16.4; the Relay-Reply the owner signs the same way; the key is documented."""
    vec = VECTORS["relay_auth6"]
    key = documented_pair_key(vec, b"FLATARCH-v1 DHCPv6 relay")
    assert key.hex() == vec["pair_key"]
    head = bytes([255, 2, 0]) + int(vec["counter"]).to_bytes(8, "big")

    def signed(unsigned: bytes) -> bytes:
        zeroed = unsigned + opt(11, head + bytes(32))
        return unsigned + opt(11, head + hmac.new(key, zeroed, hashlib.sha256).digest())

    forward, back = relayed_by_hand(vec)
    assert bytes.fromhex(vec["relay_forward"]) == signed(forward)
    assert bytes.fromhex(vec["relay_reply"]) == signed(back)


if __name__ == "__main__":
    print(render_vectors())
