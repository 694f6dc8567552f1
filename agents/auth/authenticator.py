"""The authenticator: an asyncio UDP service that verifies one-message authentications.

Cheap checks (size, version, per-source rate, cookie under load) precede any DNS lookup or
ECDH; a warm request is answered inside the socket's reader callback without a task.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol, cast, runtime_checkable

from .errors import (
    AuthError,
    AuthTimeout,
    BadCookie,
    BadNonce,
    BadVersion,
    KeyMismatch,
    KeyResolutionError,
    Oversized,
    RateLimited,
    Replay,
    StaleMessage,
    Truncated,
    UnknownSession,
    UnknownType,
    UnsupportedSuite,
    WrongAuthenticator,
)
from .guards import (
    CookieJar,
    LoadMonitor,
    LookupSlots,
    NegativeCache,
    RateLimiter,
    ReplayGuard,
    SpentCookies,
    ZoneHealth,
    claimed_zone,
    source_prefix,
)
from .kdf import NONCE_LEN
from .keys import KeyChangeSource, KeyResolver, PublishedKey, Suite, normalize_name
from .keystore import KeyStore, Role
from .messages import (
    FAILURE_LEN,
    MAX_DATAGRAM,
    MIN_DATAGRAM,
    VERSION,
    AddressLike,
    AuthMessage,
    CookieReply,
    Failure,
    MsgType,
    Prefix,
    Remsk,
    RemskAck,
    encode_addresses,
    encode_names,
    request_echo,
    to_prefix,
)
from .protocol import (
    SessionKeys,
    answer_remsk,
    build_remsk,
    check_auth_mac,
    open_remsk,
    open_remsk_ack,
    seal_auth_reply,
)
from .sockets import DEEP_RCVBUF, deep_receive_buffer

log = logging.getLogger("flatarch.auth")

DEFAULT_PORT = 7411
_BATCH = 64  # datagrams drained per readiness event before yielding to the loop
_RECV_SIZE = 4096  # larger than any message, so oversized datagrams arrive whole
# A flood that the pre-filter lets through arrives in bursts; a deep buffer (DEEP_RCVBUF)
# absorbs them rather than dropping a legitimate AUTH queued behind.
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_CMSG_SPACE = socket.CMSG_SPACE(12)  # struct in_pktinfo
ZERO_NONCE = bytes(NONCE_LEN)
_NO_REPLY_TYPES = frozenset((MsgType.AUTH_REPLY, MsgType.REMSK_ACK, MsgType.FAILURE,
                             MsgType.COOKIE))


def _timed_out(exc: BaseException) -> bool:
    """Whether a lookup failed by silence rather than by an answer. Resolvers wrap their own
    timeouts (agents/dns.py: DnsTimeout inside KeyResolutionError), so the chain is read by
    class name rather than by importing every resolver's error types here."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, TimeoutError) or type(seen).__name__.endswith("Timeout"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _source_key(addr: tuple[str, int]) -> str:
    # Negative-cache key of a source host; a space never occurs in a name or a zone.
    return f"source {addr[0]}"


class AuthResult(NamedTuple):
    """What the AR agent learns from one successful authentication."""

    peer_name: str
    auth_name: str
    suite: Suite
    addresses: tuple[Prefix, ...]
    mobility: bool
    session_id: bytes
    source: tuple[str, int]
    previous: str | None = None  # the authenticator the peer says it came from
    ifindex: int = 0  # the interface the AUTH arrived on, when the service tracks it
    idle: bool = False  # the MN goes idle (draft 4)
    page: bool = False  # an AR asks us to page the MN holding these addresses
    staple: bytes | None = None  # flag S: the MN's DNSSEC bundle (agents/staple.py)
    timestamp_us: int = 0  # the AUTH's own (the peer's clock): orders one MN's moves
    origin_us: int | None = None  # flag O: the MN's AUTH timestamp a redirect follows


@runtime_checkable
class StapleAware(Protocol):
    """A KeyResolver that can take a peer's key from a stapled bundle (agents/staple.py)."""

    async def resolve_stapled(self, name: str, staple: bytes) -> PublishedKey: ...


OnAuthenticated = Callable[
    [AuthResult], Awaitable[Iterable[AddressLike]] | Iterable[AddressLike]
]


@dataclass(frozen=True)
class Limits:
    """Admission and state bounds of the service (the defaults suit one access router)."""

    per_source_rate: float | None = 50.0  # datagrams/s per source address; None: unlimited
    per_source_burst: float = 100.0
    load_threshold_per_s: float = 200.0  # cold requests/s above which cookies are demanded
    max_pending: int = 256  # key resolutions in flight
    cookie: Literal["auto", "always", "never"] = "auto"
    cookie_rotate_s: float = 120.0
    replay_window_s: float = 30.0  # also the clock-skew tolerance
    resolve_timeout_s: float = 2.0
    # A name whose lookup failed, or a zone whose lookup timed out, is refused without a
    # lookup for this long, doubling on each further failure up to negative_max_s.
    negative_base_s: float = 2.0
    negative_max_s: float = 60.0
    # A zone that has answered is struck only after this many of its names timed out with
    # no success in between (guards.ZoneHealth); before that, only the name is.
    zone_timeout_names: int = 8
    key_cache_ttl_s: float = 60.0
    key_cache_size: int = 65536
    sessions: int = 65536
    nonce_lifetime_s: float | None = 3600.0  # None: never rotate the published nonce
    accept_zero_nonce: bool = True
    log_per_s: int = 50  # rejection log lines per second before they are summarised
    failure_per_s: float | None = 20.0  # FAILUREs sent per second, all sources together


class _Session(SessionKeys):
    __slots__ = ("peer_name", "source", "created", "last_peer_ts", "pending")

    def __init__(self, session_id: bytes, peer_name: str, msk: bytes, ctx: bytes,
                 source: tuple[str, int], now: float) -> None:
        # SessionKeys.__init__ inlined: one session is created per authentication.
        self.session_id = session_id
        self.peer_name_len = len(peer_name)
        self.msk = msk
        self.ctx = ctx
        self.prev_msk: bytes | None = None
        self.prev_ctx: bytes | None = None
        self.peer_name = peer_name
        self.source = source
        self.created = now
        self.last_peer_ts = 0
        self.pending: tuple[bytes, asyncio.Future[None]] | None = None


_Reply = bytes | None
_Outcome = _Reply | Coroutine[Any, Any, _Reply]


class Authenticator:
    """One authenticator identity served over UDP.

    ``on_authenticated(result)`` runs after every successful authentication (it may be a
    coroutine function); it returns the claimed addresses it re-routed. Only claimed
    addresses, and only when the peer set the mobility flag, are reported back to the peer.
    """

    def __init__(self, identity_name: str, keystore: KeyStore, resolver: KeyResolver,
                 on_authenticated: OnAuthenticated | None = None, *,
                 limits: Limits | None = None, clock: Callable[[], float] = time.time,
                 on_nonce_rotated: Callable[[PublishedKey], None] | None = None,
                 on_rekey: Callable[[bytes], None] | None = None,
                 track_interface: bool = False,
                 reply_on_arrival: Callable[[int], bool] | None = None,
                 tracking_area: Sequence[str] = ()) -> None:
        if normalize_name(identity_name) != keystore.name:
            raise ValueError(f"key store holds {keystore.name}, not {identity_name}")
        self.limits = limits = limits or Limits()
        self._ks = keystore
        self._name = keystore.name
        self._name_raw = keystore.name.encode("ascii")
        self._suite = keystore.suite
        self._resolver = resolver
        self._callback = on_authenticated
        self._on_nonce_rotated = on_nonce_rotated
        self._on_rekey = on_rekey
        self._clock = clock
        self._limiter = (RateLimiter(limits.per_source_rate, limits.per_source_burst)
                         if limits.per_source_rate is not None else None)
        self._load = LoadMonitor(limits.load_threshold_per_s)
        self._failure_budget = (RateLimiter(limits.failure_per_s, 2 * limits.failure_per_s, 1)
                                if limits.failure_per_s is not None else None)
        self._cookies = CookieJar(limits.cookie_rotate_s)
        self._spent = SpentCookies(limits.cookie_rotate_s)
        self._slots = LookupSlots(limits.max_pending)
        self._negative = NegativeCache(limits.negative_base_s, limits.negative_max_s)
        self._zones = ZoneHealth(limits.zone_timeout_names)
        # One lookup per name at a time: later AUTHs for the name wait on it, slot-free.
        self._inflight: dict[str, asyncio.Task[PublishedKey]] = {}
        self._slot_token = 0
        self._replay = ReplayGuard(limits.replay_window_s)
        self._window_us = int(limits.replay_window_s * 1_000_000)
        # Both tables are plain dicts bounded first-in first-out: the hot path pays one dict
        # lookup, and a resolved key expires by TTL anyway.
        self._keys: dict[str, tuple[PublishedKey, float]] = {}
        self._sessions: dict[bytes, _Session] = {}
        self._pending = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sock: socket.socket | None = None
        self._outbox: list[tuple[bytes, tuple[str, int]]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_ts = 0
        # An AR serves MNs that have no route yet: it must learn the access interface an AUTH
        # came in on (IP_PKTINFO) and answer through it, whatever the routing table says.
        self._track_if = track_interface
        # Bounded least-recently-used, filled only by datagrams that passed the cheap checks;
        # a peer with an answer still to come is pinned and never evicted.
        self._ifindex: OrderedDict[tuple[str, int], tuple[int, bytes]] = OrderedDict()
        self._arrival: tuple[int, bytes] | None = None  # of the datagram being handled
        self._pinned: Counter[tuple[str, int]] = Counter()
        # Which arrival interfaces to answer through regardless of routes: the access links.
        # A backbone peer is answered by the routing table (its path back may differ).
        self._reply_on_arrival = reply_on_arrival or (lambda _ifindex: True)
        # Draft 4: the Tracking Area List an MN may roam while idle, sent in every reply that
        # invoked mobility management.
        self._tal_block = encode_names(tracking_area) if tracking_area else b""
        self.stats: Counter[str] = Counter()
        self._log_second = 0
        self._log_count = 0
        self._log_suppressed = 0
        now = clock()
        self._nonce = os.urandom(NONCE_LEN)
        self._nonce_prev: bytes | None = None
        self._rotate_at = (now + limits.nonce_lifetime_s
                           if limits.nonce_lifetime_s is not None else float("inf"))
        self._accepted_nonces = self._nonce_set()
        if isinstance(resolver, KeyChangeSource):
            resolver.subscribe(self._key_changed)

    # --- identity and published nonce -------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def local_address(self) -> tuple[str, int] | None:
        if self._sock is None:
            return None
        sockname = self._sock.getsockname()
        return (sockname[0], sockname[1])

    def published_key(self) -> PublishedKey:
        """The record to publish: public key, current nonce and the end of its validity."""
        expires = None
        if self.limits.nonce_lifetime_s is not None:
            # A nonce is accepted for one more lifetime after it stops being current.
            expires = int(self._rotate_at + self.limits.nonce_lifetime_s)
        return self._ks.published_key(self._nonce, expires)

    def _nonce_set(self) -> frozenset[bytes]:
        accepted = {self._nonce}
        if self._nonce_prev is not None:
            accepted.add(self._nonce_prev)
        if self.limits.accept_zero_nonce:
            accepted.add(ZERO_NONCE)
        return frozenset(accepted)

    def rotate_nonce(self, nonce: bytes | None = None) -> PublishedKey:
        """Start a new published nonce now (random unless given; the previous one stays
        accepted for one more lifetime) and return the record to publish."""
        if nonce is not None and len(nonce) != NONCE_LEN:
            raise ValueError(f"nonce must be {NONCE_LEN} octets")
        now = self._clock()
        self._nonce_prev = self._nonce
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_LEN)
        lifetime = self.limits.nonce_lifetime_s
        self._rotate_at = now + lifetime if lifetime is not None else float("inf")
        self._accepted_nonces = self._nonce_set()
        key = self.published_key()
        if self._on_nonce_rotated is not None:
            self._on_nonce_rotated(key)
        return key

    # --- service lifecycle ------------------------------------------------------------------

    async def start(self, host: str = "0.0.0.0", port: int = DEFAULT_PORT) -> tuple[str, int]:
        """Bind the UDP socket and serve on the running loop; returns the bound address.

        The socket is watched with ``loop.add_reader`` and drained in batches rather than
        wrapped in a DatagramTransport: the stock selector transport pays one epoll round
        and several Python layers per datagram, which caps a trivial echo at about 22k/s on
        the lab machines, below the 20k/s this service must sustain with crypto.
        """
        if self._sock is not None:
            raise RuntimeError("already started")
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                       flags=socket.AI_PASSIVE)
        family, _, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
        try:
            sock.setblocking(False)
            deep_receive_buffer(sock, DEEP_RCVBUF)
            sock.bind(sockaddr)
            if self._track_if:
                sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._loop = loop
        bound = self.local_address
        assert bound is not None
        log.info("authenticator %s (%s) listening on %s port %d", self._name,
                 self._suite.name, *bound)
        return bound

    def close(self) -> None:
        """Stop serving: unregister and close the socket, cancel pending lookups."""
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for task in list(self._tasks):
            task.cancel()

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        recvfrom = self._recv_pktinfo if self._track_if else sock.recvfrom
        handle = self._datagram
        # Replies produced while draining go out together at the end: on a VM each send that
        # wakes a sleeping receiver costs tens of microseconds, and a burst wakes it once.
        outbox = self._outbox = []
        try:
            for _ in range(_BATCH):
                try:
                    data, addr = recvfrom(_RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    log.debug("receive error: %s", exc)
                    break
                handle(data, addr)
        finally:
            self._outbox = None
            self._arrival = None
            sendto = self._send_on_interface if self._track_if else sock.sendto
            for data, addr in outbox:
                try:
                    sendto(data, addr)
                except OSError as exc:  # a full buffer or an unreachable peer: UDP may drop
                    log.debug("send to %s failed: %s", addr, exc)

    def _recv_pktinfo(self, size: int) -> tuple[bytes, tuple[str, int]]:
        assert self._sock is not None
        data, ancillary, _, addr = self._sock.recvmsg(size, _CMSG_SPACE)
        self._arrival = None
        for level, kind, payload in ancillary:
            if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(payload) >= 12:
                # in_pktinfo: ifindex, then the route's local address, then the header's
                # destination, which the reply must come from or a connected peer drops it.
                # It is kept only once the datagram passes the cheap checks (_note_arrival).
                self._arrival = (int.from_bytes(payload[:4], sys.byteorder), payload[8:12])
        return data, addr

    def _note_arrival(self, addr: tuple[str, int]) -> None:
        arrival = self._arrival
        if arrival is None:
            return
        table = self._ifindex
        table[addr] = arrival
        table.move_to_end(addr)
        pinned = self._pinned
        for _ in range(len(table) - self.limits.sessions):
            oldest = next(iter(table))
            if oldest in pinned:
                table.move_to_end(oldest)  # its AUTH is still being answered
            else:
                del table[oldest]

    def _send_on_interface(self, data: bytes, addr: tuple[str, int]) -> int:
        assert self._sock is not None
        arrival = self._ifindex.get(addr)
        if arrival is None:
            return self._sock.sendto(data, addr)
        ifindex, local = arrival
        if not self._reply_on_arrival(ifindex):
            ifindex = 0  # a backbone peer: the routing table picks the way back
        info = ifindex.to_bytes(4, sys.byteorder) + local + bytes(4)
        return self._sock.sendmsg([data], [(socket.IPPROTO_IP, _IP_PKTINFO, info)], 0, addr)

    def interface_of(self, addr: tuple[str, int]) -> int:
        """The interface the last datagram from ``addr`` arrived on (0: unknown)."""
        arrival = self._ifindex.get(addr)
        return arrival[0] if arrival is not None else 0

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        outbox = self._outbox
        if outbox is not None:
            outbox.append((data, addr))
            return
        sock = self._sock
        if sock is None:
            return
        try:
            if self._track_if:
                self._send_on_interface(data, addr)
            else:
                sock.sendto(data, addr)
        except OSError as exc:
            log.debug("send to %s failed: %s", addr, exc)

    # --- sessions ---------------------------------------------------------------------------

    def session_ids(self) -> list[bytes]:
        return list(self._sessions)

    def session_peer(self, session_id: bytes) -> str:
        session = self._sessions.get(session_id)
        if session is None:
            raise UnknownSession(f"no session {session_id.hex()}")
        return session.peer_name

    def export_msk(self, session_id: bytes) -> bytes:
        """The session's current MSK, for lower-layer key derivation (draft section 3)."""
        session = self._sessions.get(session_id)
        if session is None:
            raise UnknownSession(f"no session {session_id.hex()}")
        return session.msk

    def drop_session(self, session_id: bytes) -> None:
        self._sessions.pop(session_id, None)

    async def remsk(self, session_id: bytes, *, timeout: float = 1.0, retries: int = 2) -> None:
        """Refresh the session MSK from this side (REMSK / REMSK_ACK)."""
        session = self._sessions.get(session_id)
        if session is None:
            raise UnknownSession(f"no session {session_id.hex()}")
        loop = asyncio.get_running_loop()
        for _ in range(retries + 1):
            if self._sock is None:
                raise AuthError("service is not running")
            nonce = os.urandom(NONCE_LEN)
            data = build_remsk(session, Role.AUTHENTICATOR, timestamp_us=self._next_ts(),
                               nonce=nonce)
            future: asyncio.Future[None] = loop.create_future()
            session.pending = (nonce, future)
            self._send(data, session.source)
            try:
                await asyncio.wait_for(asyncio.shield(future), timeout)
                return
            except TimeoutError:
                continue
            finally:
                if session.pending is not None and session.pending[1] is future:
                    session.pending = None
        raise AuthTimeout(f"no REMSK_ACK from {session.peer_name}")

    def _next_ts(self) -> int:
        ts = max(int(self._clock() * 1_000_000), self._last_ts + 1)
        self._last_ts = ts
        return ts

    # --- key cache --------------------------------------------------------------------------

    def _key_changed(self, name: str) -> None:
        if self._keys.pop(name, None) is not None:
            self._ks.forget(name)

    def _remember_key(self, key: PublishedKey, now: float) -> None:
        keys = self._keys
        old = keys.pop(key.name, None)
        if old is not None and old[0].spki != key.spki:
            self._ks.forget(key.name)
        keys[key.name] = (key, now + self.limits.key_cache_ttl_s)
        if len(keys) > self.limits.key_cache_size:
            del keys[next(iter(keys))]

    # --- datagram handling ------------------------------------------------------------------

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            try:
                out = self._dispatch(data, addr)
            except Exception as exc:
                out = self._failure(exc, data, addr)
            if out is None:
                return
            if isinstance(out, bytes):
                if not self._may_answer(out):
                    return
                outbox = self._outbox
                if outbox is not None:
                    outbox.append((out, addr))
                else:
                    self._send(out, addr)
                return
            out = self._guarded(out, data, addr)
            task = asyncio.get_running_loop().create_task(self._send_later(out, addr))
            self._pinned[addr] += 1
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        except Exception:  # the service must survive anything a datagram can cause
            log.exception("internal error handling a datagram from %s", addr)

    async def _send_later(self, out: Coroutine[Any, Any, _Reply], addr: tuple[str, int]) -> None:
        try:
            reply = await out
            if reply is not None and self._may_answer(reply):
                self._send(reply, addr)
        finally:
            pinned = self._pinned
            pinned[addr] -= 1
            if pinned[addr] <= 0:
                del pinned[addr]

    def _may_answer(self, reply: bytes) -> bool:
        """FAILUREs go out within one budget for the whole service, as ICMP errors do: each
        one to a spoofed source on the access link costs a neighbour resolution, and enough
        of those evict the neighbours of the MNs that are really there."""
        budget = self._failure_budget
        if budget is None or reply[1] != MsgType.FAILURE or budget.allow("", self._clock()):
            return True
        self.stats["failure_suppressed"] += 1
        return False

    async def handle(self, data: bytes, addr: tuple[str, int]) -> bytes | None:
        """Process one datagram as the service would and return the reply it would send."""
        out = self._handle_now(data, addr)
        if out is None or isinstance(out, bytes):
            return out
        return await out

    def _handle_now(self, data: bytes, addr: tuple[str, int]) -> _Outcome:
        try:
            out = self._dispatch(data, addr)
        except Exception as exc:
            return self._failure(exc, data, addr)
        if out is None or isinstance(out, bytes):
            return out
        return self._guarded(out, data, addr)

    async def _guarded(self, out: Coroutine[Any, Any, _Reply], data: bytes,
                       addr: tuple[str, int]) -> _Reply:
        try:
            return await out
        except Exception as exc:
            return self._failure(exc, data, addr)

    def _failure(self, exc: Exception, data: bytes, addr: tuple[str, int]) -> _Reply:
        reason = type(exc).__name__ if isinstance(exc, AuthError) else "InternalError"
        self.stats[reason] += 1
        if isinstance(exc, AuthError):
            self._log_reject(reason, exc, addr)
        else:
            log.error("internal error on a datagram from %s: %r", addr[0], exc, exc_info=exc)
        # No reply to rate-limited sources, to datagrams too short to echo (no amplification)
        # or to answers (two services must never bounce failures at each other).
        if isinstance(exc, RateLimited) or len(data) < FAILURE_LEN or data[1] in _NO_REPLY_TYPES:
            return None
        return Failure(request_echo(data)).pack()

    def _log_reject(self, reason: str, exc: Exception, addr: tuple[str, int]) -> None:
        second = int(time.monotonic())
        if second != self._log_second:
            if self._log_suppressed:
                log.warning("%d further rejections not logged", self._log_suppressed)
            self._log_second = second
            self._log_count = 0
            self._log_suppressed = 0
        self._log_count += 1
        if self._log_count > self.limits.log_per_s:
            self._log_suppressed += 1
            return
        log.warning("rejected datagram from %s port %s: %s: %s", addr[0], addr[1], reason, exc)

    def _dispatch(self, data: bytes, addr: tuple[str, int]) -> _Outcome:
        n = len(data)
        bad: AuthError | None = None
        if n < MIN_DATAGRAM:
            bad = Truncated(f"{n} octets is shorter than any message")
        elif n > MAX_DATAGRAM:
            bad = Oversized(f"{n} octets is longer than any message")
        elif data[0] != VERSION:
            bad = BadVersion(f"version {data[0]} is not {VERSION}")
        now = self._clock()
        limiter = self._limiter
        # Even a malformed datagram is answered only inside its source's rate, or a spoofed
        # flood would turn the AR into a reflector.
        if limiter is not None and not limiter.allow(addr[0], now):
            raise RateLimited(f"source {addr[0]} over its rate")
        if bad is not None:
            raise bad
        kind = data[1]
        if kind == MsgType.AUTH:
            return self._on_auth(data, addr, now)
        if kind == MsgType.REMSK:
            return self._on_remsk(data, addr, now)
        if kind == MsgType.REMSK_ACK:
            self._on_remsk_ack(data)
            return None
        raise UnknownType(f"type {kind} is not accepted by an authenticator")

    def _admit(self, data: bytes, addr: tuple[str, int], now: float) -> AuthMessage:
        """Strict parse and every check that needs neither the peer's key nor an MSK."""
        msg = AuthMessage.unpack(data)
        if msg.auth_name != self._name:
            raise WrongAuthenticator(f"message is for {msg.auth_name}")
        if msg.suite != self._suite:
            raise UnsupportedSuite(f"suite {msg.suite} but this authenticator uses "
                                   f"{self._suite.name}")
        if now >= self._rotate_at:
            self.rotate_nonce()
        if msg.auth_nonce not in self._accepted_nonces:
            raise BadNonce("authenticator nonce is not a current published nonce")
        self._replay.check(msg.peer_name, msg.timestamp_us, now)
        cookie = msg.cookie
        if cookie is not None and not self._cookies.check(cookie, addr[0], addr[1], now):
            raise BadCookie(f"cookie does not match {addr[0]} port {addr[1]}")
        self._note_arrival(addr)
        return msg

    def verify(self, data: bytes, source: tuple[str, int]) -> AuthResult:
        """Verify one AUTH synchronously against the key cache: no DNS lookup, no callback,
        no session and no reply. This is the unit the cold/warm benchmarks count.
        """
        now = self._clock()
        msg = self._admit(data, source, now)
        entry = self._keys.get(msg.peer_name)
        if entry is None or entry[1] <= now:
            raise KeyResolutionError(f"no cached key for {msg.peer_name}")
        msk0, ctx0 = self._ks.derive_msk(entry[0], Role.AUTHENTICATOR, msg.peer_nonce,
                                         msg.auth_nonce)
        check_auth_mac(msk0, ctx0, data)
        self._replay.record(msg.peer_name, msg.timestamp_us)
        return AuthResult(msg.peer_name, self._name, self._suite, msg.addresses, msg.mobility,
                          b"", (source[0], source[1]))

    def _on_auth(self, data: bytes, addr: tuple[str, int], now: float) -> _Outcome:
        msg = self._admit(data, addr, now)
        cookie = msg.cookie
        entry = self._keys.get(msg.peer_name)
        if entry is not None and entry[1] > now:
            derived = self._ks.derive_msk_if_cached(entry[0], Role.AUTHENTICATOR,
                                                    msg.peer_nonce, msg.auth_nonce)
            if derived is not None:
                return self._complete(msg, data, addr, derived, now, False)
        # From here on the request costs a DNS lookup, an ECDH, or both.
        self._load.note(now)
        cached = entry is not None and entry[1] > now
        if not cached:
            name = msg.peer_name
            negative = self._negative
            if (negative.blocked(name, now) or negative.blocked(claimed_zone(name), now)
                    or negative.blocked(_source_key(addr), now)):
                self.stats["negative_cached"] += 1
                raise KeyResolutionError(f"{name}, its zone or this source's lookups did not "
                                         "answer lately")
        # A cookie buys one expensive step: a second use counts as no cookie at all.
        verified = cookie is not None and self._spent.spend(cookie, now)
        if not verified and self._cookie_needed(now):
            self.stats["cookie_sent"] += 1
            return CookieReply(msg.peer_nonce, self._cookies.make(addr[0], addr[1], now)).pack()
        if entry is not None and cached:
            derived = self._ks.derive_msk(entry[0], Role.AUTHENTICATOR, msg.peer_nonce,
                                          msg.auth_nonce)
            return self._complete(msg, data, addr, derived, now, False)
        return self._resolve_then_complete(msg, data, addr, verified)

    def _cookie_needed(self, now: float) -> bool:
        mode = self.limits.cookie
        if mode == "always":
            return True
        if mode == "never":
            return False
        return self._load.under_load(now, self._pending, self.limits.max_pending)

    def _lookup(self, name: str, addr: tuple[str, int], verified: bool,
                staple: bytes | None = None) -> asyncio.Task[PublishedKey]:
        """The lookup of ``name`` in flight, or a new one in a fairly shared slot.

        ``verified``: the AUTH carried a fresh cookie, so its source is return-routable; such
        a source whose lookup times out is penalised too, which a spoofer cannot arrange
        for somebody else's address."""
        task = self._inflight.get(name)
        if task is not None:
            return task
        self._slot_token = token = self._slot_token + 1
        zone = claimed_zone(name)
        cancel: list[asyncio.Task[PublishedKey]] = []
        if not self._slots.acquire(token, source_prefix(addr[0]), zone,
                                   lambda: cancel[0].cancel()):
            raise RateLimited("every key-lookup slot is held by a smaller share")
        task = asyncio.get_running_loop().create_task(self._resolve_within(name, staple))
        cancel.append(task)
        self._inflight[name] = task
        self._pending = len(self._slots)
        self._tasks.add(task)

        def done(task: asyncio.Task[PublishedKey]) -> None:
            self._tasks.discard(task)
            self._slots.release(token)
            self._pending = len(self._slots)
            if self._inflight.get(name) is task:
                del self._inflight[name]
            if task.cancelled():
                self.stats["lookup_preempted"] += 1
                return
            exc = task.exception()
            now = self._clock()
            if exc is None:
                self._negative.clear(name)
                self._negative.clear(zone)
                self._zones.answered(zone)
            elif _timed_out(exc):
                if self._zones.timed_out(zone, name):
                    self._negative.strike(zone, now)  # the zone's servers do not answer
                    if verified:
                        self._negative.strike(_source_key(addr), now)
                else:
                    # A zone that answers, and a resolver that was slow for this name: a
                    # loaded AR's own, as likely as the name's servers (issue 15).
                    self.stats["timeout_name_only"] += 1
                    self._negative.strike(name, now)
            else:
                self._negative.strike(name, now)  # only this name: its zone may be fine

        task.add_done_callback(done)
        return task

    async def _resolve_within(self, name: str, staple: bytes | None = None) -> PublishedKey:
        # The resolver's coroutine is made only once the task runs: a lookup preempted
        # before its first step leaves no coroutine that was never awaited. A stapled AUTH
        # offers its DNSSEC proof to a resolver that can check it offline.
        resolving = (self._resolver.resolve_stapled(name, staple)
                     if staple is not None and isinstance(self._resolver, StapleAware)
                     else self._resolver.resolve(name))
        return await asyncio.wait_for(resolving, self.limits.resolve_timeout_s)

    async def _resolve_then_complete(self, msg: AuthMessage, data: bytes,
                                     addr: tuple[str, int], verified: bool = False) -> _Reply:
        name = msg.peer_name
        task = self._lookup(name, addr, verified, msg.staple)
        try:
            key = await asyncio.shield(task)
        except AuthError:
            raise
        except TimeoutError:
            raise KeyResolutionError(f"resolving {name} timed out") from None
        except asyncio.CancelledError:
            if task.cancelled():  # preempted by a smaller share, not our own cancellation
                raise RateLimited(f"lookup of {name} gave its slot to a smaller share") from None
            raise
        except Exception as exc:
            raise KeyResolutionError(f"resolver failed for {name}: {exc!r}") from None
        if key.name != name:
            raise KeyMismatch(f"resolver answered {key.name} for {name}")
        if key.suite != msg.suite:
            raise KeyMismatch(f"{name} publishes a {key.suite.name} key, message uses suite "
                              f"{msg.suite}")
        now = self._clock()
        self._remember_key(key, now)
        try:
            derived = self._ks.derive_msk(key, Role.AUTHENTICATOR, msg.peer_nonce,
                                          msg.auth_nonce)
        except AuthError:
            # A key that does not load must not stay cached: the next AUTH resolves again.
            self._keys.pop(key.name, None)
            raise
        out = self._complete(msg, data, addr, derived, now, True)
        if out is None or isinstance(out, bytes):
            return out
        return await out

    def _complete(self, msg: AuthMessage, data: bytes, addr: tuple[str, int],
                  derived: tuple[bytes, bytes], now: float, recheck: bool) -> _Outcome:
        msk0, ctx0 = derived
        check_auth_mac(msk0, ctx0, data)
        if recheck:  # the lookup awaited: another message from this peer may have won
            self._replay.commit(msg.peer_name, msg.timestamp_us, now)
        else:
            self._replay.record(msg.peer_name, msg.timestamp_us)
        rnd = os.urandom(8 + NONCE_LEN)
        result = AuthResult(msg.peer_name, self._name, self._suite, msg.addresses, msg.mobility,
                            rnd[:8], (addr[0], addr[1]), msg.previous,
                            self.interface_of(addr), msg.idle, msg.page, msg.staple,
                            msg.timestamp_us, msg.origin_us)
        callback = self._callback
        rerouted: Iterable[AddressLike] = ()
        if callback is not None:
            try:
                answer = callback(result)
            except Exception:
                log.exception("on_authenticated failed for %s", msg.peer_name)
                answer = ()
            if type(answer) is not tuple and type(answer) is not list and inspect.isawaitable(
                answer
            ):
                return self._reply_after(answer, result, derived, msg, data, rnd[8:], now)
            rerouted = cast(Iterable[AddressLike], answer)
        return self._reply(result, derived, msg, data, rnd[8:], rerouted, now)

    async def _reply_after(self, pending: Awaitable[Iterable[AddressLike]], result: AuthResult,
                           derived: tuple[bytes, bytes], msg: AuthMessage, data: bytes,
                           fresh: bytes, now: float) -> _Reply:
        rerouted: Iterable[AddressLike]
        try:
            rerouted = await pending
        except Exception:
            log.exception("on_authenticated failed for %s", msg.peer_name)
            rerouted = ()
        return self._reply(result, derived, msg, data, fresh, rerouted, now)

    def _reply(self, result: AuthResult, derived: tuple[bytes, bytes], msg: AuthMessage,
               data: bytes, fresh: bytes, rerouted: Iterable[AddressLike], now: float) -> bytes:
        invoked = msg.mobility and self._callback is not None
        if not invoked:
            block = b"\x00"
        elif rerouted is msg.addresses:
            block = msg.address_block(data)  # all claimed addresses: reuse their encoding
        else:
            wanted = {to_prefix(a) for a in rerouted}
            granted = tuple(p for p in msg.addresses if p in wanted)
            if len(wanted) > len(granted):
                log.warning("on_authenticated reported unclaimed addresses for %s",
                            msg.peer_name)
            block = encode_addresses(granted)
        sid = result.session_id
        reply, msk1, ctx1 = seal_auth_reply(
            derived[0], derived[1], session_id=sid, peer_nonce=msg.peer_nonce,
            fresh_nonce=fresh, address_block=block, mobility=invoked,
            tal_block=self._tal_block if invoked else b"")
        sessions = self._sessions
        sessions[sid] = _Session(sid, msg.peer_name, msk1, ctx1, result.source, now)
        if len(sessions) > self.limits.sessions:
            del sessions[next(iter(sessions))]
        self.stats["accepted"] += 1
        return reply

    # --- re-MSK -----------------------------------------------------------------------------

    def _on_remsk(self, data: bytes, addr: tuple[str, int], now: float) -> bytes:
        Remsk.unpack(data)  # strict shape first, so that junk is reported as such
        session = self._sessions.get(data[3:11])
        if session is None:
            raise UnknownSession(f"REMSK for unknown session {data[3:11].hex()}")
        msg, used_prev = open_remsk(session, Role.AUTHENTICATOR, data)
        self._note_arrival(addr)
        now_us = int(now * 1_000_000)
        if abs(msg.timestamp_us - now_us) > self._window_us:
            raise StaleMessage("REMSK timestamp outside the window")
        if msg.timestamp_us <= session.last_peer_ts:
            raise Replay("REMSK timestamp not after the last one accepted")
        session.last_peer_ts = msg.timestamp_us
        session.source = (addr[0], addr[1])
        if session.pending is not None:
            # Both sides asked at once: the peer's request wins and ours is answered by it.
            _, future = session.pending
            session.pending = None
            if not future.done():
                future.set_result(None)
        ack = answer_remsk(session, Role.AUTHENTICATOR, msg, used_prev, os.urandom(NONCE_LEN))
        self.stats["remsk"] += 1
        if self._on_rekey is not None:
            self._on_rekey(session.session_id)
        return ack

    def _on_remsk_ack(self, data: bytes) -> None:
        RemskAck.unpack(data)
        session = self._sessions.get(data[3:11])
        if session is None:
            raise UnknownSession(f"REMSK_ACK for unknown session {data[3:11].hex()}")
        if session.pending is None:
            raise Replay("REMSK_ACK without a REMSK in flight")
        nonce, future = session.pending
        open_remsk_ack(session, Role.AUTHENTICATOR, data, nonce)
        session.pending = None
        if not future.done():
            future.set_result(None)
        self.stats["remsk"] += 1
        if self._on_rekey is not None:
            self._on_rekey(session.session_id)

    # --- benchmarks and tests ---------------------------------------------------------------

    def prime_key(self, key: PublishedKey) -> None:
        """Place a resolved peer key in the cache, as a previous resolution would have."""
        self._remember_key(key, self._clock())

    def reset_replay_state(self) -> None:
        """Forget every replay mark (benchmarks re-send one pool of messages)."""
        self._replay = ReplayGuard(self.limits.replay_window_s)


__all__ = ["DEFAULT_PORT", "AuthResult", "Authenticator", "Limits", "OnAuthenticated"]
