"""The peer (MN) side: authenticate to an access router in one message, then keep the
session's MSK fresh with re-MSK exchanges initiated by either side.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import cast

from .errors import (
    AuthError,
    AuthRejected,
    AuthTimeout,
    KeyMismatch,
    Replay,
    StaleMessage,
)
from .kdf import NONCE_LEN
from .keys import KeyResolver, PublishedKey, normalize_name
from .keystore import KeyStore, Role
from .messages import (
    AddressLike,
    CookieReply,
    Failure,
    MsgType,
    Prefix,
    to_prefix,
)
from .protocol import (
    SessionKeys,
    answer_remsk,
    build_auth,
    build_remsk,
    open_auth_reply,
    open_remsk,
    open_remsk_ack,
)

log = logging.getLogger("flatarch.auth.peer")

ZERO_NONCE = bytes(NONCE_LEN)
_MAX_COOKIE_ROUNDS = 2


class _PeerProtocol(asyncio.DatagramProtocol):
    """Routes answers to waiting requests by the nonce they echo; serves REMSK from the AR."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiters: dict[bytes, asyncio.Queue[bytes]] = {}
        self.session: PeerSession | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 19:
            log.debug("dropping %d-octet datagram from %s", len(data), addr)
            return
        kind = data[1]
        if kind == MsgType.AUTH_REPLY or kind == MsgType.REMSK_ACK:
            echo = data[11:27]
        elif kind == MsgType.COOKIE or kind == MsgType.FAILURE:
            echo = data[3:19]
        elif kind == MsgType.REMSK and self.session is not None:
            self.session._on_remsk(data)
            return
        else:
            log.debug("dropping unexpected type %d from %s", kind, addr)
            return
        queue = self.waiters.get(echo)
        if queue is None:
            log.debug("dropping unsolicited type %d from %s", kind, addr)
            return
        queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("socket error: %s", exc)

    def expect(self, nonce: bytes) -> asyncio.Queue[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)
        self.waiters[nonce] = queue
        return queue


class PeerSession:
    """An authenticated session with one authenticator; keeps its socket for re-MSK."""

    def __init__(self, peer: Peer, protocol: _PeerProtocol, keys: SessionKeys,
                 ar_addr: tuple[str, int], ar_name: str, claimed: tuple[Prefix, ...],
                 rerouted: tuple[Prefix, ...], mobility: bool) -> None:
        self._peer = peer
        self._protocol = protocol
        self._keys = keys
        self.ar_addr = ar_addr
        self.ar_name = ar_name
        self.addresses = claimed
        self.rerouted = rerouted
        self.mobility = mobility  # True when the AR invoked mobility management
        self.tal: tuple[str, ...] = ()  # the AR's Tracking Area List, for idle mode
        self.on_rekey: Callable[[PeerSession], None] | None = None
        self._last_ar_ts = 0
        self._remsk_in_flight = False
        protocol.session = self

    @property
    def session_id(self) -> bytes:
        return self._keys.session_id

    @property
    def not_rerouted(self) -> tuple[Prefix, ...]:
        """Claimed addresses the AR did not re-route: these need Mobile IP (draft 4)."""
        return tuple(p for p in self.addresses if p not in self.rerouted)

    def export_msk(self) -> bytes:
        """The current MSK, for lower-layer key derivation."""
        return self._keys.msk

    def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol.session = None

    async def remsk(self, *, timeout: float = 1.0, retries: int = 2) -> None:
        """Refresh the MSK from the peer side."""
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            raise AuthError("session is closed")
        self._remsk_in_flight = True
        try:
            for _ in range(retries + 1):
                nonce = os.urandom(NONCE_LEN)
                data = build_remsk(self._keys, Role.PEER, timestamp_us=self._peer._next_ts(),
                                   nonce=nonce)
                queue = self._protocol.expect(nonce)
                transport.sendto(data)
                try:
                    if await self._await_ack(queue, nonce, timeout):
                        return
                finally:
                    self._protocol.waiters.pop(nonce, None)
        finally:
            self._remsk_in_flight = False
        raise AuthTimeout(f"no REMSK_ACK from {self.ar_name}")

    async def _await_ack(self, queue: asyncio.Queue[bytes], nonce: bytes,
                         timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(queue.get(), left)
            except TimeoutError:
                return False
            if data[1] == MsgType.FAILURE:
                raise AuthRejected(f"{self.ar_name} refused the re-MSK")
            try:
                open_remsk_ack(self._keys, Role.PEER, data, nonce)
            except AuthError as exc:
                log.warning("ignoring bad REMSK_ACK from %s: %s", self.ar_name, exc)
                continue
            self._notify()
            return True
        return False

    def _on_remsk(self, data: bytes) -> None:
        if self._remsk_in_flight:
            # Both sides asked at once: ours wins, the AR drops its request on seeing ours.
            log.debug("ignoring the AR's REMSK while ours is in flight")
            return
        try:
            msg, used_prev = open_remsk(self._keys, Role.PEER, data)
            now_us = int(self._peer._clock() * 1_000_000)
            if abs(msg.timestamp_us - now_us) > self._peer.window_us:
                raise StaleMessage("REMSK timestamp outside the window")
            if msg.timestamp_us <= self._last_ar_ts:
                raise Replay("REMSK timestamp not after the last one accepted")
            self._last_ar_ts = msg.timestamp_us
            ack = answer_remsk(self._keys, Role.PEER, msg, used_prev, os.urandom(NONCE_LEN))
        except AuthError as exc:
            log.warning("ignoring REMSK from %s: %s: %s", self.ar_name, type(exc).__name__, exc)
            return
        if self._protocol.transport is not None:
            self._protocol.transport.sendto(ack)
        self._notify()

    def _notify(self) -> None:
        if self.on_rekey is not None:
            try:
                self.on_rekey(self)
            except Exception:
                log.exception("on_rekey callback failed")


class Peer:
    """The MN's authentication client for one identity (its key store)."""

    def __init__(self, keystore: KeyStore, resolver: KeyResolver, *,
                 clock: Callable[[], float] = time.time, replay_window_s: float = 30.0) -> None:
        self._ks = keystore
        self._resolver = resolver
        self._clock = clock
        self.window_us = int(replay_window_s * 1_000_000)
        self._last_ts = 0

    @property
    def name(self) -> str:
        return self._ks.name

    def _next_ts(self) -> int:
        # Strictly increasing even when the clock stalls or steps back: the AR keeps a
        # per-peer high-water mark.
        ts = max(int(self._clock() * 1_000_000), self._last_ts + 1)
        self._last_ts = ts
        return ts

    async def authenticate(self, ar_addr: tuple[str, int], ar_name: str,
                           addresses: Iterable[AddressLike] = (), *, mobility: bool = True,
                           timeout: float = 1.0, retries: int = 2,
                           ar_key: PublishedKey | None = None,
                           local_addr: tuple[str, int] | None = None,
                           previous: str | None = None, idle: bool = False,
                           page: bool = False, staple: bytes | None = None,
                           origin_us: int | None = None) -> PeerSession:
        """Send one AUTH (retried on loss) and return the authenticated session.

        ``ar_key`` skips the DNS lookup when the AR's key arrived another way (draft 3).
        ``origin_us``: between ARs, the timestamp of the MN's AUTH a redirect follows.
        Raises AuthRejected on a failure reply, AuthTimeout when nothing valid came back.
        """
        ar_name = normalize_name(ar_name)
        key = ar_key if ar_key is not None else await self._resolver.resolve(ar_name)
        if key.name != ar_name:
            raise KeyMismatch(f"key of {key.name} offered for {ar_name}")
        if key.suite != self._ks.suite:
            raise KeyMismatch(f"{ar_name} uses {key.suite.name}, this peer {self._ks.suite.name}")
        claimed = tuple(to_prefix(a) for a in addresses)
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            _PeerProtocol, remote_addr=ar_addr, local_addr=local_addr)
        try:
            return await self._exchange(protocol, transport, key, ar_addr, claimed, mobility,
                                        timeout, retries,
                                        normalize_name(previous) if previous else None,
                                        idle, page, staple, origin_us)
        except BaseException:
            transport.close()
            raise

    async def _exchange(self, protocol: _PeerProtocol, transport: asyncio.DatagramTransport,
                        key: PublishedKey, ar_addr: tuple[str, int], claimed: tuple[Prefix, ...],
                        mobility: bool, timeout: float, retries: int,
                        previous: str | None = None, idle: bool = False,
                        page: bool = False, staple: bytes | None = None,
                        origin_us: int | None = None) -> PeerSession:
        loop = asyncio.get_running_loop()
        name_len = len(self._ks.name)
        cookie: bytes | None = None
        cookie_rounds = 0
        attempt = 0
        use_published = True
        while attempt <= retries:
            n_p = os.urandom(NONCE_LEN)
            n_a = (key.usable_nonce(self._clock()) if use_published else None) or ZERO_NONCE
            data, msk0, ctx0 = build_auth(self._ks, key, timestamp_us=self._next_ts(),
                                          peer_nonce=n_p, auth_nonce=n_a, addresses=claimed,
                                          mobility=mobility, cookie=cookie,
                                          previous=previous, idle=idle, page=page,
                                          staple=staple, origin_us=origin_us)
            queue = protocol.expect(n_p)
            transport.sendto(data)
            deadline = loop.time() + timeout
            got_cookie = retry_zero = False
            try:
                while (left := deadline - loop.time()) > 0:
                    try:
                        answer = await asyncio.wait_for(queue.get(), left)
                    except TimeoutError:
                        break
                    kind = answer[1]
                    if kind == MsgType.FAILURE:
                        try:
                            Failure.unpack(answer)
                        except AuthError:
                            continue
                        if n_a != ZERO_NONCE:
                            # The published nonce may have been rotated out before the DNS
                            # record changed; the zero nonce needs no record at all.
                            use_published = False
                            retry_zero = True
                            break
                        raise AuthRejected(f"{key.name} rejected the authentication")
                    if kind == MsgType.COOKIE:
                        try:
                            cookie = CookieReply.unpack(answer).cookie
                        except AuthError as exc:
                            log.warning("ignoring bad cookie reply: %s", exc)
                            continue
                        got_cookie = True
                        break
                    try:
                        reply, keys = open_auth_reply(answer, msk0, ctx0, peer_nonce=n_p,
                                                      peer_name_len=name_len)
                    except AuthError as exc:
                        log.warning("ignoring bad reply from %s: %s", key.name, exc)
                        continue
                    session = PeerSession(self, protocol, keys, ar_addr, key.name, claimed,
                                          reply.rerouted, reply.mobility)
                    session.tal = reply.tal
                    return session
            finally:
                protocol.waiters.pop(n_p, None)
            if retry_zero:
                continue
            if got_cookie and cookie_rounds < _MAX_COOKIE_ROUNDS:
                cookie_rounds += 1  # a cookie round is not a lost datagram
                continue
            attempt += 1
        raise AuthTimeout(f"no valid answer from {key.name} at {ar_addr[0]}:{ar_addr[1]}")
