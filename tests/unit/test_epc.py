"""The anchored baseline's wire format (agents/epc.py): the vectors in docs/baseline.md, strict
parsing with typed errors, and the challenge-response the MME checks."""

from __future__ import annotations

import hashlib
import hmac
import re
from ipaddress import IPv4Address, IPv6Network
from pathlib import Path

import pytest

from agents import epc
from agents.epc import EpcError, Kind, Message

DOC = Path(__file__).resolve().parents[2] / "docs" / "baseline.md"


def vectors() -> dict[str, bytes]:
    text = DOC.read_text().split("### Test vectors", 1)[1]
    return {m[1]: bytes.fromhex(m[2])
            for m in re.finditer(r"^ {4}([a-z0-9-]+)\s+([0-9a-f]+)$", text, re.M)}


V = vectors()


def test_response_is_truncated_hmac_sha256() -> None:
    expected = hmac.new(V["key"], V["rand"], hashlib.sha256).digest()[:16]
    assert V["res"] == expected == epc.response(V["key"], V["rand"])
    assert epc.verify(V["key"], V["rand"], V["res"])
    assert not epc.verify(V["key"], V["rand"], bytes(16))


def test_vectors_encode_and_decode() -> None:
    req = Message(Kind.ATTACH_REQUEST, 7, imsi="mn1")
    ans = Message(Kind.AUTH_INFO_ANSWER, 7, imsi="mn1", rand=V["rand"], res=V["res"])
    acc = Message(Kind.ATTACH_ACCEPT, 7, imsi="mn1", cell="ar3",
                  address=IPv4Address("100.64.0.10"))
    up = Message(Kind.S1_UPLINK, 7, cell="ar3", ue_addr=IPv4Address("100.64.0.10"),
                 ue_port=40000, nas=V["attach-request"])
    for name, msg in (("attach-request", req), ("auth-info-answer", ans),
                      ("attach-accept", acc), ("s1-uplink", up)):
        assert epc.encode(msg) == V[name], name
        assert epc.decode(V[name]) == msg, name
    assert epc.decode(epc.decode(V["s1-uplink"]).nas) == req
    dual = Message(Kind.ATTACH_ACCEPT, 7, imsi="mn1", cell="ar3",
                   address=IPv4Address("100.64.0.10"), prefix6=IPv6Network("fd00:64:0:1::/64"))
    assert epc.encode(dual) == V["attach-accept-dual"]
    assert epc.decode(V["attach-accept-dual"]) == dual


@pytest.mark.parametrize(("tail", "why"), [
    (b"\x0a\x11\x81" + bytes(16), "above 128"),
    (b"\x0a\x11\x40" + b"\xfd" + bytes(8) + b"\x01" + bytes(6), "beyond the prefix"),
    (b"\x0a\x10\x40" + bytes(15), "16 octets, expected 17"),
])
def test_a_bad_prefix6_is_rejected(tail: bytes, why: str) -> None:
    with pytest.raises(EpcError, match=why):
        epc.decode(V["attach-accept"] + tail)


def test_prefix6_only_on_an_attach_accept() -> None:
    with pytest.raises(EpcError, match="unexpected"):
        epc.decode(V["attach-request"] + V["attach-accept-dual"][-19:])
    with pytest.raises(EpcError, match="expected"):
        epc.encode(Message(Kind.ATTACH_REQUEST, 1, imsi="mn1",
                           prefix6=IPv6Network("fd00:64::/64")))


def test_header_layout() -> None:
    raw = V["attach-request"]
    assert raw[:2] == b"EP" and raw[2] == 1 and raw[3] == Kind.ATTACH_REQUEST
    assert int.from_bytes(raw[4:8], "big") == 7


@pytest.mark.parametrize("data, why", [
    (b"", "shorter"),
    (b"XX" + V["attach-request"][2:], "magic"),
    (V["attach-request"][:2] + b"\x02" + V["attach-request"][3:], "version"),
    (V["attach-request"][:3] + b"\x63" + V["attach-request"][4:], "unknown message type"),
    (V["attach-request"][:-1], "truncated"),
    (V["attach-request"] + b"\x01", "truncated field header"),
    (V["attach-request"] + b"\x01\x03mn2", "repeated"),
    (V["attach-request"] + b"\x02\x03ar1", "unexpected"),
    (V["attach-request"] + b"\x63\x01\x00", "unknown field tag"),
    (V["attach-request"][:8], "missing"),
    (V["attach-request"][:8] + b"\x01\x00", "empty"),
    (V["auth-info-answer"][:8] + b"\x01\x03mn1\x03\x02ab\x04\x10" + bytes(16), "RAND"),
    (V["attach-request"][:8] + b"\x01\x03m n", "plain name"),
    (V["attach-request"][:8] + b"\x01\x02\xff\xfe", "ASCII"),
    (b"EP\x01\x09" + bytes(4) + b"\x02\x03ar3\x07\x04" + bytes(4) + b"\x08\x02\x00\x00"
     b"\x09\x0d" + V["attach-request"], "UE_PORT"),
    (b"EP\x01\x09" + bytes(4) + b"\x02\x03ar3\x07\x04" + bytes(4) + b"\x08\x02\x00\x01"
     b"\x09\x03abc", "shorter"),
    (bytes(2000), "more than"),
])
def test_decode_rejects(data: bytes, why: str) -> None:
    with pytest.raises(EpcError, match=why):
        epc.decode(data)


def test_nested_s1_is_rejected() -> None:
    inner = V["s1-uplink"]
    outer = b"EP\x01\x09" + bytes(4) + b"\x02\x03ar3\x07\x04" + bytes(4) + \
        b"\x08\x02\x9c\x40\x09" + bytes((len(inner),)) + inner
    with pytest.raises(EpcError, match="cannot be wrapped"):
        epc.decode(outer)


def test_encode_refuses_wrong_fields() -> None:
    with pytest.raises(EpcError, match="expected"):
        epc.encode(Message(Kind.ATTACH_REQUEST, 1, imsi="mn1", cell="ar1"))
    with pytest.raises(EpcError, match="RAND"):
        epc.encode(Message(Kind.AUTH_REQUEST, 1, imsi="mn1", rand=b"short"))
    with pytest.raises(EpcError, match="sequence"):
        epc.encode(Message(Kind.ATTACH_REQUEST, -1, imsi="mn1"))
    with pytest.raises(EpcError):
        epc.encode(Message(Kind.S1_DOWNLINK, 1, cell="ar1", ue_addr=IPv4Address("1.2.3.4"),
                           ue_port=9, nas=b"garbage"))
