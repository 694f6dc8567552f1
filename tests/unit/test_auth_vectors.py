"""The test vectors of docs/protocol.md, re-derived independently from the document's text.

The derivation here uses only ``cryptography``, ``hmac`` and hand-assembled octets, as an
independent implementation written from the document would; the library must agree.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import re
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash

from agents.auth import (
    Authenticator,
    KeyStore,
    Limits,
    PublishedKey,
    Role,
    StaticDirectory,
    Suite,
)
from agents.auth import vectors as vectors_module
from agents.auth.messages import AuthMessage, AuthReply, RemskAck, unpack_any
from agents.auth.protocol import open_auth_reply

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

LABEL_MSK = b"FLATARCH-v1 MSK"
LABEL_REMSK = b"FLATARCH-v1 re-MSK"
LABEL_P2A = b"FLATARCH-v1 MAC peer->auth"
LABEL_A2P = b"FLATARCH-v1 MAC auth->peer"


def load_vectors() -> dict[str, dict[str, str]]:
    text = DOC.read_text()
    blocks = re.findall(r"^```vector (\w+)\n(.*?)^```", text, re.S | re.M)
    out = {}
    for name, body in blocks:
        out[name] = dict(line.split(" = ", 1) for line in body.strip().splitlines())
    return out


VECTORS = load_vectors()


def h(vec: dict[str, str], key: str) -> bytes:
    return bytes.fromhex(vec[key])


def kdf(z: bytes, label: bytes, ctx: bytes) -> bytes:
    other = bytes([len(label)]) + label + ctx
    return ConcatKDFHash(algorithm=hashes.SHA256(), length=32, otherinfo=other).derive(z)


def tag(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:16]


def ctx(vec: dict[str, str], peer_nonce: bytes, auth_nonce: bytes) -> bytes:
    p = vec["peer_name"].encode()
    a = vec["auth_name"].encode()
    return (bytes([len(p)]) + p + peer_nonce + bytes([len(a)]) + a + auth_nonce
            + bytes([int(vec["suite"])]) + (256).to_bytes(2, "big"))


def address_list(text: str) -> bytes:
    out = b""
    items = text.split()
    for item in items:
        net = ipaddress.ip_network(item)
        out += bytes([net.version, net.prefixlen]) + net.network_address.packed
    return bytes([len(items)]) + out


def name_field(name: str) -> bytes:
    return bytes([len(name)]) + name.encode()


def keys_of(vec: dict[str, str]) -> tuple[object, object, bytes]:
    suite = Suite(int(vec["suite"]))
    peer_secret, auth_secret = h(vec, "peer_private"), h(vec, "auth_private")
    if suite is Suite.P256:
        p_ec = ec.derive_private_key(int.from_bytes(peer_secret, "big"), ec.SECP256R1())
        a_ec = ec.derive_private_key(int.from_bytes(auth_secret, "big"), ec.SECP256R1())
        ltss = p_ec.exchange(ec.ECDH(), a_ec.public_key())
        assert ltss == a_ec.exchange(ec.ECDH(), p_ec.public_key())
        return p_ec, a_ec, ltss
    p_x = x25519.X25519PrivateKey.from_private_bytes(peer_secret)
    a_x = x25519.X25519PrivateKey.from_private_bytes(auth_secret)
    ltss = p_x.exchange(a_x.public_key())
    assert ltss == a_x.exchange(p_x.public_key())
    return p_x, a_x, ltss


def spki(private: object) -> bytes:
    assert isinstance(private, ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey)
    return private.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


def derived(vec: dict[str, str], step: int, parent: bytes, msk_label: bytes,
            nonces: tuple[bytes, bytes], mac_label: bytes,
            mac_name: str) -> tuple[bytes, bytes, bytes]:
    """ctx<step> from the nonces, msk<step> from ``parent`` and the MAC key from that MSK,
    each checked against the document as it is derived."""
    context = ctx(vec, *nonces)
    assert context == h(vec, f"ctx{step}")
    msk = kdf(parent, msk_label, context)
    assert msk == h(vec, f"msk{step}")
    mac = kdf(msk, mac_label, context)
    assert mac == h(vec, mac_name)
    return context, msk, mac


def assert_tagged(vec: dict[str, str], name: str, key: bytes, body: bytes) -> None:
    assert body + tag(key, body) == h(vec, name)


def test_document_has_both_suites() -> None:
    assert set(VECTORS) == {"p256", "x25519"}


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_rederived_independently(name: str) -> None:
    vec = VECTORS[name]
    peer, auth, ltss = keys_of(vec)
    assert spki(peer) == h(vec, "peer_spki")
    assert spki(auth) == h(vec, "auth_spki")
    assert ltss == h(vec, "ltss")

    n_p, n_a = h(vec, "peer_nonce"), h(vec, "auth_nonce_published")
    ctx0, msk0, k_auth = derived(vec, 0, ltss, LABEL_MSK, (n_p, n_a), LABEL_P2A, "k_auth_mac")
    body = (struct.pack("!BBBBQ", 1, 1, 0x01, int(vec["suite"]), int(vec["timestamp_us"]))
            + n_p + n_a + name_field(vec["peer_name"]) + name_field(vec["auth_name"])
            + address_list(vec["addresses"]))
    assert_tagged(vec, "auth_message", k_auth, body)

    fresh, sid = h(vec, "fresh_auth_nonce"), h(vec, "session_id")
    ctx1, msk1, k_reply = derived(vec, 1, msk0, LABEL_REMSK, (n_p, fresh), LABEL_A2P,
                                  "k_reply_mac")
    assert_tagged(vec, "auth_reply", k_reply,
                  b"\x01\x02\x01" + sid + n_p + fresh + address_list(vec["addresses"]))

    r_p, r_a = h(vec, "remsk_peer_nonce"), h(vec, "remsk_auth_nonce")
    k_remsk = kdf(msk1, LABEL_P2A, ctx1)
    assert k_remsk == h(vec, "k_remsk_mac")
    ts = int(vec["remsk_timestamp_us"]).to_bytes(8, "big")
    assert_tagged(vec, "remsk", k_remsk, b"\x01\x03\x00" + sid + ts + r_p)
    _, _, k_ack = derived(vec, 2, msk1, LABEL_REMSK, (r_p, r_a), LABEL_A2P, "k_ack_mac")
    assert_tagged(vec, "remsk_ack", k_ack, b"\x01\x04\x00" + sid + r_p + r_a)

    assert b"\x01\x05\x00" + n_p == h(vec, "failure")
    assert b"\x01\x06\x00" + n_p + h(vec, "cookie") == h(vec, "cookie_reply")


@pytest.mark.parametrize("suite", list(Suite))
def test_library_reproduces_document(suite: Suite) -> None:
    expected = VECTORS[suite.name.lower()]
    assert dict(vectors_module.compute(suite)) == expected


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_library_parses_every_vector_message(name: str) -> None:
    vec = VECTORS[name]
    for key in ("auth_message", "auth_reply", "remsk", "remsk_ack", "failure", "cookie_reply"):
        data = h(vec, key)
        assert unpack_any(data).pack() == data
    msg = AuthMessage.unpack(h(vec, "auth_message"))
    assert msg.peer_name == vec["peer_name"] and msg.auth_name == vec["auth_name"]
    assert msg.mobility and msg.cookie is None
    assert [str(a) for a in msg.addresses] == vec["addresses"].split()
    assert msg.timestamp_us == int(vec["timestamp_us"])
    reply = AuthReply.unpack(h(vec, "auth_reply"))
    assert reply.session_id == h(vec, "session_id") and reply.mobility
    ack = RemskAck.unpack(h(vec, "remsk_ack"))
    assert ack.echo_nonce == h(vec, "remsk_peer_nonce")


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_authenticator_accepts_document_auth(name: str) -> None:
    """The service, with its clock at the vector's time, accepts the document's AUTH once."""
    vec = VECTORS[name]
    suite = Suite(int(vec["suite"]))
    peer_ks = KeyStore.from_private_bytes(vec["peer_name"], suite, h(vec, "peer_private"))
    auth_ks = KeyStore.from_private_bytes(vec["auth_name"], suite, h(vec, "auth_private"))
    directory = StaticDirectory([peer_ks.published_key()])
    now = int(vec["timestamp_us"]) / 1e6 + 1.0
    seen = []

    def on_auth(result: object) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        seen.append(result)
        return [ipaddress.ip_network(a) for a in vec["addresses"].split()]

    auth = Authenticator(vec["auth_name"], auth_ks, directory, on_auth,
                         limits=Limits(cookie="never"), clock=lambda: now)
    auth.rotate_nonce(h(vec, "auth_nonce_published"))
    data = h(vec, "auth_message")
    reply = asyncio.run(auth.handle(data, ("192.0.2.10", 5000)))
    assert reply is not None and reply[1] == 2
    msk0, ctx0 = peer_ks.derive_msk(
        PublishedKey(vec["auth_name"], suite, h(vec, "auth_spki")),
        Role.PEER, h(vec, "peer_nonce"), h(vec, "auth_nonce_published"))
    assert msk0 == h(vec, "msk0")
    parsed, keys = open_auth_reply(reply, msk0, ctx0, peer_nonce=h(vec, "peer_nonce"),
                                   peer_name_len=len(vec["peer_name"]))
    assert [str(a) for a in parsed.rerouted] == vec["addresses"].split()
    assert keys.msk == auth.export_msk(parsed.session_id)
    assert len(seen) == 1
    # The very same octets again: a replay.
    again = asyncio.run(auth.handle(data, ("192.0.2.10", 5000)))
    assert again == h(vec, "failure")
    assert auth.stats["Replay"] == 1
