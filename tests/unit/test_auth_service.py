"""The authenticator service and the peer client: real UDP on 127.0.0.1 for the end-to-end
paths, direct datagram handling with a controlled clock for replay, tamper and key cases.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest

from agents.auth import (
    AddressLike,
    Authenticator,
    AuthRejected,
    AuthResult,
    AuthTimeout,
    KeyResolutionError,
    KeyStore,
    Limits,
    Peer,
    Prefix,
    PublishedKey,
    Role,
    StaticDirectory,
    Suite,
    protocol,
)
from agents.auth.messages import MsgType, to_prefix

AR = "ar1.example.net"
MN = "mn1.example.net"
SRC = ("192.0.2.50", 40000)
ADDRS = (to_prefix("10.1.0.7"), to_prefix("2001:db8:7::/64"))
NOW = 1_800_000_000.0


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


Callback = Callable[[AuthResult], Iterable[AddressLike] | Awaitable[Iterable[AddressLike]]]


class Lab:
    def __init__(self, suite: Suite = Suite.P256, *, limits: Limits | None = None,
                 callback: Callback | None = None, clock: Callable[[], float] | None = None,
                 resolver: Any = None) -> None:
        self.results: list[AuthResult] = []
        self.directory = StaticDirectory()
        self.ar_ks = KeyStore.generate(AR, suite)
        self.mn_ks = KeyStore.generate(MN, suite)
        self.directory.publish(self.mn_ks.published_key())
        kwargs: dict[str, Any] = {"limits": limits or Limits(per_source_rate=None)}
        if clock is not None:
            kwargs["clock"] = clock
        self.auth = Authenticator(AR, self.ar_ks, resolver or self.directory,
                                  callback or self._record, **kwargs)
        self.directory.publish(self.auth.published_key())
        self.clock = clock or time.time
        self.peer = Peer(self.mn_ks, self.directory, clock=self.clock)
        self.ts = 0

    def _record(self, result: AuthResult) -> tuple[Prefix, ...]:
        self.results.append(result)
        return result.addresses

    def auth_msg(self, ks: KeyStore | None = None, *, ts: int | None = None,
                 nonce: bytes | None = None, addresses: tuple[Prefix, ...] = ADDRS,
                 ar_key: PublishedKey | None = None, cookie: bytes | None = None) -> bytes:
        if ts is None:
            self.ts = max(int(self.clock() * 1e6), self.ts + 1)
            ts = self.ts
        key = ar_key or self.auth.published_key()
        data, _, _ = protocol.build_auth(
            ks or self.mn_ks, key, timestamp_us=ts, peer_nonce=os.urandom(16),
            auth_nonce=(key.nonce or bytes(16)) if nonce is None else nonce,
            addresses=addresses, mobility=True, cookie=cookie)
        return data

    def handle(self, data: bytes, src: tuple[str, int] = SRC) -> bytes | None:
        return asyncio.run(self.auth.handle(data, src))


class RawClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)

    @classmethod
    async def open(cls, addr: tuple[str, int]) -> tuple[asyncio.DatagramTransport, RawClient]:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(cls, remote_addr=addr)
        return transport, proto

    async def next(self, timeout: float = 0.5) -> bytes | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


def kind(reply: bytes | None) -> int | None:
    return None if reply is None else reply[1]


def serve(body: Callable[[Lab, tuple[str, int]], Awaitable[None]],
          lab: Callable[[], Lab] = Lab) -> None:
    """Run ``body`` against a fresh lab's authenticator listening on 127.0.0.1, closed after."""
    async def main() -> None:
        built = lab()
        addr = await built.auth.start("127.0.0.1", 0)
        try:
            await body(built, addr)
        finally:
            built.auth.close()

    asyncio.run(main())


# --- end to end over UDP ---------------------------------------------------------------------

@pytest.mark.parametrize("suite", list(Suite))
def test_round_trip_and_remsk_over_udp(suite: Suite) -> None:
    async def body(lab: Lab, addr: tuple[str, int]) -> None:
        session = await lab.peer.authenticate(addr, AR, ["10.1.0.7", "2001:db8:7::/64"])
        assert session.rerouted == ADDRS and session.mobility
        assert session.not_rerouted == ()
        (result,) = lab.results
        assert (result.peer_name, result.auth_name, result.suite) == (MN, AR, suite)
        assert result.addresses == ADDRS and result.mobility
        assert result.session_id == session.session_id
        msk1 = session.export_msk()
        assert msk1 == lab.auth.export_msk(session.session_id)
        await session.remsk()
        msk2 = session.export_msk()
        assert msk2 != msk1 and msk2 == lab.auth.export_msk(session.session_id)
        rekeyed: list[object] = []
        session.on_rekey = rekeyed.append
        await lab.auth.remsk(session.session_id)
        # The peer applies the new MSK when its ACK goes out; poll, don't guess a delay.
        deadline = asyncio.get_running_loop().time() + 2.0
        while rekeyed != [session] and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        msk3 = session.export_msk()
        assert msk3 not in (msk1, msk2) and msk3 == lab.auth.export_msk(session.session_id)
        assert rekeyed == [session]
        # A second authentication is warm: the LTSS is cached on both sides.
        ecdh = lab.ar_ks.ecdh_count, lab.mn_ks.ecdh_count
        again = await lab.peer.authenticate(addr, AR, ["10.1.0.7"])
        assert (lab.ar_ks.ecdh_count, lab.mn_ks.ecdh_count) == ecdh
        assert again.session_id != session.session_id
        session.close()
        again.close()

    serve(body, lambda: Lab(suite, clock=None))


def test_mobility_flag_and_rerouted_subset() -> None:
    seen: list[AuthResult] = []

    async def callback(result: AuthResult) -> list[str]:
        seen.append(result)
        await asyncio.sleep(0)
        return ["2001:db8:7::/64", "10.99.0.1"]  # one claimed, one never claimed

    async def body(lab: Lab, addr: tuple[str, int]) -> None:
        s1 = await lab.peer.authenticate(addr, AR, ADDRS)
        assert s1.rerouted == (ADDRS[1],) and s1.not_rerouted == (ADDRS[0],)
        s2 = await lab.peer.authenticate(addr, AR, ADDRS, mobility=False)
        assert s2.rerouted == () and not s2.mobility
        assert [r.mobility for r in seen] == [True, False]
        s1.close()
        s2.close()

    serve(body, lambda: Lab(callback=callback))


def test_service_survives_garbage_over_udp() -> None:
    async def body(lab: Lab, addr: tuple[str, int]) -> None:
        transport, client = await RawClient.open(addr)
        good = lab.auth_msg()
        junk = [
            (b"", False), (b"\x01", False), (os.urandom(18), False),
            (b"\x01\x01" + os.urandom(40), True),  # truncated AUTH
            (b"\x02" + good[1:], True),  # wrong version
            (good + b"\x00", True),  # trailing octet
            (good[:-1] + bytes([good[-1] ^ 1]), True),  # bad tag
            (b"\x01\x07\x00" + os.urandom(40), True),  # REDIRECT: reserved
            (b"\x01\x05\x00" + os.urandom(16), False),  # a FAILURE is never answered
            (bytes(2000), False),  # oversized: version 0, answered? no: see below
        ]
        try:
            for data, answered in junk[:-1]:
                transport.sendto(data)
                reply = await client.next(0.3 if answered else 0.1)
                if answered:
                    assert kind(reply) == MsgType.FAILURE, data[:4]
                else:
                    assert reply is None, data[:4]
            transport.sendto(b"\x01\x01" + bytes(1998))
            assert kind(await client.next()) == MsgType.FAILURE
            stats = lab.auth.stats
            for reason in ("Truncated", "BadVersion", "MalformedMessage", "BadMac",
                           "UnknownType", "Oversized"):
                assert stats[reason] >= 1, reason
            assert stats["InternalError"] == 0
            session = await lab.peer.authenticate(addr, AR, ADDRS)
            assert session.rerouted == ADDRS
            session.close()
        finally:
            transport.close()

    serve(body)


def test_rate_limit_drops_silently() -> None:
    async def body(lab: Lab, addr: tuple[str, int]) -> None:
        transport, client = await RawClient.open(addr)
        try:
            for _ in range(5):
                transport.sendto(b"\x01\x01" + os.urandom(60))
            replies = [await client.next(0.2) for _ in range(5)]
            assert [kind(r) for r in replies] == [MsgType.FAILURE] * 2 + [None] * 3
            assert lab.auth.stats["RateLimited"] == 3
        finally:
            transport.close()

    serve(body, lambda: Lab(limits=Limits(per_source_rate=0.001, per_source_burst=2)))


def test_cookie_round_is_transparent_to_the_peer() -> None:
    async def body(lab: Lab, addr: tuple[str, int]) -> None:
        s1 = await lab.peer.authenticate(addr, AR, ADDRS)
        assert lab.auth.stats["cookie_sent"] == 1
        s2 = await lab.peer.authenticate(addr, AR, ADDRS)  # warm: no challenge
        assert lab.auth.stats["cookie_sent"] == 1
        assert lab.auth.stats["accepted"] == 2
        s1.close()
        s2.close()

    serve(body, lambda: Lab(limits=Limits(per_source_rate=None, cookie="always")))


def test_peer_falls_back_to_zero_nonce_on_stale_record() -> None:
    def stale_record() -> Lab:
        lab = Lab()
        stale = PublishedKey(AR, Suite.P256, lab.ar_ks.spki, os.urandom(16))
        lab.directory.publish(stale)  # DNS still carries a nonce the AR has rotated out
        return lab

    async def body(lab: Lab, addr: tuple[str, int]) -> None:
        session = await lab.peer.authenticate(addr, AR, ADDRS)
        assert lab.auth.stats["BadNonce"] == 1 and lab.auth.stats["accepted"] == 1
        session.close()

    serve(body, stale_record)


def test_peer_sees_rejection_and_timeout() -> None:
    async def main() -> None:
        lab = Lab()
        lab.directory.remove(MN)  # the MN's name no longer has a key
        addr = await lab.auth.start("127.0.0.1", 0)
        try:
            with pytest.raises(AuthRejected):
                await lab.peer.authenticate(addr, AR, ADDRS)
            assert lab.auth.stats["KeyResolutionError"] == 2  # published nonce, then zero
        finally:
            lab.auth.close()
        with pytest.raises(AuthTimeout):
            await lab.peer.authenticate(addr, AR, ADDRS, timeout=0.1, retries=1)

    asyncio.run(main())


# --- datagram handling with a controlled clock -----------------------------------------------

def test_replay_rejected_within_and_after_window() -> None:
    clock = Clock()
    lab = Lab(clock=clock)
    first = lab.auth_msg()
    assert kind(lab.handle(first)) == MsgType.AUTH_REPLY
    assert kind(lab.handle(first)) == MsgType.FAILURE
    assert lab.auth.stats["Replay"] == 1
    older = lab.auth_msg(ts=lab.ts - 1_000_000)  # fresh octets, but older than accepted
    assert kind(lab.handle(older)) == MsgType.FAILURE
    assert lab.auth.stats["Replay"] == 2
    clock.t += 31
    assert kind(lab.handle(first)) == MsgType.FAILURE
    assert lab.auth.stats["StaleMessage"] == 1
    future = lab.auth_msg(ts=int((clock.t + 31) * 1e6))
    assert kind(lab.handle(future)) == MsgType.FAILURE
    assert lab.auth.stats["StaleMessage"] == 2
    assert kind(lab.handle(lab.auth_msg())) == MsgType.AUTH_REPLY
    assert len(lab.results) == 2


def test_tampering_anywhere_is_rejected() -> None:
    lab = Lab(clock=Clock())
    assert kind(lab.handle(lab.auth_msg())) == MsgType.AUTH_REPLY  # warm the caches
    base = lab.auth_msg()
    # flags, timestamp (low octet), peer nonce, last octet of 10.1.0.7, tag: all MAC-covered
    mac_covered = (2, 11, 20, 81, len(base) - 1)
    # timestamp (high octet), Na, a name, the IPv6 prefix: caught before the MAC
    caught_earlier = (5, 40, 50, 70, len(base) - 20)
    for offset in mac_covered + caught_earlier:
        data = bytearray(base)
        data[offset] ^= 0x01
        lab.auth.reset_replay_state()
        assert kind(lab.handle(bytes(data))) == MsgType.FAILURE, offset
    stats = lab.auth.stats
    assert stats["BadMac"] == len(mac_covered)
    assert stats["accepted"] == 1
    assert len(lab.results) == 1
    lab.auth.reset_replay_state()
    assert kind(lab.handle(base)) == MsgType.AUTH_REPLY  # the untouched message still works


def test_rejections_are_logged_with_their_reason(caplog: pytest.LogCaptureFixture) -> None:
    lab = Lab(clock=Clock())
    data = bytearray(lab.auth_msg())
    data[-1] ^= 1
    with caplog.at_level("WARNING", logger="flatarch.auth"):
        reply = lab.handle(bytes(data))
        lab.handle(b"\x07" * 30)
    assert kind(reply) == MsgType.FAILURE
    text = caplog.text
    assert "BadMac" in text and "192.0.2.50" in text
    assert "BadVersion" in text


def test_key_not_matching_name() -> None:
    clock = Clock()
    lab = Lab(clock=clock)
    impostor = KeyStore.generate(MN)  # claims the MN's name with a key the DNS does not have
    assert kind(lab.handle(lab.auth_msg(impostor))) == MsgType.FAILURE
    assert lab.auth.stats["BadMac"] == 1

    class Liar:
        def __init__(self, key: PublishedKey) -> None:
            self.key = key

        async def resolve(self, name: str) -> PublishedKey:
            return self.key

    other = KeyStore.generate("other.example.net")
    lab2 = Lab(clock=clock, resolver=Liar(other.published_key()))
    assert kind(lab2.handle(lab2.auth_msg())) == MsgType.FAILURE
    assert lab2.auth.stats["KeyMismatch"] == 1
    x_key = KeyStore.generate(MN, Suite.X25519).published_key()
    lab3 = Lab(clock=clock, resolver=Liar(x_key))
    assert kind(lab3.handle(lab3.auth_msg())) == MsgType.FAILURE
    assert lab3.auth.stats["KeyMismatch"] == 1


def test_published_key_change_invalidates_cached_ltss() -> None:
    lab = Lab(clock=Clock())
    assert kind(lab.handle(lab.auth_msg())) == MsgType.AUTH_REPLY
    assert lab.ar_ks.has_ltss(lab.mn_ks.published_key())
    new_ks = KeyStore.generate(MN)
    lab.directory.publish(new_ks.published_key())  # the MN re-keys; DNS now has the new key
    assert not lab.ar_ks.has_ltss(lab.mn_ks.published_key())
    assert kind(lab.handle(lab.auth_msg(lab.mn_ks))) == MsgType.FAILURE  # old key: refused
    assert lab.auth.stats["BadMac"] == 1
    assert kind(lab.handle(lab.auth_msg(new_ks))) == MsgType.AUTH_REPLY
    assert lab.ar_ks.has_ltss(new_ks.published_key())


def test_wrong_authenticator_and_nonces() -> None:
    clock = Clock()
    lab = Lab(clock=clock, limits=Limits(per_source_rate=None, nonce_lifetime_s=100,
                                         accept_zero_nonce=False))
    other = KeyStore.generate("ar2.example.net").published_key()
    assert kind(lab.handle(lab.auth_msg(ar_key=other, nonce=bytes(16)))) == MsgType.FAILURE
    assert lab.auth.stats["WrongAuthenticator"] == 1
    assert kind(lab.handle(lab.auth_msg(nonce=os.urandom(16)))) == MsgType.FAILURE
    assert kind(lab.handle(lab.auth_msg(nonce=bytes(16)))) == MsgType.FAILURE
    assert lab.auth.stats["BadNonce"] == 2
    old_nonce = lab.auth.published_key().nonce
    clock.t += 101  # one rotation: the previous nonce is still accepted
    assert kind(lab.handle(lab.auth_msg(nonce=old_nonce))) == MsgType.AUTH_REPLY
    clock.t += 101  # two rotations: it is not
    assert kind(lab.handle(lab.auth_msg(nonce=old_nonce))) == MsgType.FAILURE
    assert kind(lab.handle(lab.auth_msg())) == MsgType.AUTH_REPLY


def test_cookie_under_load_comes_before_dns() -> None:
    lookups: list[str] = []
    clock = Clock()

    class Counting(StaticDirectory):
        async def resolve(self, name: str) -> PublishedKey:
            lookups.append(name)
            return await super().resolve(name)

    lab = Lab(clock=clock, resolver=Counting(),
              limits=Limits(per_source_rate=None, load_threshold_per_s=2))
    strangers = [KeyStore.generate(f"mn{i}.example.net") for i in range(3)]
    replies = [lab.handle(lab.auth_msg(ks)) for ks in strangers]
    assert [kind(r) for r in replies] == [MsgType.FAILURE, MsgType.FAILURE, MsgType.COOKIE]
    assert len(lookups) == 2  # the third cost no lookup
    assert lab.auth.stats["KeyResolutionError"] == 2
    bad_cookie = lab.auth_msg(strangers[2], cookie=bytes(16))
    assert kind(lab.handle(bad_cookie)) == MsgType.FAILURE
    assert lab.auth.stats["BadCookie"] == 1


def test_callback_failure_still_authenticates() -> None:
    def broken(result: AuthResult) -> list[str]:
        raise RuntimeError("BGP speaker down")

    lab = Lab(clock=Clock(), callback=broken)
    reply = lab.handle(lab.auth_msg())
    assert kind(reply) == MsgType.AUTH_REPLY
    assert reply is not None and reply[43] == 0  # nothing re-routed
    assert lab.auth.stats["InternalError"] == 0


def test_remsk_replay_and_lost_ack() -> None:
    clock = Clock()
    lab = Lab(clock=clock)
    key = lab.auth.published_key()
    n_p = os.urandom(16)
    data, msk0, ctx0 = protocol.build_auth(lab.mn_ks, key, timestamp_us=int(NOW * 1e6),
                                           peer_nonce=n_p, auth_nonce=key.nonce or bytes(16),
                                           addresses=(), mobility=False)
    reply = lab.handle(data)
    assert reply is not None
    _, keys = protocol.open_auth_reply(reply, msk0, ctx0, peer_nonce=n_p, peer_name_len=len(MN))
    sid = keys.session_id
    # First REMSK: its ACK is "lost", so the peer stays on MSK1.
    first = protocol.build_remsk(keys, Role.PEER, timestamp_us=int(NOW * 1e6) + 1,
                                 nonce=os.urandom(16))
    assert kind(lab.handle(first)) == MsgType.REMSK_ACK
    assert lab.auth.export_msk(sid) != keys.msk
    assert kind(lab.handle(first)) == MsgType.FAILURE  # replayed REMSK
    assert lab.auth.stats["Replay"] == 1
    nonce = os.urandom(16)
    retry = protocol.build_remsk(keys, Role.PEER, timestamp_us=int(NOW * 1e6) + 2, nonce=nonce)
    ack = lab.handle(retry)
    assert ack is not None
    protocol.open_remsk_ack(keys, Role.PEER, ack, nonce)
    assert keys.msk == lab.auth.export_msk(sid)
    # A REMSK from the authenticator, verified on the peer side and answered.
    session = lab.auth._sessions[sid]
    a_nonce = os.urandom(16)
    from_auth = protocol.build_remsk(session, Role.AUTHENTICATOR,
                                     timestamp_us=int(NOW * 1e6) + 3, nonce=a_nonce)
    msg, used_prev = protocol.open_remsk(keys, Role.PEER, from_auth)
    peer_ack = protocol.answer_remsk(keys, Role.PEER, msg, used_prev, os.urandom(16))
    protocol.open_remsk_ack(session, Role.AUTHENTICATOR, peer_ack, a_nonce)
    assert keys.msk == session.msk
    # A REMSK reflected back at its sender does not verify (direction-bound MAC keys).
    with pytest.raises(Exception, match="REMSK does not verify"):
        protocol.open_remsk(session, Role.AUTHENTICATOR, from_auth)


def test_peer_rejects_mismatched_authenticator_key() -> None:
    async def main() -> None:
        lab = Lab()
        wrong = KeyStore.generate("other.example.net").published_key()
        with pytest.raises(Exception, match="offered for"):
            await lab.peer.authenticate(("127.0.0.1", 9), AR, ADDRS, ar_key=wrong)
        with pytest.raises(KeyResolutionError):
            await lab.peer.authenticate(("127.0.0.1", 9), "nobody.example.net", ADDRS)

    asyncio.run(main())


def test_start_reports_bound_port_and_close_is_clean() -> None:
    async def main() -> None:
        lab = Lab()
        host, port = await lab.auth.start("127.0.0.1", 0)
        assert host == "127.0.0.1" and port > 0
        lab.auth.close()
        lab.auth.close()
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", port))  # the port was released
        probe.close()

    asyncio.run(main())
