"""Wire encoding: round trips of every message, strict rejection of malformed octets, and a
hypothesis fuzz that the parser only ever raises typed errors.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.auth import errors
from agents.auth.errors import AuthError, MalformedMessage, Truncated
from agents.auth.messages import (
    AUTH_MAX_LEN,
    AuthMessage,
    AuthReply,
    CookieReply,
    Failure,
    Prefix,
    Remsk,
    RemskAck,
    to_prefix,
    unpack_any,
)

nonces = st.binary(min_size=16, max_size=16)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
v4 = st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
               st.integers(0, 2**32 - 1), st.integers(0, 32))
v6 = st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
               st.integers(0, 2**128 - 1), st.integers(0, 128))
prefixes: st.SearchStrategy[tuple[Prefix, ...]] = st.lists(
    st.one_of(v4, v6), max_size=16, unique=True).map(tuple)

auths = st.builds(AuthMessage, st.sampled_from([1, 2]), st.integers(0, 2**64 - 1), nonces,
                  nonces, names, names, prefixes, st.booleans(),
                  st.none() | st.binary(min_size=16, max_size=16),
                  st.binary(min_size=16, max_size=16), st.none() | names, st.booleans(),
                  st.booleans(), st.none() | st.binary(min_size=1, max_size=300),
                  st.none() | st.integers(0, 2**64 - 1)).map(
    # Flag O goes with flag M only (a redirect between ARs).
    lambda m: m if m.mobility else m._replace(origin_us=None))
replies = st.builds(AuthReply, st.booleans(), st.binary(min_size=8, max_size=8), nonces, nonces,
                    prefixes, st.binary(min_size=16, max_size=16),
                    st.just(()) | st.lists(names, min_size=1, max_size=8).map(tuple))
remsks = st.builds(Remsk, st.binary(min_size=8, max_size=8), st.integers(0, 2**64 - 1), nonces,
                   st.binary(min_size=16, max_size=16))
acks = st.builds(RemskAck, st.binary(min_size=8, max_size=8), nonces, nonces,
                 st.binary(min_size=16, max_size=16))
others = st.one_of(st.builds(Failure, nonces), st.builds(CookieReply, nonces, nonces))


@settings(max_examples=150, deadline=None)
@given(msg=st.one_of(auths, replies, remsks, acks, others))
def test_round_trip(msg: object) -> None:
    data = msg.pack()  # type: ignore[attr-defined]
    again = type(msg).unpack(data)  # type: ignore[attr-defined]
    assert again == msg
    assert unpack_any(data) == msg
    assert again.pack() == data


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=1000))
def test_garbage_raises_only_typed_errors(data: bytes) -> None:
    try:
        msg = unpack_any(data)
    except AuthError:
        return
    assert msg.pack() == data  # whatever parses is canonical


@settings(max_examples=150, deadline=None)
@given(msg=auths, cut=st.integers(0, 2000))
def test_every_truncation_and_extension_of_auth_is_rejected(msg: AuthMessage, cut: int) -> None:
    data = msg.pack()
    cut %= len(data)
    with pytest.raises(AuthError):
        AuthMessage.unpack(data[:cut])
    with pytest.raises(AuthError):
        AuthMessage.unpack(data + b"\x00")


def _auth(**changes: Any) -> AuthMessage:
    base = AuthMessage(1, 1_700_000_000_000_000, b"\x01" * 16, b"\x02" * 16, "mn1.example.net",
                       "ar1.example.net", (to_prefix("192.0.2.1"),), True, None, b"\x03" * 16)
    return base._replace(**changes)


@pytest.mark.parametrize("edit, error", [
    (lambda good: b"\x02" + good[1:], errors.BadVersion),
    (lambda good: good[:1] + b"\x03" + good[2:], errors.UnknownType),
    (lambda good: good[:2] + b"\x41" + good[3:], MalformedMessage),  # undefined flag
    (lambda good: good[:3] + b"\x09" + good[4:], errors.UnsupportedSuite),
    (lambda good: good[:20], Truncated),
    (lambda good: good + bytes(AUTH_MAX_LEN), errors.Oversized),
    # A trailing octet before the MAC; the cookie flag without a cookie.
    (lambda good: good[:-16] + b"\x00" + good[-16:], MalformedMessage),
    (lambda good: good[:2] + b"\x03" + good[3:], Truncated),
    # Flag O without flag M; flag O with its 8 octets missing.
    (lambda good: good[:2] + b"\x20" + good[3:], MalformedMessage),
    (lambda good: good[:2] + b"\x21" + good[3:-16 - 8] + good[-16:], Truncated),
])
def test_specific_rejections(edit: Callable[[bytes], bytes], error: type[AuthError]) -> None:
    with pytest.raises(error):
        AuthMessage.unpack(edit(_auth().pack()))


def test_previous_authenticator_round_trips_and_is_strict() -> None:
    msg = _auth(previous="ar1.isp.test", cookie=b"\x07" * 16)
    data = msg.pack()
    assert data[2] == 0x07  # mobility, cookie and previous flags
    back = AuthMessage.unpack(data)
    assert back == msg
    assert back.address_block(data) == data[-(16 + 16 + 7):-(16 + 16)]
    plain = _auth().pack()
    with pytest.raises(AuthError):  # flag set, but no name where it belongs
        AuthMessage.unpack(plain[:2] + b"\x05" + plain[3:])


@pytest.mark.parametrize("bad_name", [b"MN1.example.net", b"mn1.example.net.", b"mn1..net",
                                      b"-mn.net", b"mn_1.net", b"mn\xff.net"])
def test_non_canonical_names_rejected(bad_name: bytes) -> None:
    good = _auth(peer_name="x").pack()
    data = good[:44] + bytes([len(bad_name)]) + bad_name + good[46:]
    with pytest.raises(MalformedMessage):
        AuthMessage.unpack(data)


def test_bad_addresses_rejected() -> None:
    good = _auth(addresses=()).pack()
    start = len(good) - 17  # the count octet of an empty list

    def with_list(block: bytes) -> bytes:
        return good[:start] + block + good[-16:]

    assert AuthMessage.unpack(with_list(b"\x00")).addresses == ()
    with pytest.raises(MalformedMessage):  # host bits beyond /24
        AuthMessage.unpack(with_list(b"\x01\x04\x18\xc0\x00\x02\x01"))
    with pytest.raises(MalformedMessage):  # prefix length 33
        AuthMessage.unpack(with_list(b"\x01\x04\x21\xc0\x00\x02\x01"))
    with pytest.raises(MalformedMessage):  # family 5
        AuthMessage.unpack(with_list(b"\x01\x05\x20" + bytes(16)))
    with pytest.raises(MalformedMessage):  # duplicate
        AuthMessage.unpack(with_list(b"\x02" + b"\x04\x20\xc0\x00\x02\x01" * 2))
    with pytest.raises(MalformedMessage):  # count above 16
        AuthMessage.unpack(with_list(b"\x11" + b"\x04\x20\xc0\x00\x02\x01" * 17))
    with pytest.raises(Truncated):
        AuthMessage.unpack(with_list(b"\x02\x04\x20\xc0\x00\x02\x01"))


def test_pack_refuses_invalid_fields() -> None:
    with pytest.raises(ValueError):
        _auth(peer_name="Upper.example").pack()
    with pytest.raises(ValueError):
        _auth(peer_nonce=b"short").pack()
    with pytest.raises(ValueError):
        _auth(addresses=tuple(to_prefix(f"10.0.0.{i}") for i in range(17))).pack()
    with pytest.raises(ValueError):
        _auth(mac=b"").pack()


def test_address_normalisation() -> None:
    assert str(to_prefix("2001:db8::1")) == "2001:db8::1/128"
    assert to_prefix(ipaddress.ip_address("192.0.2.5")) == ipaddress.ip_network("192.0.2.5/32")
    with pytest.raises(ValueError):
        to_prefix("192.0.2.5/24")


def test_reply_tracking_area_list_round_trips_and_is_strict() -> None:
    reply = AuthReply(True, b"s" * 8, b"\x01" * 16, b"\x02" * 16, (to_prefix("10.64.0.10"),),
                      b"\x03" * 16, ("ar1.isp.test", "ar2.isp.test"))
    data = reply.pack()
    assert data[2] == 0x03  # mobility and TAL
    assert AuthReply.unpack(data) == reply
    plain = reply._replace(tal=()).pack()
    assert AuthReply.unpack(plain).tal == ()
    with pytest.raises(AuthError):  # TAL flag without a list
        AuthReply.unpack(plain[:2] + b"\x03" + plain[3:])
    with pytest.raises(AuthError):  # a list that claims one more name than it holds
        body = data[:-16]
        cut = body.rindex(b"\x02\x0c")  # count 2, then a 12-octet name
        AuthReply.unpack(body[:cut] + b"\x03" + body[cut + 1:] + data[-16:])


def test_idle_and_page_flags_round_trip() -> None:
    for idle, page in ((True, False), (False, True)):
        msg = _auth(idle=idle, page=page)
        back = AuthMessage.unpack(msg.pack())
        assert (back.idle, back.page) == (idle, page)


def test_staple_round_trips_and_is_strict() -> None:
    msg = _auth(previous="ar1.isp.test", staple=b"\xab" * 40)
    data = msg.pack()
    assert data[2] == 0x85  # mobility, previous and stapled flags
    back = AuthMessage.unpack(data)
    assert back == msg and back.staple == b"\xab" * 40
    assert AuthMessage.unpack(data).address_block(data) == _auth().address_block(_auth().pack())
    head = 44 + 1 + len(msg.peer_name) + 1 + len(msg.auth_name) + 1 + len("ar1.isp.test")
    assert data[head:head + 3] == b"\x01\x00\x28"
    with pytest.raises(errors.BadVersion):  # unknown staple version
        AuthMessage.unpack(data[:head] + b"\x02" + data[head + 1:])
    with pytest.raises(MalformedMessage):  # zero length
        AuthMessage.unpack(data[:head + 1] + b"\x00\x00" + data[head + 3:])
    with pytest.raises(Truncated):  # a length running into the tag
        AuthMessage.unpack(data[:head + 1] + b"\x05\x00" + data[head + 3:])
    plain = _auth().pack()
    with pytest.raises(AuthError):  # flag set, nothing there
        AuthMessage.unpack(plain[:2] + b"\x81" + plain[3:])
    with pytest.raises(ValueError):
        _auth(staple=b"").pack()
