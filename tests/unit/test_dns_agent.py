"""agents.dns without root: record parsing, fail-closed answer handling over real UDP against
a scripted local server, signed-update outcomes, and the KeyResolver adapter.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rrset
import dns.update
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519

from agents import dns as adns
from agents.auth.errors import KeyResolutionError
from agents.auth.keys import KeyResolver, PublishedKey, Suite, spki_of
from agents.auth.sockets import DEEP_RCVBUF

Handler = Callable[[dns.message.Message], dns.message.Message | None]


def p256(seed: int = 5) -> bytes:
    return spki_of(ec.derive_private_key(seed, ec.SECP256R1()).public_key())


def x255() -> bytes:
    return spki_of(x25519.X25519PrivateKey.from_private_bytes(b"\x07" * 32).public_key())


class FakeServer:
    """A UDP DNS server on 127.0.0.1 whose answers the test scripts; it logs every query."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.handler: Handler = lambda q: None
        self.queries: list[dns.message.Message] = []
        self.peers: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            q = dns.message.from_wire(data, ignore_trailing=True, keyring=False)
            self.queries.append(q)
            self.peers.append(peer)
            r = self.handler(q)
            if r is not None:
                self.sock.sendto(r.to_wire(), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture()
def server() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.close()


def answer(records: dict[tuple[str, str], list[str]], ad: bool = True,
           rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
           ede: dns.edns.EDECode | None = None) -> Handler:
    def handle(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        if ad:
            r.flags |= dns.flags.AD
        r.set_rcode(rcode)
        qn = q.question[0]
        key = (qn.name.to_text().rstrip("."), dns.rdatatype.to_text(qn.rdtype))
        if key in records:
            r.answer.append(dns.rrset.from_text_list(qn.name, 5, "IN", key[1], records[key]))
        if ede is not None:
            r.use_edns(0, 0, 1232, options=[dns.edns.EDEOption(ede)])
        return r
    return handle


def resolver(server: FakeServer, timeout: float = 1.0) -> adns.ValidatingResolver:
    return adns.ValidatingResolver("127.0.0.1", server.port, timeout=timeout, tries=1)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


BOGUS = dns.edns.EDECode.DNSSEC_BOGUS
KEY = ("_flatarch.ar1.isp.test", "TLSA")
NONCE = ("_flatarch.ar1.isp.test", "TXT")


def test_published_key_with_nonce(server: FakeServer) -> None:
    spki = p256()
    server.handler = answer({
        KEY: [f"3 1 0 {spki.hex()}", f"3 0 1 {'ab' * 32}"],  # other usages are ignored
        NONCE: ['"v=fa1" "nonce=000102030405060708090a0b0c0d0e0f" "expires=1900000000"',
                '"unrelated text"'],
    })
    key = run(resolver(server).published_key("AR1.isp.test."))
    assert key == PublishedKey("ar1.isp.test", Suite.P256, spki, bytes(range(16)), 1900000000)
    q = server.queries[0]
    # AD asks for validation; no DO: the validator's AD bit is trusted, RRSIGs are not parsed
    assert q.flags & dns.flags.AD and not q.ednsflags & dns.flags.DO and q.edns == 0


def test_x25519_key_without_nonce(server: FakeServer) -> None:
    server.handler = answer({("_flatarch.mn2.example", "TLSA"): [f"3 1 0 {x255().hex()}"]})
    key = run(resolver(server).published_key("mn2.example"))
    assert isinstance(key, PublishedKey)
    assert key.suite is Suite.X25519 and key.nonce is None and key.nonce_expires is None


@pytest.mark.parametrize("handler, error, text", [
    (answer({KEY: [f"3 1 0 {p256().hex()}"]}, ad=False), adns.DnsNotValidated, "AD bit"),
    (answer({}, rcode=dns.rcode.SERVFAIL, ede=BOGUS), adns.DnsBogus, "EDE 6 DNSSEC Bogus"),
    (answer({}, rcode=dns.rcode.SERVFAIL), adns.DnsServfail, "SERVFAIL"),
    (answer({}, rcode=dns.rcode.NXDOMAIN), adns.DnsNameNotFound, "NXDOMAIN"),
    (answer({}, rcode=dns.rcode.NXDOMAIN, ad=False), adns.DnsNotValidated, "AD bit"),
    (answer({}, rcode=dns.rcode.REFUSED), adns.DnsRcodeError, "REFUSED"),
    (answer({}), adns.DnsNoData, "no TLSA"),
    (answer({KEY: [f"3 1 0 {p256(1).hex()}", f"3 1 0 {p256(2).hex()}"]}), adns.DnsRecordError,
     "different keys"),
    (answer({KEY: [f"3 1 1 {'00' * 32}"]}), adns.DnsRecordError, "none is 3 1 0"),
    (answer({KEY: ["3 1 0 00ff"]}), adns.DnsRecordError, "not a DER"),
    (answer({KEY: [f"3 1 0 {p256().hex()}"], NONCE: ['"v=fa1" "nonce=00" "expires=9"']}),
     adns.DnsRecordError, "octets"),
    (answer({KEY: [f"3 1 0 {p256().hex()}"], NONCE: ['"v=fa1" "nonce=zz" "expires=9"']}),
     adns.DnsRecordError, "malformed"),
    (answer({KEY: [f"3 1 0 {p256().hex()}"], NONCE: ['"v=fa1" "n=00"', '"v=fa1" "x"']}),
     adns.DnsRecordError, "ambiguous"),
])
def test_key_lookup_fails_closed(server: FakeServer, handler: Handler,
                                 error: type[adns.DnsError], text: str) -> None:
    server.handler = handler
    with pytest.raises(error, match=text) as exc:
        run(resolver(server).published_key("ar1.isp.test"))
    assert isinstance(exc.value, adns.DnsError)


def test_bogus_nonce_record_fails_the_whole_key(server: FakeServer) -> None:
    good = answer({KEY: [f"3 1 0 {p256().hex()}"]})
    bad = answer({}, rcode=dns.rcode.SERVFAIL, ede=BOGUS)
    server.handler = lambda q: (bad if q.question[0].rdtype == dns.rdatatype.TXT else good)(q)
    with pytest.raises(adns.DnsBogus):
        run(resolver(server).published_key("ar1.isp.test"))


def test_rsa_keys_are_not_a_suite() -> None:
    spki = spki_of(ec.generate_private_key(ec.SECP384R1()).public_key())
    with pytest.raises(adns.DnsRecordError, match="not a flatarch suite"):
        adns.suite_of_spki(spki)
    rsa_spki = rsa.generate_private_key(65537, 1024).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(adns.DnsRecordError, match="not a flatarch suite"):
        adns.suite_of_spki(rsa_spki)
    assert adns.suite_of_spki(p256()) is Suite.P256 and adns.suite_of_spki(x255()) is Suite.X25519


def test_timeout_is_typed(server: FakeServer) -> None:
    server.handler = lambda q: None
    with pytest.raises(adns.DnsTimeout, match="no answer"):
        run(resolver(server, timeout=0.2).published_key("ar1.isp.test"))


def test_addresses_newest_first(server: FakeServer) -> None:
    server.handler = answer({
        ("mn1.example", "A"): ["10.64.0.10", "10.64.1.30", "10.64.3.3"],
        ("_addrs.mn1.example", "TXT"): ['"v=fa1" "10.64.1.30" "10.9.9.9" "10.64.0.10"'],
    })
    got = run(resolver(server).addresses("mn1.example"))
    # Listed first in their order; unlisted after, numerically; listed-but-absent dropped.
    assert got == [IPv4Address("10.64.1.30"), IPv4Address("10.64.0.10"), IPv4Address("10.64.3.3")]


def test_order_helpers() -> None:
    a = [IPv4Address(x) for x in ("10.0.0.3", "10.0.0.1", "10.0.0.2")]
    assert adns.order_addresses(a, []) == sorted(a)
    assert adns.order_addresses(a, [a[0], a[0]]) == [a[0], *sorted(a[1:])]
    assert adns.order_strings(a[:2]) == ["v=fa1", "10.0.0.3", "10.0.0.1"]
    assert adns.nonce_strings(b"\x01\x02", 7) == ["v=fa1", "nonce=0102", "expires=7"]


def test_reverse_checks(server: FakeServer) -> None:
    server.handler = answer({
        ("mn1.example", "A"): ["10.64.0.10", "10.64.1.30", "198.51.100.9"],
        ("_addrs.mn1.example", "TXT"): ['"v=fa1" "10.64.1.30" "10.64.0.10"'],
        ("10.0.64.10.in-addr.arpa", "PTR"): ["mn1.example."],
        ("30.1.64.10.in-addr.arpa", "PTR"): ["mn2.example."],
    })
    res = resolver(server)
    run(res.check_reverse("MN1.example.", "10.64.0.10"))
    with pytest.raises(adns.DnsReverseMismatch, match="assigned to mn2.example"):
        run(res.check_reverse("mn1.example", "10.64.1.30"))
    got = run(res.managed_addresses("mn1.example", IPv4Network("10.64.0.0/12")))
    assert got == [IPv4Address("10.64.0.10")]  # mismatching and unmanaged ones dropped


def test_reverse_check_fails_closed_on_bogus_ptr(server: FakeServer) -> None:
    good = answer({("mn1.example", "A"): ["10.64.0.10"]})
    bad = answer({}, rcode=dns.rcode.SERVFAIL, ede=BOGUS)
    server.handler = lambda q: (bad if q.question[0].rdtype == dns.rdatatype.PTR else good)(q)
    with pytest.raises(adns.DnsBogus):
        run(resolver(server).managed_addresses("mn1.example", IPv4Network("10.64.0.0/12")))


def update_answer(rcode: dns.rcode.Rcode) -> Handler:
    def handle(q: dns.message.Message) -> dns.message.Message:
        assert q.opcode() == dns.opcode.UPDATE
        r = dns.message.make_response(q)
        r.set_rcode(rcode)
        return r
    return handle


def test_updates_report_refusal(server: FakeServer) -> None:
    up = adns.DnsUpdater("127.0.0.1", server.port, None, timeout=1.0)
    server.handler = update_answer(dns.rcode.REFUSED)
    with pytest.raises(adns.DnsUpdateRefused, match="no key.*REFUSED"):
        run(up.set_addresses("mn1.example", [IPv4Address("10.64.0.10")], 5, zone="mn1.example"))
    server.handler = update_answer(dns.rcode.SERVFAIL)
    with pytest.raises(adns.DnsUpdateError, match="SERVFAIL"):
        run(up.set_ptr("10.64.0.10", "mn1.example", 5, zone="0.64.10.in-addr.arpa"))
    server.handler = update_answer(dns.rcode.NOERROR)
    run(up.set_addresses("mn1.example", [IPv4Address("10.64.1.30"), IPv4Address("10.64.0.10")],
                         5, zone="mn1.example"))
    msg = server.queries[-1]
    text = msg.to_text()
    assert "_addrs.mn1.example. 5 IN TXT \"v=fa1\" \"10.64.1.30\" \"10.64.0.10\"" in text
    assert text.index("10.64.1.30") < text.index("A 10.64.0.10")
    assert "AAAA" not in text  # an MN without DHCPv6 leaves its AAAA set alone
    # A DHCPv6 MN's AAAA set is replaced in the same update, listed after the IPv4 order.
    run(up.set_addresses("mn1.example", [IPv4Address("10.64.0.10")], 5, zone="mn1.example",
                         addresses6=[IPv6Address("2001:db8:4000:3c1::1"),
                                     IPv6Address("2001:db8:4000:1c0::1")]))
    text = server.queries[-1].to_text()
    assert "mn1.example. ANY AAAA" in text
    assert "mn1.example. 5 IN AAAA 2001:db8:4000:3c1::1" in text
    assert ('"v=fa1" "10.64.0.10" "2001:db8:4000:3c1::1" "2001:db8:4000:1c0::1"') in text
    with pytest.raises(adns.DnsUpdateError, match="no zone given"):
        run(up.set_key("mn1.example", p256(), 5))
    with pytest.raises(adns.DnsRecordError):
        run(up.set_key("mn1.example", b"junk", 5, zone="mn1.example"))


def test_ptr_zone_is_found_from_the_parent_name(server: FakeServer) -> None:
    def handle(q: dns.message.Message) -> dns.message.Message:
        if q.opcode() == dns.opcode.UPDATE:
            return dns.message.make_response(q)
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AD
        r.answer.append(dns.rrset.from_text(q.question[0].name, 5, "IN", "SOA",
                                            "ns. h. 1 2 3 4 5"))
        return r
    server.handler = handle
    res = resolver(server)
    up = adns.DnsUpdater("127.0.0.1", server.port, adns.TsigKey("ar1.isp.test", "A" * 44),
                         res, timeout=1.0)
    with pytest.raises(adns.DnsUpdateError):  # the fake server does not sign its answer
        run(up.set_ptr("10.64.0.10", "mn1.example", 5))
    soa_q = server.queries[0]
    assert soa_q.question[0].name.to_text() == "0.64.10.in-addr.arpa."
    update = server.queries[1]
    assert isinstance(update, dns.update.UpdateMessage)
    assert update.zone[0].name.to_text() == "0.64.10.in-addr.arpa."


class _Scripted(adns.ValidatingResolver):
    def __init__(self, outcomes: list[PublishedKey | adns.DnsError]):
        super().__init__("127.0.0.1")
        self.outcomes = outcomes

    async def published_key(self, name: str) -> PublishedKey:
        out = self.outcomes.pop(0)
        if isinstance(out, adns.DnsError):
            raise out
        return out


def test_key_resolver_adapter_and_change_notice() -> None:
    k1 = PublishedKey("mn1.example", Suite.P256, p256(1))
    k2 = PublishedKey("mn1.example", Suite.P256, p256(2))
    res = adns.DnssecKeyResolver(_Scripted([k1, k1, k2, adns.DnsBogus("bogus", (6, ""))]))
    assert isinstance(res, KeyResolver)
    heard: list[str] = []
    res.subscribe(heard.append)
    assert run(res.resolve("mn1.example")) == k1
    assert run(res.resolve("mn1.example")) == k1
    assert heard == []
    assert run(res.resolve("mn1.example")) == k2
    assert heard == ["mn1.example"]
    with pytest.raises(KeyResolutionError, match="no valid published key for mn1.example"):
        run(res.resolve("mn1.example"))


def test_cli_reports_errors_on_one_line(server: FakeServer,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    server.handler = answer({}, rcode=dns.rcode.SERVFAIL, ede=BOGUS)
    rc = adns.main(["--resolver", "127.0.0.1", "--port", str(server.port), "--timeout", "1",
                    "key", "ar1.isp.test"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("agents.dns: KeyResolutionError:") and "DNSSEC" in err


def test_concurrent_first_queries_share_one_socket(server: FakeServer) -> None:
    server.handler = answer({("mn1.example", "A"): ["10.64.0.10"]})
    res = resolver(server)

    async def both() -> None:
        await asyncio.gather(*(res.exchange("mn1.example", dns.rdatatype.A) for _ in range(8)))

    run(both())
    # The server saw every query come from one source port: one socket, none left open.
    assert len(server.queries) == 8 and len(set(server.peers)) == 1


def test_the_channel_holds_a_burst_of_answers(server: FakeServer) -> None:
    """The one socket of a busy AR takes every answer: its buffer is raised past the
    default, whose overflow at 100 handoffs a second dropped answers (docs/scale.md)."""
    server.handler = answer({("mn1.example", "A"): ["10.64.0.10"]})
    res = resolver(server)
    got: list[int] = []

    async def one() -> None:
        await res.exchange("mn1.example", dns.rdatatype.A)
        ch = res._channel
        assert ch is not None and ch.transport is not None
        got.append(ch.transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET,
                                                                    socket.SO_RCVBUF))

    run(one())
    default = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with default:
        before = default.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    limit = int(Path("/proc/sys/net/core/rmem_max").read_text())
    # The kernel doubles what is asked, and caps it at rmem_max.
    assert got[0] >= min(2 * DEEP_RCVBUF, 2 * limit) > before


def test_a_timeout_does_not_fail_the_lookups_in_flight_beside_it(server: FakeServer) -> None:
    """One unanswered query must not take the answers of the others with it: the socket
    stays open until the last query waiting on it ends."""
    release = threading.Event()

    def handle(q: dns.message.Message) -> dns.message.Message | None:
        if q.question[0].name.to_text() == "dead.example.":
            return None
        release.wait(5.0)  # the answer leaves only once the other query has timed out
        return answer({("mn1.example", "A"): ["10.64.0.10"]})(q)

    server.handler = handle
    res = resolver(server, timeout=1.0)

    async def scenario() -> list[str]:
        dead = asyncio.ensure_future(res.exchange("dead.example", dns.rdatatype.A))
        await wait_for_queries(server, 1)
        await asyncio.sleep(0.5)  # the second query starts half a timeout later
        live = asyncio.ensure_future(res.exchange("mn1.example", dns.rdatatype.A))
        with pytest.raises(adns.DnsTimeout):
            await dead
        release.set()
        r = await live
        return [rd.to_text() for rrset in r.answer for rd in rrset]

    assert run(scenario()) == ["10.64.0.10"]


async def wait_for_queries(server: FakeServer, n: int, deadline_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while len(server.queries) < n:
        if loop.time() > end:
            raise AssertionError(f"the server saw {len(server.queries)} of {n} queries")
        await asyncio.sleep(0.01)
