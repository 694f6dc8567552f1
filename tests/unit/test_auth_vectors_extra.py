"""Sections 6, 6.8, 12.1 and 12.2 of docs/protocol.md against the code (issue 19, defect 9):
the message sizes the document states, the vectors for flags C, P, I, G and T, the zero nonce
and a re-MSK the authenticator starts (re-derived from the text as in test_auth_vectors.py),
and the error each malformed datagram must get.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import struct

import pytest

from agents.auth import (
    Authenticator,
    AuthResult,
    KeyStore,
    Limits,
    Role,
    StaticDirectory,
    Suite,
    messages,
)
from agents.auth import errors as auth_errors
from agents.auth import vectors as vectors_module
from agents.auth.messages import AuthMessage, AuthReply, unpack_any
from agents.auth.protocol import SessionKeys, answer_remsk, open_remsk
from tests.unit.test_auth_vectors import (
    DOC,
    LABEL_A2P,
    LABEL_MSK,
    LABEL_P2A,
    LABEL_REMSK,
    VECTORS,
    address_list,
    ctx,
    h,
    kdf,
    keys_of,
    name_field,
    tag,
)

TEXT = DOC.read_text()
EXTRA = {name: dict(line.split(" = ", 1) for line in body.strip().splitlines())
         for name, body in re.findall(r"^```vector-extra (\w+)\n(.*?)^```", TEXT, re.S | re.M)}
MALFORMED = [tuple(line.split(" = ", 1)[:1] + line.split(" = ", 1)[1].split(" "))
             for block in re.findall(r"^```vector-malformed\n(.*?)^```", TEXT, re.S | re.M)
             for line in block.strip().splitlines()]
BASE = VECTORS["p256"]
AUTHS = sorted(name for name in EXTRA if name.startswith("auth_"))
FLAG_M, FLAG_C, FLAG_P, FLAG_I, FLAG_G, FLAG_O = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


def test_document_states_the_sizes_the_code_sends_and_accepts() -> None:
    rows = dict(re.findall(r"^\| \d \| (\w+) \| [^|]+ \| ([\d,–]+) \|$", TEXT, re.M))
    assert rows["AUTH"] == f"{messages.AUTH_MIN_LEN}–{messages.AUTH_MAX_LEN:,}"
    assert rows["AUTH_REPLY"] == f"{messages.REPLY_MIN_LEN}–{messages.REPLY_MAX_LEN:,}"
    assert (messages.AUTH_MAX_LEN, messages.REPLY_MAX_LEN) == (1472, 2381)  # 1,472 with S
    assert messages.AUTH_MAX_PLAIN == 1127 and "without flag S, an AUTH of more than 1,127" in TEXT
    assert rows["REMSK"] == str(messages.REMSK_LEN)
    assert rows["REMSK_ACK"] == str(messages.REMSK_ACK_LEN)
    assert f"(AUTH {messages.AUTH_MAX_LEN:,},\n  AUTH_REPLY {messages.REPLY_MAX_LEN:,})" in TEXT
    assert f"more than {messages.MAX_DATAGRAM:,} (the largest AUTH)" in TEXT
    assert "873" not in TEXT and " 348" not in TEXT


def test_document_has_every_extra_case() -> None:
    assert set(EXTRA) == {"auth_cookie", "auth_previous", "auth_idle", "auth_page",
                          "auth_zero_nonce", "auth_origin", "reply_tal",
                          "remsk_by_authenticator"}
    assert all(vec["base"] == "p256" for vec in EXTRA.values())
    flags = {int(EXTRA[n]["flags"], 16) for n in AUTHS}
    for bit in (FLAG_C, FLAG_P, FLAG_I, FLAG_G, FLAG_O):
        assert any(f & bit for f in flags)
    assert int(EXTRA["reply_tal"]["flags"], 16) & 0x02  # T
    assert h(EXTRA["auth_zero_nonce"], "auth_nonce") == bytes(16)


def test_library_reproduces_the_document() -> None:
    assert {name: dict(rows) for name, rows in vectors_module.compute_extra().items()} == EXTRA
    assert [(n, e, d.hex()) for n, e, d in vectors_module.malformed()] == MALFORMED


def _msk0(vec: dict[str, str]) -> tuple[bytes, bytes]:
    _, _, ltss = keys_of(BASE)
    ctx0 = ctx(BASE, h(vec, "peer_nonce"), h(vec, "auth_nonce"))
    return kdf(ltss, LABEL_MSK, ctx0), ctx0


@pytest.mark.parametrize("name", AUTHS)
def test_extra_auth_rederived_independently(name: str) -> None:
    vec = EXTRA[name]
    flags = int(vec["flags"], 16)
    msk0, ctx0 = _msk0(vec)
    assert (ctx0, msk0) == (h(vec, "ctx0"), h(vec, "msk0"))
    k = kdf(msk0, LABEL_P2A, ctx0)
    assert k == h(vec, "k_auth_mac")
    body = (struct.pack("!BBBBQ", 1, 1, flags, int(BASE["suite"]), int(vec["timestamp_us"]))
            + h(vec, "peer_nonce") + h(vec, "auth_nonce") + name_field(BASE["peer_name"])
            + name_field(BASE["auth_name"])
            + (name_field(vec["previous"]) if flags & FLAG_P else b"")
            + (int(vec["origin_us"]).to_bytes(8, "big") if flags & FLAG_O else b"")
            + address_list(vec["addresses"]) + (h(vec, "cookie") if flags & FLAG_C else b""))
    assert body + tag(k, body) == h(vec, "auth_message")


def test_reply_with_tracking_area_list_rederived_independently() -> None:
    vec, idle = EXTRA["reply_tal"], EXTRA[EXTRA["reply_tal"]["answers"]]
    msk0, _ = _msk0(idle)
    ctx1 = ctx(BASE, h(idle, "peer_nonce"), h(vec, "fresh_auth_nonce"))
    msk1 = kdf(msk0, LABEL_REMSK, ctx1)
    assert (ctx1, msk1) == (h(vec, "ctx1"), h(vec, "msk1"))
    k = kdf(msk1, LABEL_A2P, ctx1)
    names = vec["tal"].split()
    body = (bytes((1, 2, int(vec["flags"], 16))) + h(vec, "session_id") + h(idle, "peer_nonce")
            + h(vec, "fresh_auth_nonce") + address_list(vec["addresses"])
            + bytes((len(names),)) + b"".join(name_field(n) for n in names))
    assert body + tag(k, body) == h(vec, "auth_reply")


def test_remsk_started_by_the_authenticator_rederived_independently() -> None:
    vec = EXTRA["remsk_by_authenticator"]
    msk1, ctx1, sid = h(BASE, "msk1"), h(BASE, "ctx1"), h(BASE, "session_id")
    k_remsk = kdf(msk1, LABEL_A2P, ctx1)  # the requester's direction: authenticator -> peer
    assert k_remsk == h(vec, "k_remsk_mac")
    n_a, n_p = h(vec, "remsk_auth_nonce"), h(vec, "remsk_peer_nonce")
    body = b"\x01\x03\x00" + sid + int(vec["remsk_timestamp_us"]).to_bytes(8, "big") + n_a
    assert body + tag(k_remsk, body) == h(vec, "remsk")
    ctx2 = ctx(BASE, n_p, n_a)  # Np is the peer's nonce, whoever asked
    msk2 = kdf(msk1, LABEL_REMSK, ctx2)
    assert (ctx2, msk2) == (h(vec, "ctx2"), h(vec, "msk2"))
    k_ack = kdf(msk2, LABEL_P2A, ctx2)
    assert k_ack == h(vec, "k_ack_mac")
    body = b"\x01\x04\x00" + sid + n_a + n_p
    assert body + tag(k_ack, body) == h(vec, "remsk_ack")


def test_library_parses_the_extra_messages() -> None:
    for vec in EXTRA.values():
        for key in ("auth_message", "auth_reply", "remsk", "remsk_ack"):
            if key in vec:
                assert unpack_any(h(vec, key)).pack() == h(vec, key)
    assert AuthMessage.unpack(h(EXTRA["auth_cookie"], "auth_message")).cookie == h(
        EXTRA["auth_cookie"], "cookie")
    assert AuthMessage.unpack(h(EXTRA["auth_previous"], "auth_message")).previous == EXTRA[
        "auth_previous"]["previous"]
    assert AuthMessage.unpack(h(EXTRA["auth_idle"], "auth_message")).idle
    page = AuthMessage.unpack(h(EXTRA["auth_page"], "auth_message"))
    assert page.page and not page.mobility
    reply = AuthReply.unpack(h(EXTRA["reply_tal"], "auth_reply"))
    assert reply.tal == tuple(EXTRA["reply_tal"]["tal"].split()) and reply.mobility


@pytest.mark.parametrize("name", AUTHS)
def test_authenticator_handles_the_extra_auths(name: str) -> None:
    """Accepted at the vector's time; the C case reaches the cookie check and fails it there
    (a cookie is the authenticator's own: section 6.6)."""
    vec = EXTRA[name]
    peer_ks = KeyStore.from_private_bytes(BASE["peer_name"], Suite.P256, h(BASE, "peer_private"))
    auth_ks = KeyStore.from_private_bytes(BASE["auth_name"], Suite.P256, h(BASE, "auth_private"))
    now = int(vec["timestamp_us"]) / 1e6 + 1.0
    results: list[AuthResult] = []

    def on_auth(result: AuthResult) -> list[ipaddress.IPv4Network]:
        results.append(result)
        return [ipaddress.IPv4Network(vec["addresses"])]

    auth = Authenticator(BASE["auth_name"], auth_ks, StaticDirectory([peer_ks.published_key()]),
                         on_auth, limits=Limits(cookie="never"), clock=lambda: now)
    auth.rotate_nonce(h(BASE, "auth_nonce_published"))
    reply = asyncio.run(auth.handle(h(vec, "auth_message"), ("192.0.2.10", 5000)))
    assert reply is not None
    if name == "auth_cookie":
        assert reply[1] == 5 and auth.stats["BadCookie"] == 1
        return
    assert reply[1] == 2 and len(results) == 1
    flags = int(vec["flags"], 16)
    result = results[0]
    assert result.idle == bool(flags & FLAG_I) and result.page == bool(flags & FLAG_G)


def test_peer_answers_the_authenticators_remsk_as_the_document_says() -> None:
    vec = EXTRA["remsk_by_authenticator"]
    keys = SessionKeys(h(BASE, "session_id"), len(BASE["peer_name"]), h(BASE, "msk1"),
                       h(BASE, "ctx1"))
    msg, used_prev = open_remsk(keys, Role.PEER, h(vec, "remsk"))
    ack = answer_remsk(keys, Role.PEER, msg, used_prev, h(vec, "remsk_peer_nonce"))
    assert ack == h(vec, "remsk_ack") and keys.msk == h(vec, "msk2")


def test_malformed_cases_get_the_documented_error() -> None:
    assert len(MALFORMED) >= 30
    valid = {h(BASE, k) for k in ("auth_message", "auth_reply", "remsk", "remsk_ack")}
    for name, error, hexdata in MALFORMED:
        data = bytes.fromhex(hexdata)
        assert data not in valid, name
        assert isinstance(getattr(auth_errors, error), type), name  # a section 10 class
        assert vectors_module._raised(data, BASE) == error, name
    # Every row's error is one the table of section 6.8 names.
    table = TEXT[TEXT.index("### 6.8"):TEXT.index("## 7. Processing")]
    assert {e for _, e, _ in MALFORMED} <= set(re.findall(r"\b([A-Z][A-Za-z]+)\b", table))
