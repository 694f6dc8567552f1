"""Validated DNS for lab agents: lookups through the lab's Unbound that require the AD bit and
fail closed, forward/reverse ownership checks (draft 2.2), TSIG-signed dynamic updates, and
``DnssecKeyResolver``, the auth library's KeyResolver backed by DNSSEC (draft 3).

Record formats (docs/dns.md): ``_flatarch.<name>`` carries ``TLSA 3 1 0 <DER SPKI>`` (the bare
public key) and, for authenticators, ``TXT "v=fa1" "nonce=<hex>" "expires=<unix s>"``;
``_addrs.<name> TXT "v=fa1" "<newest IPv4>" ... "<newest IPv6>" ...`` gives the recency order
of ``<name>``'s A set and, for an MN that writes it, its AAAA set.
Run ``python -m agents.dns --help`` inside a lab node for the command-line front end.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dns.asyncquery
import dns.edns
import dns.entropy
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TLSA
import dns.rdtypes.ANY.TXT
import dns.rrset
import dns.tsig
import dns.update

from agents.auth import keys as auth_keys
from agents.auth.errors import AuthError, KeyMismatch, KeyResolutionError
from agents.auth.keys import PublishedKey, Suite
from agents.auth.sockets import DEEP_RCVBUF, deep_receive_buffer

log = logging.getLogger(__name__)

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network

KEY_LABEL = "_flatarch"
ADDRS_LABEL = "_addrs"
RECORD_VERSION = "v=fa1"
TLSA_USAGE, TLSA_SELECTOR, TLSA_MATCHING = 3, 1, 0  # DANE-EE, SPKI, exact bytes
DEFAULT_TSIG_ALGORITHM = "hmac-sha256"
# The TTL of the PTR an AR writes for a lease or delegation: the next handoff's reverse
# check must see a change within seconds.
LEASE_PTR_TTL = 5

# Extended DNS Error codes (RFC 8914) that mean "DNSSEC validation failed".
_DNSSEC_EDE = {1, 2, 5, 6, 7, 8, 9, 10, 11, 12}


class DnsError(Exception):
    """Base of every DNS failure this module reports; the message says what and why."""


class DnsTimeout(DnsError):
    """The server did not answer before the deadline."""


class DnsServfail(DnsError):
    """The resolver answered SERVFAIL; ``ede`` holds its Extended DNS Error, if any."""

    def __init__(self, message: str, ede: tuple[int, str] | None = None):
        super().__init__(message)
        self.ede = ede


class DnsBogus(DnsServfail):
    """SERVFAIL because DNSSEC validation failed: the data does not match its signatures."""


class DnsNotValidated(DnsError):
    """An answer without the AD bit: not proven by DNSSEC, so it is not used."""


class DnsNameNotFound(DnsError):
    """The name does not exist (validated NXDOMAIN)."""


class DnsNoData(DnsError):
    """The name exists but has no record of the type asked (validated NODATA)."""


class DnsRcodeError(DnsError):
    """The resolver answered with an unexpected response code (e.g. REFUSED)."""


class DnsRecordError(DnsError):
    """A validated record is malformed or ambiguous for the flatarch record formats."""


class DnsReverseMismatch(DnsError):
    """The PTR of an address does not name the claimed owner (draft 2.2 check)."""


class DnsUpdateError(DnsError):
    """A dynamic update failed."""


class DnsUpdateRefused(DnsUpdateError):
    """The primary refused a dynamic update: unsigned, wrongly signed, or outside the policy."""


# ---------------------------------------------------------------------------------------------
# Record formats, shared by the plane (which renders them into zone files) and the resolver.


def key_owner(name: str) -> str:
    return f"{KEY_LABEL}.{normalize(name)}"


def addrs_owner(name: str) -> str:
    return f"{ADDRS_LABEL}.{normalize(name)}"


def nonce_strings(nonce: bytes, expires: int) -> list[str]:
    return [RECORD_VERSION, f"nonce={nonce.hex()}", f"expires={int(expires)}"]


def order_strings(addresses: Sequence[IPv4Address | ipaddress.IPv6Address]) -> list[str]:
    return [RECORD_VERSION, *(str(a) for a in addresses)]


def normalize(name: str) -> str:
    """Lowercase, no trailing dot: the one spelling used in records, keys and the KDF."""
    text = name.strip().lower()
    if text.endswith("."):
        text = text[:-1]
    if not text or ".." in text:
        raise DnsRecordError(f"not a DNS name: {name!r}")
    return text


def suite_of_spki(spki: bytes) -> Suite:
    """The cipher suite a DER SubjectPublicKeyInfo belongs to (its algorithm OID decides)."""
    # The auth library's parser, so that the resolver and the key store fail the same way.
    try:
        suite = auth_keys.suite_of_spki(spki)
        # Canonical DER and a valid point, before any cache holds the key.
        auth_keys.load_public_key(suite, spki)
        return suite
    except KeyMismatch as exc:
        raise DnsRecordError(
            f"TLSA data is not a DER SubjectPublicKeyInfo of a flatarch suite: {exc}") from None


def parse_key_tlsa(owner: str, rrset: dns.rrset.RRset) -> bytes:
    """The one SPKI published as TLSA 3 1 0 at ``owner``; several or none is an error."""
    spkis = [
        rd.cert
        for rd in rrset
        if isinstance(rd, dns.rdtypes.ANY.TLSA.TLSA)
        and (rd.usage, rd.selector, rd.mtype) == (TLSA_USAGE, TLSA_SELECTOR, TLSA_MATCHING)
    ]
    if not spkis:
        raise DnsRecordError(f"{owner} has TLSA records but none is 3 1 0 (bare SPKI)")
    if len(set(spkis)) > 1:
        raise DnsRecordError(f"{owner} publishes {len(spkis)} different keys; refusing to pick one")
    return bytes(spkis[0])


def _txt_strings(rrset: dns.rrset.RRset) -> list[list[str]]:
    out: list[list[str]] = []
    for rd in rrset:
        if isinstance(rd, dns.rdtypes.ANY.TXT.TXT):
            try:
                out.append([s.decode("ascii") for s in rd.strings])
            except UnicodeDecodeError:
                continue  # not ours: our records are ASCII by construction
    return out


def _ours(rrset: dns.rrset.RRset | None, owner: str) -> list[str] | None:
    if rrset is None:
        return None
    mine = [s for s in _txt_strings(rrset) if s and s[0] == RECORD_VERSION]
    if len(mine) > 1:
        raise DnsRecordError(f"{owner} has {len(mine)} {RECORD_VERSION} TXT records; ambiguous")
    return mine[0] if mine else None


def parse_nonce_txt(owner: str, rrset: dns.rrset.RRset | None) -> tuple[bytes, int] | None:
    """(nonce, expires) from ``TXT "v=fa1" "nonce=<hex>" "expires=<unix>"``, or None."""
    strings = _ours(rrset, owner)
    if strings is None:
        return None
    fields = dict(s.split("=", 1) for s in strings[1:] if "=" in s)
    if len(strings) != 3 or set(fields) != {"nonce", "expires"}:
        raise DnsRecordError(f"{owner} nonce TXT must be {RECORD_VERSION} nonce=.. expires=..")
    try:
        nonce = bytes.fromhex(fields["nonce"])
        expires = int(fields["expires"])
    except ValueError:
        raise DnsRecordError(f"{owner} nonce TXT has a malformed nonce or expiry") from None
    if not nonce or expires <= 0:
        raise DnsRecordError(f"{owner} nonce TXT has an empty nonce or bad expiry")
    return nonce, expires


def parse_order_txt(owner: str, rrset: dns.rrset.RRset | None) -> list[IPv4Address]:
    strings = _ours(rrset, owner)
    if strings is None:
        return []
    try:
        listed = [ipaddress.ip_address(s) for s in strings[1:]]
    except ValueError:
        raise DnsRecordError(f"{owner} order TXT lists something not an address") from None
    # The IPv6 entries order the AAAA set, which the AR checks by containment only.
    return [a for a in listed if isinstance(a, IPv4Address)]


def order_addresses(
    a_set: Sequence[IPv4Address], order: Sequence[IPv4Address]
) -> list[IPv4Address]:
    """The A set, most recently allocated first as the order record says (draft 2.3).

    Addresses the order record does not list follow in numeric order; listed addresses
    without an A record are dropped: the signed A set is the authority on membership.
    """
    present = set(a_set)
    ranked = [a for a in dict.fromkeys(order) if a in present]
    return ranked + sorted(present - set(ranked))


# ---------------------------------------------------------------------------------------------
# Validated lookups.


def _reversename_from(address: IPv4Address | ipaddress.IPv6Network | str) -> str:
    """An IPv4 address's in-addr.arpa name, or a delegated IPv6 prefix's ip6.arpa name."""
    if isinstance(address, ipaddress.IPv6Network):
        return prefix_reverse_name(address)
    try:
        return IPv4Address(str(address)).reverse_pointer + "."
    except ValueError:
        raise DnsRecordError(f"not an IPv4 address: {address!r}") from None


def prefix_reverse_name(net: ipaddress.IPv6Network) -> str:
    """The ip6.arpa name of a prefix on a nibble boundary (draft 2.3: the AR looks up the
    containing prefix's PTR): one label per nibble, reversed."""
    if net.prefixlen % 4:
        raise DnsRecordError(f"{net} is not on a nibble boundary: no ip6.arpa name")
    digits = net.network_address.exploded.replace(":", "")[: net.prefixlen // 4]
    return ".".join(reversed(digits)) + ".ip6.arpa."


def _ede_text(ede: tuple[int, str]) -> str:
    label = dns.edns.EDECode.to_text(ede[0]).replace("_", " ").title().replace("Dnssec", "DNSSEC")
    return f"EDE {ede[0]} {label}" + (f": {ede[1]}" if ede[1] else "")


def _ede(msg: dns.message.Message) -> tuple[int, str] | None:
    for opt in msg.options:
        if isinstance(opt, dns.edns.EDEOption):
            return int(opt.code), (opt.text or "")
    return None


class _UdpChannel(asyncio.DatagramProtocol):
    """One connected UDP socket to the resolver, answers matched to queries by message id.

    dnspython opens a socket per query; on the AR's handoff path that costs about a
    millisecond per lookup. Answers are matched on id and question before being accepted.
    """

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, asyncio.Future[bytes]] = {}
        self.retired = False  # no new queries; closed when the last waiting one ends

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 2:
            return
        fut = self.waiting.pop(int.from_bytes(data[:2], "big"), None)
        if fut is not None and not fut.done():
            fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(exc)
        self.waiting.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


Claim = TypeVar("Claim", IPv4Address, ipaddress.IPv6Network)


def judge_claims(name: str, claimed: Sequence[Claim], forward: Sequence[Claim],
                 ptrs: Sequence[object], source: str) -> tuple[list[Claim], dict[Claim, str]]:
    """Draft 2.2 steps 2-3 on the answers: an address (an IPv6 prefix: one covering an
    AAAA) is accepted when the MN's forward set (``source``: validated by lookup, or
    stapled) holds it and its PTR names the MN."""
    accepted: list[Claim] = []
    refused: dict[Claim, str] = {}
    for a, owner in zip(claimed, ptrs, strict=True):
        if a not in forward:
            refused[a] = f"not among the {source} addresses of {name}"
        elif isinstance(owner, BaseException):
            refused[a] = f"reverse lookup failed: {owner}"
        elif owner != normalize(name):
            refused[a] = f"PTR names {owner}, not {name}"
        else:
            accepted.append(a)
    return accepted, refused


class ValidatingResolver:
    """Asks one validating resolver (the lab's Unbound) and trusts only AD-flagged answers.

    The AD bit is only as good as the path to the resolver; in the lab that path is the
    emulated ISP network, as it would be for a stub on the ISP's access network.
    """

    def __init__(
        self, address: IPv4Address | str, port: int = 53, timeout: float = 2.0, tries: int = 2
    ):
        self.address = str(address)
        self.port = port
        self.timeout = timeout
        self.tries = max(1, tries)
        self._channel: _UdpChannel | None = None
        self._channel_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"ValidatingResolver({self.address}@{self.port})"

    async def _udp(self, q: dns.message.Message) -> dns.message.Message:
        loop = asyncio.get_running_loop()
        ch = await self._open_channel(loop)
        while q.id in ch.waiting:
            q.id = dns.entropy.random_16()
        fut: asyncio.Future[bytes] = loop.create_future()
        ch.waiting[q.id] = fut
        assert ch.transport is not None
        ch.transport.sendto(q.to_wire())
        try:
            wire = await asyncio.wait_for(fut, self.timeout)
        except (TimeoutError, OSError):
            # The socket's source may be gone (an MN released the address it was bound
            # from): the next query opens a fresh one with a current source. The old one
            # closes when no other query waits on it: closing it at once failed every
            # lookup in flight with the one that timed out, which under load turned one
            # slow answer into a burst of refused AUTHs.
            if self._channel is ch:
                self._channel = None
                ch.retired = True
            raise
        finally:
            ch.waiting.pop(q.id, None)
            if ch.retired and not ch.waiting and ch.transport is not None:
                ch.transport.close()
        return self._answer(q, wire)

    async def _open_channel(self, loop: asyncio.AbstractEventLoop) -> _UdpChannel:
        ch = self._channel
        if ch is not None and ch.transport is not None and self._channel_loop is loop:
            return ch
        transport, new = await loop.create_datagram_endpoint(
            _UdpChannel, remote_addr=(self.address, self.port))
        # One socket carries every answer of a busy AR: the default buffer (rmem_default,
        # 208 KiB, some 160 answers by their kernel size) overflowed while the loop was
        # 100-300 ms late at 100 handoffs a second, and each answer dropped there
        # (Udp:RcvbufErrors) became a timeout and a refused AUTH (docs/scale.md).
        sock = transport.get_extra_info("socket")
        if sock is not None:
            deep_receive_buffer(sock, DEEP_RCVBUF)
        ch = self._channel
        if ch is not None and ch.transport is not None and self._channel_loop is loop:
            # Another query opened one while we waited: keep one socket, not one per race
            # (the soak found MN agents holding seven).
            assert new.transport is not None
            new.transport.close()
            return ch
        self._channel, self._channel_loop = new, loop
        return new

    def _answer(self, q: dns.message.Message, wire: bytes) -> dns.message.Message:
        """The parsed answer to ``q``; the fuzz campaign feeds hostile wire through here."""
        r = dns.message.from_wire(wire)
        if not q.is_response(r):
            raise DnsError(f"answer from {self.address} does not match the question")
        return r

    async def exchange(self, qname: str, rdtype: dns.rdatatype.RdataType,
                       dnssec: bool = False) -> dns.message.Message:
        # AD in a query asks the resolver to report validation (RFC 6840 5.7) even without
        # DO; CD stays clear so that the resolver itself rejects bogus data. No DO: we trust
        # the validator's AD bit, never check signatures ourselves, and parsing the RRSIGs
        # costs a millisecond an answer that the AR's handoff path would pay. Only the MN's
        # stapled bundle (agents/staple.py) asks for the RRSIGs, to carry them.
        q = dns.message.make_query(qname, rdtype, want_dnssec=dnssec, use_edns=0, payload=1232)
        q.flags |= dns.flags.AD
        what = f"{normalize(qname) if qname.strip('.') else '.'}/{dns.rdatatype.to_text(rdtype)}"
        for attempt in range(self.tries):
            try:
                r = await self._udp(q)
                if r.flags & dns.flags.TC:
                    r = await dns.asyncquery.tcp(q, self.address, self.timeout, self.port)
                return r
            except (dns.exception.Timeout, TimeoutError):
                log.debug("%s: timeout on try %d for %s", self, attempt + 1, what)
            except (OSError, dns.exception.DNSException) as exc:
                raise DnsError(f"query {what} to {self.address}@{self.port} failed: {exc}") from exc
        raise DnsTimeout(
            f"no answer from resolver {self.address}@{self.port} for {what} "
            f"after {self.tries} x {self.timeout:.1f}s"
        )

    def _check(self, qname: str, rdtype: dns.rdatatype.RdataType, r: dns.message.Message) -> None:
        what = f"{normalize(qname)}/{dns.rdatatype.to_text(rdtype)}"
        rcode = r.rcode()
        if rcode == dns.rcode.SERVFAIL:
            ede = _ede(r)
            if ede is not None and ede[0] in _DNSSEC_EDE:
                raise DnsBogus(
                    f"resolver {self.address} answered SERVFAIL for {what}: DNSSEC validation "
                    f"failed ({_ede_text(ede)}); the data does not match its signatures or "
                    "the chain of trust is broken",
                    ede,
                )
            detail = f" ({_ede_text(ede)})" if ede else ""
            raise DnsServfail(f"resolver {self.address} answered SERVFAIL for {what}{detail}", ede)
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise DnsRcodeError(
                f"resolver {self.address} answered {dns.rcode.to_text(rcode)} for {what}"
            )
        if not r.flags & dns.flags.AD:
            raise DnsNotValidated(
                f"answer for {what} from {self.address} lacks the AD bit: not DNSSEC-validated "
                "(insecure delegation or a non-validating resolver); refusing to use it"
            )

    async def lookup(
        self, name: str, rdtype: dns.rdatatype.RdataType, optional: bool = False
    ) -> dns.rrset.RRset | None:
        """The validated RRset of ``name``/``rdtype``.

        A proven absence raises DnsNameNotFound / DnsNoData, or returns None when
        ``optional``; anything unproven raises.
        """
        qname = normalize(name) + "."
        r = await self.exchange(qname, rdtype)
        self._check(qname, rdtype, r)
        what = f"{normalize(name)}/{dns.rdatatype.to_text(rdtype)}"
        if not isinstance(r, dns.message.QueryMessage):
            raise DnsRecordError(f"answer for {what} is not a query response")
        try:
            chain = r.resolve_chaining()
        except dns.exception.DNSException as exc:
            raise DnsRecordError(f"answer for {what} is inconsistent: {exc}") from exc
        if chain.answer is not None:
            answer: dns.rrset.RRset = chain.answer
            return answer
        if optional:
            return None
        if r.rcode() == dns.rcode.NXDOMAIN:
            raise DnsNameNotFound(f"{normalize(name)} does not exist (validated NXDOMAIN)")
        raise DnsNoData(f"{normalize(name)} has no {dns.rdatatype.to_text(rdtype)} record")

    async def require(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset:
        rrset = await self.lookup(name, rdtype)
        assert rrset is not None  # lookup() raises rather than return None unless optional
        return rrset

    async def published_key(self, name: str) -> PublishedKey:
        """The validated bare public key of ``name`` and, if published, its session nonce."""
        canon = normalize(name)
        owner = key_owner(canon)
        tlsa, txt = await asyncio.gather(
            self.require(owner, dns.rdatatype.TLSA),
            self.lookup(owner, dns.rdatatype.TXT, optional=True),
        )
        spki = parse_key_tlsa(owner, tlsa)
        suite = suite_of_spki(spki)
        nonce = parse_nonce_txt(owner, txt)
        try:
            return PublishedKey(
                name=canon,
                suite=suite,
                spki=spki,
                nonce=nonce[0] if nonce else None,
                nonce_expires=nonce[1] if nonce else None,
            )
        except AuthError as exc:
            raise DnsRecordError(f"{owner}: {exc}") from exc

    async def addresses(self, name: str) -> list[IPv4Address]:
        """The validated IPv4 addresses of ``name``, most recently allocated first."""
        canon = normalize(name)
        a_rrset, order_rrset = await asyncio.gather(
            self.require(canon, dns.rdatatype.A),
            self.lookup(addrs_owner(canon), dns.rdatatype.TXT, optional=True),
        )
        a_set = [IPv4Address(rd.address) for rd in a_rrset]
        return order_addresses(a_set, parse_order_txt(addrs_owner(canon), order_rrset))

    async def ptr(self, address: IPv4Address | str) -> str:
        """The one validated PTR target of ``address``."""
        rrset = await self.require(_reversename_from(address), dns.rdatatype.PTR)
        targets = {normalize(rd.target.to_text()) for rd in rrset}
        if len(targets) != 1:
            raise DnsRecordError(f"{address} has {len(targets)} PTR names; ownership is ambiguous")
        return targets.pop()

    async def check_reverse(self, name: str, address: IPv4Address | str) -> None:
        """Raise DnsReverseMismatch unless the validated PTR of ``address`` is ``name``."""
        owner = await self.ptr(address)
        if owner != normalize(name):
            raise DnsReverseMismatch(
                f"{address} was assigned to {owner}, not {normalize(name)} (PTR mismatch)"
            )

    async def managed_addresses(self, name: str, managed: IPv4Network) -> list[IPv4Address]:
        """Draft 2.2: ``name``'s addresses inside ``managed`` whose PTR names it, newest first.

        Addresses whose PTR names someone else are dropped (the MN claims what it was not
        given); a lookup that cannot be validated raises, so nothing is re-routed on doubt.
        """
        ours = [a for a in await self.addresses(name) if a in managed]
        results = await asyncio.gather(
            *(self.check_reverse(name, a) for a in ours), return_exceptions=True
        )
        verified: list[IPv4Address] = []
        for addr, res in zip(ours, results, strict=True):
            if isinstance(res, DnsReverseMismatch | DnsNameNotFound | DnsNoData):
                log.warning("dropping %s for %s: %s", addr, name, res)
            elif isinstance(res, BaseException):
                raise res
            else:
                verified.append(addr)
        return verified

    async def verify(self, name: str, claimed: list[IPv4Address]
                     ) -> tuple[list[IPv4Address], dict[IPv4Address, str]]:
        """Draft 2.2 steps 1-3 for an MN's claimed addresses, in one round trip: the forward
        name and every PTR at once. Returns (accepted, {refused: reason}); a forward lookup
        that cannot be validated raises, so nothing is re-routed on doubt."""
        forward, *ptrs = await asyncio.gather(
            self.addresses(name), *(self.ptr(a) for a in claimed), return_exceptions=True
        )
        if isinstance(forward, BaseException):
            raise forward
        assert isinstance(forward, list)
        return judge_claims(name, claimed, forward, ptrs, "validated")

    async def verify_prefixes(self, name: str, claimed: list[ipaddress.IPv6Network]
                              ) -> tuple[list[ipaddress.IPv6Network],
                                         dict[ipaddress.IPv6Network, str]]:
        """``verify`` for IPv6 prefixes (agents/handoff6.py): the MN's validated AAAA set
        must hold an address inside each, and each prefix's own PTR must name the MN."""
        forward, *ptrs = await asyncio.gather(
            self.require(normalize(name), dns.rdatatype.AAAA),
            *(self._prefix_ptr(p) for p in claimed), return_exceptions=True)
        if isinstance(forward, BaseException):
            raise forward
        assert isinstance(forward, dns.rrset.RRset)
        aaaa = [ipaddress.IPv6Address(rd.address) for rd in forward]
        covered = [p for p in claimed if any(a in p for a in aaaa)]
        return judge_claims(name, claimed, covered, ptrs, "validated")

    async def _prefix_ptr(self, prefix: ipaddress.IPv6Network) -> str:
        rrset = await self.require(prefix_reverse_name(prefix), dns.rdatatype.PTR)
        targets = {normalize(rd.target.to_text()) for rd in rrset}
        if len(targets) != 1:
            raise DnsRecordError(f"{prefix} has {len(targets)} PTR names; ownership is ambiguous")
        return targets.pop()

    async def zone_of(self, name: str) -> str:
        """The zone holding ``name``, from the validated SOA at or above it."""
        qname = normalize(name) + "."
        r = await self.exchange(qname, dns.rdatatype.SOA)
        self._check(qname, dns.rdatatype.SOA, r)
        for section in (r.answer, r.authority):
            for rrset in section:
                if rrset.rdtype == dns.rdatatype.SOA:
                    return rrset.name.to_text().rstrip(".") or "."
        raise DnsRecordError(f"no SOA at or above {normalize(name)} in the answer")


class DnssecKeyResolver:
    """The auth library's KeyResolver: keys come from DNSSEC-validated TLSA/TXT records.

    There is no cache here on purpose: Unbound caches for the records' short TTLs, so a
    rolled key or nonce is seen within one TTL. Subscribers hear when a name's key changes
    so that LTSS caches keyed on the old key are dropped.
    """

    def __init__(self, resolver: ValidatingResolver | IPv4Address | str, port: int = 53):
        self.dns = resolver if isinstance(resolver, ValidatingResolver) else ValidatingResolver(
            resolver, port
        )
        self._last: dict[str, PublishedKey] = {}
        self._listeners: list[Callable[[str], None]] = []

    def subscribe(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)

    async def resolve(self, name: str) -> PublishedKey:
        try:
            key = await self.dns.published_key(name)
        except DnsError as exc:
            raise KeyResolutionError(f"no valid published key for {name}: {exc}") from exc
        old = self._last.get(key.name)
        self._last[key.name] = key
        if old is not None and old != key:
            for callback in self._listeners:
                callback(key.name)
        return key


# ---------------------------------------------------------------------------------------------
# Signed dynamic updates.


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key as named.conf declares it; the name is the identity's DNS name."""

    name: str
    secret: str  # base64
    algorithm: str = DEFAULT_TSIG_ALGORITHM

    def to_dns(self) -> dns.tsig.Key:
        return dns.tsig.Key(normalize(self.name) + ".", self.secret, self.algorithm)

    @classmethod
    def load(cls, path: Path) -> TsigKey:
        try:
            doc = json.loads(path.read_text())
            return cls(str(doc["name"]), str(doc["secret"]), str(doc["algorithm"]))
        except (OSError, ValueError, KeyError) as exc:
            raise DnsError(f"cannot read TSIG key file {path}: {exc}") from exc


class DnsUpdater:
    """Sends RFC 2136 updates to the primary, signed with one TSIG key (or unsigned)."""

    def __init__(
        self,
        server: IPv4Address | str,
        port: int,
        key: TsigKey | None,
        resolver: ValidatingResolver | None = None,
        timeout: float = 3.0,
        source: Callable[[], str] | None = None,
    ):
        self.server = str(server)
        self.port = port
        self.key = key
        self.resolver = resolver
        self.timeout = timeout
        # The address each update leaves from, asked at each send: one namespace holding
        # many MNs (agents/population.py) routes only by source, each MN its own way.
        self.source = source

    async def _zone(self, name: str, zone: str | None) -> str:
        if zone is not None:
            return normalize(zone)
        if self.resolver is None:
            raise DnsUpdateError(f"no zone given for {name} and no resolver to find it")
        return await self.resolver.zone_of(name)

    async def _ptr_zone(self, rev: str, zone: str | None) -> str:
        # Ask about the PTR's parent, which exists: asking about the owner itself would leave
        # a negative answer in the resolver's cache just before the PTR is created.
        return await self._zone(rev.split(".", 1)[1], zone)

    async def send(self, update: dns.update.UpdateMessage, what: str) -> None:
        if self.key is not None:
            update.use_tsig(self.key.to_dns())
        signer = f"key {normalize(self.key.name)}" if self.key else "no key"
        try:
            r = await dns.asyncquery.udp(update, self.server, self.timeout, self.port,
                                         source=self.source() if self.source else None)
        except dns.tsig.PeerError as exc:
            raise DnsUpdateRefused(
                f"update {what} ({signer}) refused: server rejected the TSIG "
                f"({type(exc).__name__})"
            ) from exc
        except dns.exception.Timeout as exc:
            raise DnsTimeout(f"update {what}: no answer from {self.server}@{self.port}") from exc
        except (OSError, dns.exception.DNSException) as exc:
            raise DnsUpdateError(f"update {what} ({signer}) failed: {exc}") from exc
        rcode = r.rcode()
        if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH):
            raise DnsUpdateRefused(
                f"update {what} ({signer}) refused by {self.server}: {dns.rcode.to_text(rcode)}"
            )
        if rcode != dns.rcode.NOERROR:
            raise DnsUpdateError(f"update {what} ({signer}) failed: {dns.rcode.to_text(rcode)}")

    async def set_addresses(
        self, name: str, addresses: Sequence[IPv4Address], ttl: int, zone: str | None = None,
        addresses6: Sequence[ipaddress.IPv6Address] | None = None,
    ) -> None:
        """Replace ``name``'s A set and its order record, newest address first, atomically;
        with ``addresses6`` (a DHCPv6 MN) its AAAA set too, listed after the IPv4 ones."""
        canon = normalize(name)
        up = dns.update.UpdateMessage(await self._zone(canon, zone) + ".")
        up.delete(canon + ".", "A")
        up.delete(addrs_owner(canon) + ".", "TXT")
        for a in addresses:
            up.add(canon + ".", ttl, "A", str(IPv4Address(str(a))))
        six = [ipaddress.IPv6Address(str(a)) for a in addresses6 or ()]
        if addresses6 is not None:
            up.delete(canon + ".", "AAAA")
            for a6 in six:
                up.add(canon + ".", ttl, "AAAA", str(a6))
        if addresses or six:
            up.add(addrs_owner(canon) + ".", ttl, _txt(order_strings([*addresses, *six])))
        await self.send(up, f"A {canon}")

    async def set_ptr(
        self, address: IPv4Address | ipaddress.IPv6Network | str, hostname: str, ttl: int,
        zone: str | None = None
    ) -> None:
        rev = _reversename_from(address)
        up = dns.update.UpdateMessage(await self._ptr_zone(rev, zone) + ".")
        up.replace(rev, ttl, "PTR", normalize(hostname) + ".")
        await self.send(up, f"PTR {address}")

    async def delete_ptr(self, address: IPv4Address | ipaddress.IPv6Network | str,
                         zone: str | None = None) -> None:
        rev = _reversename_from(address)
        up = dns.update.UpdateMessage(await self._ptr_zone(rev, zone) + ".")
        up.delete(rev, "PTR")
        await self.send(up, f"delete PTR {address}")

    async def set_key(self, name: str, spki: bytes, ttl: int, zone: str | None = None) -> None:
        """Roll ``name``'s published key: the TLSA set is replaced by the one new SPKI."""
        suite_of_spki(spki)  # never publish something resolvers would reject
        canon = normalize(name)
        up = dns.update.UpdateMessage(await self._zone(canon, zone) + ".")
        up.replace(
            key_owner(canon) + ".", ttl, "TLSA",
            f"{TLSA_USAGE} {TLSA_SELECTOR} {TLSA_MATCHING} {spki.hex()}",
        )
        await self.send(up, f"TLSA {canon}")

    async def set_nonce(
        self, name: str, nonce: bytes, expires: int, ttl: int, zone: str | None = None
    ) -> None:
        canon = normalize(name)
        up = dns.update.UpdateMessage(await self._zone(canon, zone) + ".")
        up.replace(key_owner(canon) + ".", ttl, _txt(nonce_strings(nonce, expires)))
        await self.send(up, f"nonce TXT {canon}")


def _txt(strings: Sequence[str]) -> dns.rdtypes.ANY.TXT.TXT:
    return dns.rdtypes.ANY.TXT.TXT(
        dns.rdataclass.IN, dns.rdatatype.TXT, [s.encode("ascii") for s in strings]
    )


# ---------------------------------------------------------------------------------------------
# Latency measurement.


def unbound_flush(conf: Path, zone: str = ".") -> Callable[[], None]:
    """A flush callable: forget Unbound's cached records, keys and failures at or below zone."""

    def flush() -> None:
        for cmd in (["flush_zone", zone], ["flush_negative"], ["flush_bogus"]):
            res = subprocess.run(
                ["unbound-control", "-c", str(conf), *cmd],
                capture_output=True, text=True, timeout=10,
            )
            if res.returncode != 0:
                raise DnsError(f"unbound-control {' '.join(cmd)}: {res.stderr.strip()}")

    return flush


def bench_resolution(
    resolver: IPv4Address | str,
    names: Sequence[str],
    rounds: int = 20,
    port: int = 53,
    flush: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Time validated key lookups (TLSA + nonce TXT) through the resolver, cold and cached.

    Cold: ``flush`` empties the resolver's caches first, so the whole chain from the root
    (DS/DNSKEY at every level) is fetched and validated. Cached: the same lookup repeated
    at once. Without ``flush`` only cached figures are meaningful.
    """
    if not names:
        raise DnsError("bench_resolution needs at least one name")
    res = ValidatingResolver(resolver, port)
    cold: list[float] = []
    cached: list[float] = []

    async def timed(name: str) -> float:
        t0 = time.perf_counter()
        await res.published_key(name)
        return (time.perf_counter() - t0) * 1000.0

    async def run() -> None:
        for i in range(rounds):
            name = names[i % len(names)]
            if flush is not None:
                flush()
                cold.append(await timed(name))
            else:
                await timed(name)
            cached.append(await timed(name))

    asyncio.run(run())
    out: dict[str, Any] = {
        "resolver": str(resolver),
        "lookup": "TLSA+TXT at _flatarch.<name>, DNSSEC-validated",
        "rounds": rounds,
        # The samples themselves: the lab's one percentile (topologies/analysis/stats.py)
        # summarises them, not a second definition here.
        "cached_ms": [round(x, 3) for x in cached],
        "cached_ms_mean": round(statistics.fmean(cached), 3),
    }
    if cold:
        out |= {"cold_ms": [round(x, 3) for x in cold],
                "cold_ms_mean": round(statistics.fmean(cold), 3)}
    return out


# ---------------------------------------------------------------------------------------------
# Command line, for use inside lab nodes (`mnexec -a PID python -m agents.dns ...`).


def _key_json(key: PublishedKey) -> dict[str, Any]:
    return {
        "name": key.name,
        "suite": key.suite.name,
        "spki": key.spki.hex(),
        "nonce": key.nonce.hex() if key.nonce is not None else None,
        "nonce_expires": key.nonce_expires,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m agents.dns",
        description="DNSSEC-validated lookups and TSIG-signed updates for lab agents; "
        "prints JSON, or one error line on stderr with exit status 2.",
    )
    p.add_argument("--resolver", required=True, help="validating resolver address (Unbound)")
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--timeout", type=float, default=2.0)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("key", help="validated published key and nonce of a name")
    s.add_argument("name")
    s = sub.add_parser("addrs", help="validated addresses of a name, newest first")
    s.add_argument("name")
    s = sub.add_parser("ptr", help="validated PTR of an address")
    s.add_argument("address")
    s = sub.add_parser("check", help="draft 2.2: the PTR of ADDRESS must name NAME")
    s.add_argument("name")
    s.add_argument("address")
    s = sub.add_parser("bench", help="cold/cached key-lookup latency")
    s.add_argument("names", nargs="+")
    s.add_argument("--rounds", type=int, default=20)
    s.add_argument("--flush-conf", type=Path, help="unbound.conf: flush its cache for cold runs")
    for cmd, hlp in (
        ("update-addrs", "set NAME's addresses, newest first"),
        ("update-ptr", "set the PTR of ADDRESS to HOSTNAME"),
        ("update-key", "publish SPKI (hex) as NAME's key"),
        ("update-nonce", "publish NONCE (hex) valid until EXPIRES for NAME"),
    ):
        s = sub.add_parser(cmd, help=hlp)
        s.add_argument("--server", required=True, help="primary (BIND) address")
        s.add_argument("--server-port", type=int, default=53)
        s.add_argument("--tsig", type=Path, help="TSIG key file (JSON); omit to send unsigned")
        s.add_argument("--ttl", type=int, default=5)
        s.add_argument("--zone")
        if cmd == "update-addrs":
            s.add_argument("name")
            s.add_argument("addresses", nargs="*", type=IPv4Address)
        elif cmd == "update-ptr":
            s.add_argument("address", type=IPv4Address)
            s.add_argument("hostname")
        elif cmd == "update-key":
            s.add_argument("name")
            s.add_argument("spki")
        else:
            s.add_argument("name")
            s.add_argument("nonce")
            s.add_argument("expires", type=int)
    return p


async def _run(args: argparse.Namespace) -> Any:
    res = ValidatingResolver(args.resolver, args.port, args.timeout)
    if args.cmd == "key":
        return _key_json(await DnssecKeyResolver(res).resolve(args.name))
    if args.cmd == "addrs":
        return [str(a) for a in await res.addresses(args.name)]
    if args.cmd == "ptr":
        return await res.ptr(args.address)
    if args.cmd == "check":
        await res.check_reverse(args.name, args.address)
        return {"name": normalize(args.name), "address": args.address, "ok": True}
    key = TsigKey.load(args.tsig) if args.tsig else None
    up = DnsUpdater(args.server, args.server_port, key, res)
    if args.cmd == "update-addrs":
        await up.set_addresses(args.name, args.addresses, args.ttl, args.zone)
    elif args.cmd == "update-ptr":
        await up.set_ptr(args.address, args.hostname, args.ttl, args.zone)
    elif args.cmd == "update-key":
        await up.set_key(args.name, bytes.fromhex(args.spki), args.ttl, args.zone)
    elif args.cmd == "update-nonce":
        await up.set_nonce(args.name, bytes.fromhex(args.nonce), args.expires, args.ttl, args.zone)
    return {"ok": True}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        if args.cmd == "bench":
            flush = unbound_flush(args.flush_conf) if args.flush_conf else None
            out: Any = bench_resolution(args.resolver, args.names, args.rounds, args.port, flush)
        else:
            out = asyncio.run(_run(args))
    except (DnsError, AuthError, ValueError) as exc:
        print(f"agents.dns: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
