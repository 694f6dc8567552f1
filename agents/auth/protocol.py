"""The protocol's cryptographic steps for both roles, as pure synchronous functions.

The services (authenticator.py, peer.py) add sockets, timers and policy around these; the test
vectors in docs/protocol.md are produced and checked by calling them with fixed inputs.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Iterable

from .errors import BadMac, MalformedMessage, UnknownSession
from .kdf import (
    ALG_MAC_A2P,
    ALG_MAC_P2A,
    ALG_REMSK,
    TAG_LEN,
    kdf,
    tag,
    with_auth_nonce,
    with_nonces,
)
from .keys import PublishedKey
from .keystore import KeyStore, Role
from .messages import (
    FLAG_MOBILITY,
    FLAG_TAL,
    VERSION,
    AuthMessage,
    AuthReply,
    MsgType,
    Prefix,
    Remsk,
    RemskAck,
    encode_addresses,
)

_compare = hmac.compare_digest
_REPLY_HEAD = struct.Struct("!BBB8s16s16s")


class SessionKeys:
    """A session's current MSK (and the one before it) with the KDF context of each.

    The previous MSK is kept so that a re-MSK whose answer was lost can be retried: the retry
    is protected by the old MSK and the receiver re-derives from it.
    """

    __slots__ = ("session_id", "peer_name_len", "msk", "ctx", "prev_msk", "prev_ctx")

    def __init__(self, session_id: bytes, peer_name_len: int, msk: bytes, ctx: bytes) -> None:
        self.session_id = session_id
        self.peer_name_len = peer_name_len
        self.msk = msk
        self.ctx = ctx
        self.prev_msk: bytes | None = None
        self.prev_ctx: bytes | None = None

    def __repr__(self) -> str:
        return f"SessionKeys({self.session_id.hex()})"

    def context_for(self, peer_nonce: bytes, auth_nonce: bytes) -> bytes:
        return with_nonces(self.ctx, self.peer_name_len, peer_nonce, auth_nonce)

    def advance(self, base_msk: bytes, base_ctx: bytes, new_ctx: bytes) -> None:
        """MSK' = KDF(base MSK, "FLATARCH-v1 re-MSK", new context); base becomes previous."""
        self.msk = kdf(base_msk, ALG_REMSK, new_ctx)
        self.ctx = new_ctx
        self.prev_msk = base_msk
        self.prev_ctx = base_ctx


def _mac_alg(sender: Role) -> bytes:
    return ALG_MAC_P2A if sender is Role.PEER else ALG_MAC_A2P


# --- one-message authentication -------------------------------------------------------------

def build_auth(keystore: KeyStore, ar_key: PublishedKey, *, timestamp_us: int,
               peer_nonce: bytes, auth_nonce: bytes, addresses: Iterable[Prefix],
               mobility: bool, cookie: bytes | None = None,
               previous: str | None = None, idle: bool = False,
               page: bool = False, staple: bytes | None = None,
               origin_us: int | None = None) -> tuple[bytes, bytes, bytes]:
    """Peer: the AUTH datagram, MSK0 and its KDF context (both needed to open the reply)."""
    msk0, ctx0 = keystore.derive_msk(ar_key, Role.PEER, peer_nonce, auth_nonce)
    body = AuthMessage(keystore.suite, timestamp_us, peer_nonce, auth_nonce, keystore.name,
                       ar_key.name, tuple(addresses), mobility, cookie, b"", previous, idle,
                       page, staple, origin_us).body()
    return body + tag(kdf(msk0, ALG_MAC_P2A, ctx0), body), msk0, ctx0


def check_auth_mac(msk0: bytes, ctx0: bytes, data: bytes) -> None:
    """Authenticator: raise BadMac unless the AUTH tag verifies under MSK0."""
    if not _compare(tag(kdf(msk0, ALG_MAC_P2A, ctx0), data[:-TAG_LEN]), data[-TAG_LEN:]):
        raise BadMac("AUTH tag does not verify")


def seal_auth_reply(msk0: bytes, ctx0: bytes, *, session_id: bytes, peer_nonce: bytes,
                    fresh_nonce: bytes, address_block: bytes,
                    mobility: bool, tal_block: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """Authenticator: AUTH_REPLY from an already encoded address list (and TAL); returns
    MSK1, ctx1."""
    ctx1 = with_auth_nonce(ctx0, fresh_nonce)
    msk1 = kdf(msk0, ALG_REMSK, ctx1)
    flags = (FLAG_MOBILITY if mobility else 0) | (FLAG_TAL if tal_block else 0)
    body = _REPLY_HEAD.pack(VERSION, MsgType.AUTH_REPLY, flags,
                            session_id, peer_nonce, fresh_nonce) + address_block + tal_block
    return body + tag(kdf(msk1, ALG_MAC_A2P, ctx1), body), msk1, ctx1


def build_auth_reply(msk0: bytes, ctx0: bytes, *, session_id: bytes, peer_nonce: bytes,
                     fresh_nonce: bytes, rerouted: Iterable[Prefix],
                     mobility: bool) -> tuple[bytes, bytes, bytes]:
    """Authenticator: the AUTH_REPLY datagram, MSK1 and its context."""
    return seal_auth_reply(msk0, ctx0, session_id=session_id, peer_nonce=peer_nonce,
                           fresh_nonce=fresh_nonce, address_block=encode_addresses(rerouted),
                           mobility=mobility)


def open_auth_reply(data: bytes, msk0: bytes, ctx0: bytes, *, peer_nonce: bytes,
                    peer_name_len: int) -> tuple[AuthReply, SessionKeys]:
    """Peer: verify an AUTH_REPLY to the AUTH that used ``peer_nonce``."""
    reply = AuthReply.unpack(data)
    if not _compare(reply.peer_nonce, peer_nonce):
        raise MalformedMessage("reply answers another request")
    ctx1 = with_auth_nonce(ctx0, reply.auth_nonce)
    msk1 = kdf(msk0, ALG_REMSK, ctx1)
    if not _compare(tag(kdf(msk1, ALG_MAC_A2P, ctx1), data[:-TAG_LEN]), reply.mac):
        raise BadMac("AUTH_REPLY does not verify")
    return reply, SessionKeys(reply.session_id, peer_name_len, msk1, ctx1)


# --- re-MSK during a session ----------------------------------------------------------------

def build_remsk(keys: SessionKeys, sender: Role, *, timestamp_us: int, nonce: bytes) -> bytes:
    body = Remsk(keys.session_id, timestamp_us, nonce, b"").body()
    return body + tag(kdf(keys.msk, _mac_alg(sender), keys.ctx), body)


def open_remsk(keys: SessionKeys, receiver: Role, data: bytes) -> tuple[Remsk, bool]:
    """Verify a REMSK from the other side; True in the result means it used the previous MSK."""
    msg = Remsk.unpack(data)
    if not _compare(msg.session_id, keys.session_id):
        raise UnknownSession("REMSK for another session")
    alg = _mac_alg(Role.AUTHENTICATOR if receiver is Role.PEER else Role.PEER)
    body = data[:-TAG_LEN]
    if _compare(tag(kdf(keys.msk, alg, keys.ctx), body), msg.mac):
        return msg, False
    if keys.prev_msk is not None and keys.prev_ctx is not None and _compare(
        tag(kdf(keys.prev_msk, alg, keys.prev_ctx), body), msg.mac
    ):
        return msg, True
    raise BadMac("REMSK does not verify")


def answer_remsk(keys: SessionKeys, receiver: Role, msg: Remsk, used_prev: bool,
                 nonce: bytes) -> bytes:
    """Move ``keys`` to the new MSK and return the REMSK_ACK that proves it."""
    if used_prev:
        assert keys.prev_msk is not None and keys.prev_ctx is not None
        base_msk, base_ctx = keys.prev_msk, keys.prev_ctx
    else:
        base_msk, base_ctx = keys.msk, keys.ctx
    if receiver is Role.AUTHENTICATOR:
        new_ctx = keys.context_for(msg.nonce, nonce)
    else:
        new_ctx = keys.context_for(nonce, msg.nonce)
    keys.advance(base_msk, base_ctx, new_ctx)
    body = RemskAck(keys.session_id, msg.nonce, nonce, b"").body()
    return body + tag(kdf(keys.msk, _mac_alg(receiver), keys.ctx), body)


def open_remsk_ack(keys: SessionKeys, initiator: Role, data: bytes, sent_nonce: bytes) -> None:
    """Verify the answer to our REMSK (which used ``sent_nonce``) and move to the new MSK."""
    ack = RemskAck.unpack(data)
    if not _compare(ack.session_id, keys.session_id):
        raise UnknownSession("REMSK_ACK for another session")
    if not _compare(ack.echo_nonce, sent_nonce):
        raise MalformedMessage("REMSK_ACK answers another request")
    if initiator is Role.PEER:
        new_ctx = keys.context_for(sent_nonce, ack.nonce)
        responder = Role.AUTHENTICATOR
    else:
        new_ctx = keys.context_for(ack.nonce, sent_nonce)
        responder = Role.PEER
    new_msk = kdf(keys.msk, ALG_REMSK, new_ctx)
    if not _compare(tag(kdf(new_msk, _mac_alg(responder), new_ctx), data[:-TAG_LEN]), ack.mac):
        raise BadMac("REMSK_ACK does not verify")
    keys.advance(keys.msk, keys.ctx, new_ctx)
