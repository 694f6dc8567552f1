"""The Wireshark dissector (docs/wireshark/flatarch.lua) run by tshark: a real handoff's capture
decodes to what the agents logged, every message type and flag decodes to what
agents/auth/messages.py reads, and anything messages.py rejects is flagged malformed.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from agents.auth import messages as m
from agents.auth.errors import AuthError
from tests.dissector import (
    DISSECTOR,
    TSHARK_MISSING,
    Frame,
    check_handoff,
    decode,
    have_tshark,
    write_datagrams,
)

DATA = Path(__file__).resolve().parents[1] / "data"
DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
TYPE_NAMES = {m.MsgType.AUTH: "AUTH", m.MsgType.AUTH_REPLY: "AUTH_REPLY",
              m.MsgType.REMSK: "REMSK", m.MsgType.REMSK_ACK: "REMSK_ACK",
              m.MsgType.FAILURE: "FAILURE", m.MsgType.COOKIE: "COOKIE"}

needs_tshark = pytest.mark.skipif(not have_tshark(), reason=TSHARK_MISSING)


def doc_vectors() -> list[bytes]:
    """Every message of docs/protocol.md's test vectors: both suites, and the vectors of
    the flags and the authenticator-initiated re-MSK (§12.1)."""
    names = ("auth_message", "auth_reply", "remsk", "remsk_ack", "failure", "cookie_reply")
    found = re.findall(rf"^({'|'.join(names)}) = ([0-9a-f]+)$", DOC.read_text(), re.M)
    assert {n for n, _ in found} == set(names) and len(found) >= 2 * len(names)
    return [bytes.fromhex(v) for _, v in found]


def crafted() -> list[bytes]:
    """Messages with the flags and parts the vectors lack: P, I, G, C, the TAL, IPv6."""
    nonce, tag, sid = bytes(range(16)), bytes(range(16, 32)), bytes(range(8))
    v4 = m.to_prefix("10.64.0.10")
    v6 = m.to_prefix("2001:db8::/48")
    auth = m.AuthMessage(1, 1_764_620_000_123_456, nonce, bytes(16), "mn1.home.test",
                         "ar2.isp.test", (v4,), True, None, tag)
    return [
        auth.pack(),
        auth._replace(previous="ar1.isp.test", cookie=b"\x5a" * 16).pack(),
        auth._replace(peer_name="ar2.isp.test", auth_name="ar1.isp.test", page=True,
                      addresses=(v4, v6), suite=2).pack(),
        auth._replace(idle=True, mobility=False, addresses=()).pack(),
        auth._replace(staple=bytes(range(200)) * 6, cookie=b"\x5a" * 16).pack(),  # flag S
        m.AuthReply(True, sid, nonce, nonce[::-1], (v4,), tag,
                    ("ar1.isp.test", "ar2.isp.test", "ar3.isp.test")).pack(),
        m.AuthReply(False, sid, nonce, nonce, (), tag).pack(),
        m.CookieReply(nonce, b"\xa5" * 16).pack(),
        m.Failure(bytes(16)).pack(),
    ]


def expected(data: bytes) -> dict[str, list[str]]:
    """What the dissector must show for a datagram messages.py accepts."""
    msg = m.unpack_any(data)
    out: dict[str, list[str]] = {"flatarch.type_name": [TYPE_NAMES[m.MsgType(data[1])]],
                                 "flatarch.length": [str(len(data))]}
    flags = []
    if isinstance(msg, m.AuthMessage):
        flags = [f for f, on in (("M", msg.mobility), ("C", msg.cookie is not None),
                                 ("P", msg.previous is not None), ("I", msg.idle),
                                 ("G", msg.page), ("O", msg.origin_us is not None),
                                 ("S", msg.staple is not None)) if on]
        out |= {"flatarch.peer_name": [msg.peer_name], "flatarch.auth_name": [msg.auth_name],
                "flatarch.previous": [msg.previous] if msg.previous else [],
                "flatarch.origin": [] if msg.origin_us is None else [str(msg.origin_us)],
                "flatarch.addr": [str(p) for p in msg.addresses],
                "flatarch.timestamp": [str(msg.timestamp_us)],
                "flatarch.peer_nonce": [msg.peer_nonce.hex()],
                "flatarch.cookie": [msg.cookie.hex()] if msg.cookie else [],
                "flatarch.staple": [msg.staple.hex()] if msg.staple else [],
                "flatarch.tag": [msg.mac.hex()]}
    elif isinstance(msg, m.AuthReply):
        flags = [f for f, on in (("M", msg.mobility), ("T", bool(msg.tal))) if on]
        out |= {"flatarch.addr": [str(p) for p in msg.rerouted], "flatarch.tal": list(msg.tal),
                "flatarch.session_id": [msg.session_id.hex()],
                "flatarch.auth_nonce": [msg.auth_nonce.hex()], "flatarch.tag": [msg.mac.hex()]}
    elif isinstance(msg, m.Remsk):
        out |= {"flatarch.nonce": [msg.nonce.hex()], "flatarch.timestamp": [str(msg.timestamp_us)]}
    elif isinstance(msg, m.RemskAck):
        out |= {"flatarch.echo": [msg.echo_nonce.hex()], "flatarch.nonce": [msg.nonce.hex()]}
    elif isinstance(msg, m.CookieReply):
        out |= {"flatarch.echo": [msg.echo.hex()], "flatarch.cookie": [msg.cookie.hex()]}
    else:
        out |= {"flatarch.echo": [msg.echo.hex()]}
    out["flatarch.flags.set"] = [",".join(flags)] if flags else []
    return out


def accepted(data: bytes) -> bool:
    try:
        m.unpack_any(data)
    except AuthError:
        return False
    return True


def check_frame(frame: Frame, data: bytes) -> None:
    if accepted(data):
        assert frame["flatarch.malformed"] == [], (data.hex(), frame["_ws.expert.message"])
        for field, want in expected(data).items():
            assert frame[field] == want, (field, data.hex())
    else:
        assert frame["flatarch.malformed"], f"not flagged malformed: {data.hex()}"


def mutations(seeds: list[bytes], count: int, rng: random.Random) -> list[bytes]:
    """Truncated, extended, bit-flipped and field-poked variants of valid messages."""
    interesting = (0, 1, 2, 3, 4, 6, 7, 8, 15, 16, 17, 18, 32, 33, 63, 64, 128, 129, 253, 255)
    out = []
    for _ in range(count):
        d = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(6)
            if op == 0 and len(d) > 1:
                del d[rng.randrange(1, len(d)):]
            elif op == 1:
                d += rng.randbytes(rng.randint(1, 20))
            elif op == 2:
                d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
            elif op == 3:
                d[rng.randrange(len(d))] = rng.choice(interesting)
            elif op == 4 and len(d) > 2:
                d[2] = rng.randrange(64)  # the flags octet
            elif op == 5 and len(d) > 45:
                # Near the names and lists, where the length and count octets sit.
                d[rng.randrange(44, min(len(d), 120))] = rng.choice(interesting)
        out.append(bytes(d))
    return out


def test_dissector_sizes_are_the_parser_s() -> None:
    """The Lua file's size constants are messages.py's (the document's sizes may lag)."""
    lua = dict(re.findall(r"^local ([A-Z_]+) = (\d+)$", DISSECTOR.read_text(), re.M))
    want = {"AUTH_FIXED": m.AUTH_FIXED, "AUTH_MIN_LEN": m.AUTH_MIN_LEN,
            "AUTH_MAX_LEN": m.AUTH_MAX_LEN, "AUTH_MAX_PLAIN": m.AUTH_MAX_PLAIN,
            "STAPLE_VERSION": m.STAPLE_VERSION, "MAX_STAPLE_LEN": m.MAX_STAPLE_LEN,
            "REPLY_FIXED": m.REPLY_FIXED,
            "REPLY_MIN_LEN": m.REPLY_MIN_LEN, "REPLY_MAX_LEN": m.REPLY_MAX_LEN,
            "REMSK_LEN": m.REMSK_LEN, "REMSK_ACK_LEN": m.REMSK_ACK_LEN,
            "FAILURE_LEN": m.FAILURE_LEN, "COOKIE_REPLY_LEN": m.COOKIE_REPLY_LEN,
            "MAX_ADDRESSES": m.MAX_ADDRESSES, "MAX_TAL": m.MAX_TAL,
            "SESSION_ID_LEN": m.SESSION_ID_LEN, "COOKIE_LEN": m.COOKIE_LEN,
            "VERSION": m.VERSION, "PORT": 7411}
    assert {k: int(lua[k]) for k in want} == want


@needs_tshark
def test_every_message_type_and_flag_decodes_as_the_agents_read_it(tmp_path: Path) -> None:
    datagrams = doc_vectors() + crafted()
    pcap = tmp_path / "messages.pcap"
    write_datagrams(pcap, datagrams)
    frames = decode(pcap)
    assert len(frames) == len(datagrams)
    for frame, data in zip(frames, datagrams, strict=True):
        assert accepted(data)
        check_frame(frame, data)
    flags = {f for fr in frames for s in fr["flatarch.flags.set"] for f in s.split(",")}
    assert flags == {"M", "C", "P", "I", "G", "O", "S", "T"}


@needs_tshark
def test_malformed_datagrams_are_flagged_not_misread(tmp_path: Path) -> None:
    good = crafted()[0]
    bad = [
        good[:-1],  # truncated: the tag is cut
        good + b"\x00",  # trailing octet
        bytes([2]) + good[1:],  # unknown version
        good[:1] + bytes([9]) + good[2:],  # unknown type
        good[:1] + bytes([7]) + good[2:],  # the reserved REDIRECT type
        good[:2] + bytes([0x41]) + good[3:],  # an undefined flag
        good[:2] + bytes([0x20]) + good[3:],  # flag O without flag M
        good[:44] + bytes([good[44] + 1]) + good[45:],  # peer name length off by one
        good[:44] + good[44:].replace(b"mn1", b"MN1"),  # not a canonical name
        m.Failure(bytes(16)).pack() + b"x",  # fixed-size message with a trailing octet
        b"\x01\x01",  # shorter than the header
    ]
    pcap = tmp_path / "malformed.pcap"
    write_datagrams(pcap, bad)
    frames = decode(pcap)
    assert len(frames) == len(bad)
    for frame, data in zip(frames, bad, strict=True):
        assert not accepted(data)
        assert frame["flatarch.malformed"], data.hex()
    # Nothing is read past the first violation: the trailing octet leaves no tag decoded.
    assert frames[1]["flatarch.tag"] == [] and frames[7]["flatarch.peer_name"] == []
    assert "unexpected octets" in frames[1]["_ws.expert.message"][0]


@needs_tshark
def test_dissector_accepts_exactly_what_the_parser_accepts(tmp_path: Path) -> None:
    rng = random.Random(21)
    seeds = doc_vectors() + crafted()
    cases = mutations(seeds, 3000, rng)
    pcap = tmp_path / "fuzz.pcap"
    write_datagrams(pcap, cases)
    frames = decode(pcap)
    assert len(frames) == len(cases)
    for frame, data in zip(frames, cases, strict=True):
        check_frame(frame, data)
    assert 50 < sum(map(accepted, cases)) < len(cases) - 50  # both verdicts exercised


@needs_tshark
def test_dhcp_home_agent_option_and_relay_remote_id(tmp_path: Path) -> None:
    """Option 224 (the Home Agent's name) and option 82's remote ID (the MN's name) as text,
    from the DHCP test vectors of docs/protocol.md section 14.6."""
    text = DOC.read_text()
    offer, relayed = (bytes.fromhex(re.search(rf"^{k} = ([0-9a-f]+)$", text, re.M)[1])  # type: ignore[index]
                      for k in ("offer", "relayed_request"))
    blank = offer.replace(b"\xe0\x0bha.isp.test", b"\xe0\x0bha isp.test")
    assert blank != offer
    pcap = tmp_path / "dhcp.pcap"
    write_datagrams(pcap, [offer, blank], sport=67, dport=68)
    write_datagrams(tmp_path / "relay.pcap", [relayed], sport=67, dport=67)
    frames = decode(pcap, "dhcp") + decode(tmp_path / "relay.pcap", "dhcp")
    assert [f["flatarch.dhcp.home_agent"] for f in frames] == [["ha.isp.test"],
                                                               ["ha isp.test"], []]
    assert [bool(f["flatarch.dhcp.malformed"]) for f in frames] == [False, True, False]
    assert frames[2]["flatarch.dhcp.remote_id"] == ["mn3.example"]


@needs_tshark
def test_real_handoff_capture_decodes_to_what_the_agents_logged() -> None:
    """tests/data/handoff.pcap: mn1 moved from ar1 to ar2 in the figure-2 lab, captured at ar2
    by `flatarch capture`; handoff.json holds what the MN and both ARs logged for it."""
    assert (DATA / "handoff.pcap").stat().st_size < 8192
    logged = json.loads((DATA / "handoff.json").read_text())
    check_handoff(decode(DATA / "handoff.pcap"), logged)
