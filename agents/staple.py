"""Stapled DNSSEC proofs (beyond the draft, issue 17): the MN carries in its AUTH the signed
answers an AR would otherwise fetch from the MN's home zone, and the DS/DNSKEY chain up to the
root, in the spirit of RFC 9102. The AR validates the bundle offline against its root trust
anchor; docs/protocol.md 6.9 is the layout, docs/dns.md "Stapled proofs" the freshness argument.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import struct
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Protocol

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
import dns.rdtypes.ANY.RRSIG
import dns.rrset

from agents.auth.errors import AuthError
from agents.auth.kdf import TAG_LEN
from agents.auth.keys import PublishedKey
from agents.auth.messages import AUTH_FIXED, AUTH_MAX_STAPLED, COOKIE_LEN, MAX_STAPLE_LEN

from .contract import Event
from .dns import (
    DnsBogus,
    DnsError,
    DnsNotValidated,
    DnsRcodeError,
    DnsRecordError,
    ValidatingResolver,
    addrs_owner,
    judge_claims,
    key_owner,
    normalize,
    order_addresses,
    parse_key_tlsa,
    parse_nonce_txt,
    parse_order_txt,
    suite_of_spki,
)

log = logging.getLogger("agents.staple")

A, TXT, TLSA = dns.rdatatype.A, dns.rdatatype.TXT, dns.rdatatype.TLSA
DS, DNSKEY, RRSIG = dns.rdatatype.DS, dns.rdatatype.DNSKEY, dns.rdatatype.RRSIG
IN = dns.rdataclass.IN
ALLOWED_TYPES = frozenset({A, TXT, TLSA, DS, DNSKEY, RRSIG})
MAX_RRS = 48  # far above a real bundle (about 20 records), far below what junk could ask for
MAX_CHAIN = 8  # zones from the MN's zone to the root
_RR_FIXED = struct.Struct("!HHIH")  # type, class, TTL, RDLENGTH
REFRESH_MARGIN_S = 300.0  # rebuild this long before the first RRSIG of the bundle expires

RRsetKey = tuple[dns.name.Name, dns.rdatatype.RdataType, dns.rdatatype.RdataType]


class StapleError(Exception):
    """Base of every reason a stapled bundle is not trusted; the AR then falls back to DNS."""


class StapleMalformed(StapleError):
    """The octets are not a well-formed, canonical sequence of DNS resource records."""


class StapleIncomplete(StapleError):
    """A record or a link of the chain the proof needs is missing."""


class StapleWrongName(StapleError):
    """An RRset's owner or signer is not the MN's name, its zone, or one of its ancestors."""


class StapleExpired(StapleError):
    """A signature is outside its validity window (expired or not yet valid)."""


class StapleBogus(StapleError):
    """A signature does not verify, or no key of a zone matches its trusted DS."""


# --- the wire: uncompressed RRs back to back (RFC 9102 section 3 does the same) -------------


def encode_bundle(rrsets: Iterable[dns.rrset.RRset]) -> bytes:
    """The RRsets (data and their RRSIG sets) as uncompressed DNS wire format, in order."""
    out = b"".join(_rrset_wire(rrset) for rrset in rrsets)
    if len(out) > MAX_STAPLE_LEN:
        raise ValueError(f"bundle of {len(out)} octets exceeds {MAX_STAPLE_LEN}")
    return bytes(out)


def _rrset_wire(rrset: dns.rrset.RRset) -> bytes:
    owner = rrset.name.to_wire()
    assert owner is not None  # without a file, to_wire returns the octets
    out = bytearray()
    for rd in rrset:
        rdata = rd.to_wire()
        out += owner + _RR_FIXED.pack(rrset.rdtype, rrset.rdclass, rrset.ttl, len(rdata)) + rdata
    return bytes(out)


def _name_at(data: bytes, off: int) -> tuple[dns.name.Name, int]:
    labels: list[bytes] = []
    total = 1
    while True:
        if off >= len(data):
            raise StapleMalformed("owner name cut short")
        n = data[off]
        if n & 0xC0:
            raise StapleMalformed("compressed or extended label in a bundle")
        if off + 1 + n > len(data):
            raise StapleMalformed("label cut short")
        total += n + 1
        if total > 255:
            raise StapleMalformed("owner name longer than 255 octets")
        labels.append(data[off + 1:off + 1 + n])
        off += 1 + n
        if n == 0:
            return dns.name.Name(labels), off


def parse_bundle(data: bytes) -> dict[RRsetKey, dns.rrset.RRset]:
    """Strictly parse a bundle: known types, class IN, canonical rdata, no duplicates, one
    TTL per RRset. Keys are (owner, type, covered type); only RRSIG sets have a covered type."""
    if not 0 < len(data) <= MAX_STAPLE_LEN:
        raise StapleMalformed(f"bundle of {len(data)} octets is not 1 to {MAX_STAPLE_LEN}")
    out: dict[RRsetKey, dns.rrset.RRset] = {}
    off = count = 0
    while off < len(data):
        count += 1
        if count > MAX_RRS:
            raise StapleMalformed(f"more than {MAX_RRS} records")
        name, off = _name_at(data, off)
        if off + _RR_FIXED.size > len(data):
            raise StapleMalformed("record header cut short")
        rdtype, rdclass, ttl, rdlen = _RR_FIXED.unpack_from(data, off)
        off += _RR_FIXED.size
        if off + rdlen > len(data):
            raise StapleMalformed("rdata cut short")
        if rdclass != IN:
            raise StapleMalformed(f"class {rdclass} is not IN")
        if rdtype not in ALLOWED_TYPES:
            raise StapleMalformed(f"type {dns.rdatatype.to_text(rdtype)} has no place in a bundle")
        if ttl > 0x7FFFFFFF:
            raise StapleMalformed(f"TTL {ttl} out of range (RFC 2181)")
        raw = data[off:off + rdlen]
        try:
            rd = dns.rdata.from_wire(IN, rdtype, raw, 0, rdlen)
            canonical = rd.to_wire()
        except (dns.exception.DNSException, ValueError, IndexError, struct.error) as exc:
            raise StapleMalformed(f"bad {dns.rdatatype.to_text(rdtype)} rdata: {exc}") from None
        if canonical != raw:
            raise StapleMalformed(f"{dns.rdatatype.to_text(rdtype)} rdata is not canonical")
        off += rdlen
        covers = (rd.type_covered if isinstance(rd, dns.rdtypes.ANY.RRSIG.RRSIG)
                  else dns.rdatatype.NONE)
        key = (name, dns.rdatatype.RdataType(rdtype), dns.rdatatype.RdataType(covers))
        rrset = out.get(key)
        if rrset is None:
            rrset = out[key] = dns.rrset.RRset(name, IN, rdtype, covers)
            rrset.update_ttl(ttl)
        elif rrset.ttl != ttl:
            raise StapleMalformed(f"{name}/{dns.rdatatype.to_text(rdtype)} mixes TTLs")
        if rd in rrset:
            raise StapleMalformed(f"duplicate record at {name}")
        rrset.add(rd)
    return out


# --- what a validated bundle says ------------------------------------------------------------


@dataclass(frozen=True)
class Stapled:
    """The validated contents of one bundle, what the lookups would have returned."""

    name: str
    key: PublishedKey
    addresses: tuple[IPv4Address, ...] | None  # newest first; None when no A set was stapled
    expires: float  # the earliest RRSIG expiration: after it the bundle is worthless
    zones: tuple[str, ...]  # the chain, the MN's zone first


def parse_trust_anchor(text: str) -> list[dns.rdtypes.ANY.DS.DS]:
    """``". [IN] DS <tag> <alg> <digest type> <hex>"`` lines (the lab's trust-anchor.ds)."""
    out: list[dns.rdtypes.ANY.DS.DS] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[1].upper() == "IN":
            del fields[1]
        if not fields:
            continue
        if len(fields) < 6 or fields[0] != "." or fields[1].upper() != "DS":
            raise ValueError(f"not a root DS trust anchor: {line!r}")
        rd = dns.rdata.from_text(IN, DS, " ".join(fields[2:]))
        assert isinstance(rd, dns.rdtypes.ANY.DS.DS)
        out.append(rd)
    if not out:
        raise ValueError("empty trust anchor")
    return out


class StapleVerifier:
    """Validates bundles offline against the root's DS; caches parent zones' validated
    DNSKEYs for their TTL (bounded by their signatures' expiry)."""

    def __init__(self, trust_anchor: str, clock: Callable[[], float] = time.time,
                 cache_max: int = 256) -> None:
        self._anchor = parse_trust_anchor(trust_anchor)
        self._clock = clock
        # zone -> (its trusted keys, cached until, the chain's signature expiry above it,
        #          the octets of its link that were validated)
        self._cache: dict[dns.name.Name,
                          tuple[dns.rdataset.Rdataset, float, float, bytes]] = {}
        self._cache_max = cache_max
        self.stats = {"validated": 0, "refused": 0, "cached_zone_keys": 0}

    def verify(self, name: str, bundle: bytes) -> Stapled:
        try:
            out = self._verify(name, bundle)
        except StapleError:
            self.stats["refused"] += 1
            raise
        self.stats["validated"] += 1
        return out

    def _verify(self, name: str, bundle: bytes) -> Stapled:
        now = self._clock()
        rrsets = parse_bundle(bundle)
        owner = dns.name.from_text(normalize(name))
        tlsa_owner = dns.name.from_text(key_owner(name))
        tlsa = rrsets.get((tlsa_owner, TLSA, dns.rdatatype.NONE))
        if tlsa is None:
            others = sorted(str(k[0]) for k in rrsets if k[1] == TLSA)
            if others:
                raise StapleWrongName(f"the bundle is for {others[0]}, not {normalize(name)}")
            raise StapleIncomplete(f"no key record for {normalize(name)} in the bundle")
        zone = self._signer(rrsets, tlsa)
        if not owner.is_subdomain(zone):
            raise StapleWrongName(f"{normalize(name)} is not inside the zone {zone} that signed it")
        chain = self._chain(rrsets, zone)
        keys, expires = self._trusted_keys(rrsets, chain, now)
        leaf: dict[dns.name.Name, dns.rdataset.Rdataset] = {zone: keys}
        used = {(tlsa_owner, TLSA)}
        expires = min(expires, self._check(rrsets, tlsa, leaf, now))
        a_set = rrsets.get((owner, A, dns.rdatatype.NONE))
        order = rrsets.get((dns.name.from_text(addrs_owner(name)), TXT, dns.rdatatype.NONE))
        nonce_txt = rrsets.get((tlsa_owner, TXT, dns.rdatatype.NONE))
        for extra in (a_set, order, nonce_txt):
            if extra is not None:
                expires = min(expires, self._check(rrsets, extra, leaf, now))
                used.add((extra.name, extra.rdtype))
        for key_ in rrsets:
            kname, ktype, covers = key_
            what = covers if ktype == RRSIG else ktype
            if what in (DS, DNSKEY) and kname in chain:
                continue  # the chain's links, validated above
            if (kname, what) not in used:
                raise StapleWrongName(f"{kname}/{dns.rdatatype.to_text(what)} is not the MN's")
        try:
            spki = parse_key_tlsa(str(tlsa_owner), tlsa)
            nonce = parse_nonce_txt(str(tlsa_owner), nonce_txt)
            key = PublishedKey(normalize(name), suite_of_spki(spki), spki,
                               nonce[0] if nonce else None, nonce[1] if nonce else None)
            addresses = None
            if a_set is not None:
                addresses = tuple(order_addresses(
                    [IPv4Address(rd.address) for rd in a_set],
                    parse_order_txt(addrs_owner(name), order)))
        except (DnsRecordError, AuthError) as exc:
            raise StapleMalformed(f"validated records are unusable: {exc}") from None
        return Stapled(normalize(name), key, addresses, expires,
                       tuple(z.to_text() for z in chain))

    @staticmethod
    def _sigs(rrsets: dict[RRsetKey, dns.rrset.RRset], rrset: dns.rrset.RRset
              ) -> dns.rrset.RRset:
        sigs = rrsets.get((rrset.name, RRSIG, rrset.rdtype))
        if sigs is None:
            raise StapleIncomplete(f"{rrset.name}/{dns.rdatatype.to_text(rrset.rdtype)} "
                                   "is not signed in the bundle")
        return sigs

    def _signer(self, rrsets: dict[RRsetKey, dns.rrset.RRset], rrset: dns.rrset.RRset
                ) -> dns.name.Name:
        signers = {rd.signer for rd in self._sigs(rrsets, rrset)}
        if len(signers) != 1:
            raise StapleWrongName(f"{rrset.name} is signed by {len(signers)} zones")
        signer: dns.name.Name = signers.pop()
        return signer

    def _chain(self, rrsets: dict[RRsetKey, dns.rrset.RRset], zone: dns.name.Name
               ) -> list[dns.name.Name]:
        """The zones from ``zone`` up to the root, each DS signed by the next one up."""
        chain = [zone]
        while chain[-1] != dns.name.root:
            if len(chain) > MAX_CHAIN:
                raise StapleMalformed(f"chain longer than {MAX_CHAIN} zones")
            child = chain[-1]
            ds = rrsets.get((child, DS, dns.rdatatype.NONE))
            if ds is None:
                raise StapleIncomplete(f"no DS for {child} in the bundle")
            parent = self._signer(rrsets, ds)
            if parent == child or not child.is_subdomain(parent):
                raise StapleWrongName(f"the DS of {child} is signed by {parent}, not an ancestor")
            chain.append(parent)
        return chain

    def _check(self, rrsets: dict[RRsetKey, dns.rrset.RRset], rrset: dns.rrset.RRset,
               keys: dict[dns.name.Name, dns.rdataset.Rdataset], now: float) -> float:
        """Validate ``rrset`` under ``keys``; return when its signature expires."""
        sigs = self._sigs(rrsets, rrset)
        if any(rd.labels < len(rrset.name) - 1 for rd in sigs):
            # A wildcard expansion is only proven with the NSEC that no closer name exists,
            # which a bundle does not carry.
            raise StapleMalformed(f"{rrset.name}: a wildcard-expanded answer in a bundle")
        windows = [(rd.inception, rd.expiration) for rd in sigs]
        live = [(i, e) for i, e in windows if i <= now < e]
        if not live:
            start, end = windows[0]
            raise StapleExpired(f"{rrset.name}/{dns.rdatatype.to_text(rrset.rdtype)}: signature "
                                f"valid {start}..{end}, now {int(now)}")
        signers = {rd.signer for rd in sigs}
        if not signers <= set(keys):
            raise StapleWrongName(f"{rrset.name} is signed by {sorted(map(str, signers))}, not "
                                  f"by {sorted(map(str, keys))}")
        try:
            dns.dnssec.validate(rrset, sigs, dict(keys), now=now)
        except dns.exception.ValidationFailure as exc:
            raise StapleBogus(f"{rrset.name}/{dns.rdatatype.to_text(rrset.rdtype)}: "
                              f"{exc}") from None
        return float(max(e for _, e in live))

    @staticmethod
    def _link(rrsets: dict[RRsetKey, dns.rrset.RRset], zone: dns.name.Name) -> bytes:
        """Every octet of one zone's link in the chain: its DS and DNSKEY sets and their
        signatures. A cached validation is reused only for these exact octets."""
        return b"".join(_rrset_wire(rrsets[k]) for k in (
            (zone, DS, dns.rdatatype.NONE), (zone, RRSIG, DS), (zone, DNSKEY, dns.rdatatype.NONE),
            (zone, RRSIG, DNSKEY)) if k in rrsets)

    def _trusted_keys(self, rrsets: dict[RRsetKey, dns.rrset.RRset],
                      chain: Sequence[dns.name.Name], now: float
                      ) -> tuple[dns.rdataset.Rdataset, float]:
        """Walk down from the root to the MN's zone. A parent zone's link that is octet for
        octet one validated before (within its TTL) reuses that validation's keys; anything
        else in the bundle, a flipped bit included, is validated again."""
        expires = float("inf")  # of the signatures: when the bundle stops being valid
        until = float("inf")  # of the cached keys: that, and their TTL
        trusted: dns.rdataset.Rdataset | None = None
        for i in range(len(chain) - 1, -1, -1):
            zone = chain[i]
            link = self._link(rrsets, zone)
            hit = self._cache.get(zone) if i > 0 else None  # the MN's own zone: never cached
            if hit is not None and hit[1] > now and hit[3] == link:
                trusted, expires = hit[0], min(expires, hit[2])
                until = min(until, hit[1])
                continue
            if trusted is None:
                if zone != dns.name.root:
                    raise StapleIncomplete("the chain does not reach the root")
                trusted, expires = self._zone_keys(rrsets, zone, list(self._anchor), now,
                                                   expires)
                until = min(until, expires, now + trusted.ttl)
            else:
                parent = chain[i + 1]
                ds = rrsets[(zone, DS, dns.rdatatype.NONE)]
                expires = min(expires, self._check(rrsets, ds, {parent: trusted}, now))
                ds_list = [rd for rd in ds if isinstance(rd, dns.rdtypes.ANY.DS.DS)]
                trusted, expires = self._zone_keys(rrsets, zone, ds_list, now, expires)
                until = min(until, expires, now + trusted.ttl, now + ds.ttl)
            if i > 0:
                self._remember(zone, trusted, until, expires, link)
        assert trusted is not None
        return trusted, expires

    def _zone_keys(self, rrsets: dict[RRsetKey, dns.rrset.RRset], zone: dns.name.Name,
                   ds_set: Sequence[dns.rdtypes.ANY.DS.DS], now: float, expires: float
                   ) -> tuple[dns.rdataset.Rdataset, float]:
        """The zone's keys a trusted DS vouches for. A key whose digest matches the DS is
        authenticated by it; the DNSKEY RRset's own signature, if stapled, extends trust to
        the rest of the set (a separate ZSK). Without it only the matching keys are used:
        that is what lets a combined signing key omit its self-signature (docs/protocol.md 6.9)."""
        dnskeys = rrsets.get((zone, DNSKEY, dns.rdatatype.NONE))
        if dnskeys is None:
            raise StapleIncomplete(f"no DNSKEY for {zone} in the bundle")
        matching = dns.rdataset.Rdataset(IN, DNSKEY)
        matching.update_ttl(dnskeys.ttl)
        for rd in dnskeys:
            assert isinstance(rd, dns.rdtypes.ANY.DNSKEY.DNSKEY)
            for ds in ds_set:
                try:
                    digest = dns.dnssec.make_ds(zone, rd, ds.digest_type)
                except (dns.exception.UnsupportedAlgorithm, ValueError):
                    continue
                if digest == ds:
                    matching.add(rd)
        if not matching:
            raise StapleBogus(f"no DNSKEY of {zone} matches its trusted DS")
        if (zone, RRSIG, DNSKEY) in rrsets:
            expires = min(expires, self._check(rrsets, dnskeys, {zone: matching}, now))
            full = dns.rdataset.Rdataset(IN, DNSKEY)
            full.update_ttl(dnskeys.ttl)
            for rd in dnskeys:
                full.add(rd)
            return full, expires
        return matching, expires

    def _remember(self, zone: dns.name.Name, keys: dns.rdataset.Rdataset, until: float,
                  expires: float, link: bytes) -> None:
        if len(self._cache) >= self._cache_max:
            self._cache.clear()
        self._cache[zone] = (keys, until, expires, link)
        self.stats["cached_zone_keys"] = len(self._cache)


# --- the MN's side: fetch through the validating resolver, with the RRSIGs -------------------


async def _signed(resolver: ValidatingResolver, qname: str, rdtype: dns.rdatatype.RdataType,
                  optional: bool = False) -> list[dns.rrset.RRset]:
    """The validated RRset and its RRSIG set, as the resolver answered them (AD required)."""
    q = normalize(qname) + "." if qname.strip(".") else "."
    what = f"{q}/{dns.rdatatype.to_text(rdtype)}"
    r = await resolver.exchange(q, rdtype, dnssec=True)
    # The rules of ValidatingResolver.lookup: a proven answer (AD) or nothing.
    if r.rcode() == dns.rcode.SERVFAIL:
        raise DnsBogus(f"resolver answered SERVFAIL for {what}")
    if r.rcode() != dns.rcode.NOERROR:
        raise DnsRcodeError(f"resolver answered {dns.rcode.to_text(r.rcode())} for {what}")
    if not r.flags & dns.flags.AD:
        raise DnsNotValidated(f"answer for {what} lacks the AD bit")
    owner = dns.name.from_text(q)
    data = [rs for rs in r.answer if rs.name == owner and rs.rdtype == rdtype]
    sigs = [rs for rs in r.answer if rs.name == owner and rs.rdtype == RRSIG
            and rs.covers == rdtype]
    if not data or not sigs:
        if optional:
            return []
        raise DnsRecordError(f"no signed {dns.rdatatype.to_text(rdtype)} for {normalize(qname)}")
    return [data[0], sigs[0]]


@dataclass(frozen=True)
class Bundle:
    data: bytes
    refresh_at: float  # rebuild before this: the first signature expiry minus a margin
    records: tuple[tuple[str, str], ...]  # (owner, type) stapled, for logs and tests
    addresses: frozenset[IPv4Address] = frozenset()  # the stapled A set
    expires: float = 0.0  # the first signature expiry: never sent after it


async def fetch_bundle(resolver: ValidatingResolver, name: str, *,
                       omit_dnskey_sigs: bool = True, clock: Callable[[], float] = time.time
                       ) -> Bundle:
    """Build ``name``'s bundle: its A set, order record, key (and nonce, if any), then DS and
    DNSKEY of each zone up to the root. ``omit_dnskey_sigs`` drops a DNSKEY RRset's RRSIG
    when the set is one key, which its DS then authenticates alone (docs/protocol.md 6.9)."""
    canon = normalize(name)
    leaf = await asyncio.gather(
        _signed(resolver, canon, A, optional=True),
        _signed(resolver, addrs_owner(canon), TXT, optional=True),
        _signed(resolver, key_owner(canon), TLSA),
        _signed(resolver, key_owner(canon), TXT, optional=True),
    )
    rrsets = [rs for pair in leaf for rs in pair]
    zone = next(rd.signer for rd in leaf[2][1])
    while True:
        dnskey = await _signed(resolver, zone.to_text(), DNSKEY)
        if omit_dnskey_sigs and len(dnskey[0]) == 1:
            dnskey = dnskey[:1]
        rrsets += dnskey
        if zone == dns.name.root:
            break
        ds = await _signed(resolver, zone.to_text(), DS)
        rrsets += ds
        zone = next(rd.signer for rd in ds[1])
    a_set = frozenset(IPv4Address(rd.address) for rs in leaf[0][:1] for rd in rs)
    expiries = [rd.expiration for rs in rrsets if rs.rdtype == RRSIG for rd in rs]
    return Bundle(encode_bundle(rrsets), _refresh_at(rrsets, clock()),
                  tuple((rs.name.to_text(), dns.rdatatype.to_text(rs.rdtype)) for rs in rrsets),
                  a_set, float(min(expiries, default=0)))


def _refresh_at(rrsets: Sequence[dns.rrset.RRset], now: float) -> float:
    """Before the first signature expires; never sooner than a few seconds from now."""
    expiries = [rd.expiration for rs in rrsets if rs.rdtype == RRSIG for rd in rs]
    first = float(min(expiries, default=now))
    return max(first - min(REFRESH_MARGIN_S, (first - now) / 2), now + 5.0)


def load_verifier(path: Path | None) -> StapleVerifier | None:
    """The AR's verifier from the lab's trust-anchor file; None (stapling refused, every
    stapled AUTH falls back to the lookups) when there is none or it does not parse."""
    if path is None:
        return None
    try:
        return StapleVerifier(path.read_text())
    except (OSError, ValueError, dns.exception.DNSException) as exc:
        log.error("no trust anchor for stapled proofs from %s: %s", path, exc)
        return None


def fits_auth(staple: bytes, peer: str, auth: str, previous: str | None,
              addresses: int) -> bool:
    """Whether an AUTH with this staple (and a cookie, should one be asked) fits one
    datagram (messages.AUTH_MAX_STAPLED), for IPv4 host addresses."""
    size = auth_size(staple, peer, auth, previous, addresses, cookie=True)
    return len(staple) <= MAX_STAPLE_LEN and size <= AUTH_MAX_STAPLED


def auth_size(staple: bytes | None, peer: str, auth: str, previous: str | None,
              addresses: int, *, cookie: bool = False) -> int:
    """The octets of such an AUTH (docs/protocol.md): the stapled field only with a staple,
    the cookie only when the AR asked for one; IPv4 host addresses."""
    return (AUTH_FIXED + 2 + len(peer) + len(auth) + (1 + len(previous) if previous else 0)
            + (3 + len(staple) if staple is not None else 0) + 1 + 6 * addresses
            + (COOKIE_LEN if cookie else 0) + TAG_LEN)


# --- the MN: keep a current bundle, built outside the handoff path -----------------------------


Events = Callable[..., None]


class StapleKeeper:
    """The MN's bundle: rebuilt when the addresses it holds differ from the stapled A set
    (after its own DNS update, once the resolver sees it) and before a signature expires.
    A handoff uses what is there and never waits for a fetch: that is the point."""

    def __init__(self, resolver: ValidatingResolver, name: str, events: Events, *,
                 clock: Callable[[], float] = time.time, retry_s: float = 1.0) -> None:
        self._resolver = resolver
        self._name = normalize(name)
        self._events = events
        self._clock = clock
        self._retry_s = retry_s
        self.bundle: Bundle | None = None
        self._failed_at = float("-inf")

    def current(self, held: Iterable[IPv4Address] = ()) -> bytes | None:
        """The bundle to staple now, or None (none yet, expired, or not covering ``held``)."""
        b = self.bundle
        if b is None or self._clock() >= b.expires or not set(held) <= b.addresses:
            return None
        return b.data

    def stale(self, held: Iterable[IPv4Address]) -> bool:
        b = self.bundle
        return b is None or self._clock() >= b.refresh_at or set(held) != b.addresses

    async def refresh(self, held: Sequence[IPv4Address], force: bool = False) -> bool:
        """Rebuild if stale (or ``force``); False when the build failed (retried later)."""
        now = self._clock()
        if not force and (not self.stale(held) or now - self._failed_at < self._retry_s):
            return True
        try:
            bundle = await fetch_bundle(self._resolver, self._name, clock=self._clock)
        except (DnsError, StapleError, ValueError, OSError) as exc:
            self._failed_at = now
            self._events(Event.STAPLE_FAILED, mn=self._name, error=f"{type(exc).__name__}: {exc}")
            return False
        changed = self.bundle is None or bundle.data != self.bundle.data
        self.bundle = bundle
        if changed:
            self._events(Event.STAPLE_BUILT, mn=self._name, size=len(bundle.data),
                         addrs=sorted(str(a) for a in bundle.addresses),
                         refresh_at=bundle.refresh_at, expires=bundle.expires)
        return True


# --- the AR: validate what arrives, fall back to the lookups when it does not validate -----


class _Lookups(Protocol):
    async def resolve(self, name: str) -> PublishedKey: ...


class StapleService:
    """The AR's resolver for stapled AUTHs and its address checker (handoff.AddressChecker).

    ``resolve_stapled`` is what agents/auth/authenticator.py calls for an AUTH with flag S;
    ``offer`` hands the bundle of an authenticated AUTH to the next ``verify`` for that MN.
    A bundle that does not validate is never trusted: the event says why, and the lookups
    (``keys``, ``checker``) answer instead. PTRs are always looked up (draft 2.2)."""

    def __init__(self, keys: _Lookups, checker: ValidatingResolver,
                 verifier: StapleVerifier | None, events: Events, cache: int = 1024,
                 clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._keys = keys
        self._checker = checker
        self.verifier = verifier
        self._events = events
        self._offered: dict[str, bytes] = {}
        self._done: dict[bytes, Stapled] = {}  # one validation serves key and addresses
        self._cache = cache
        self.stats = {"stapled": 0, "refused": 0, "lookup": 0}

    def subscribe(self, callback: Callable[[str], None]) -> None:
        subscribe = getattr(self._keys, "subscribe", None)
        if subscribe is not None:
            subscribe(callback)

    async def resolve(self, name: str) -> PublishedKey:
        return await self._keys.resolve(name)

    def _validate(self, name: str, staple: bytes) -> Stapled | None:
        hit = self._done.get(staple)
        if hit is not None and hit.name == normalize(name) and self._clock() < hit.expires:
            return hit
        try:
            if self.verifier is None:
                raise StapleIncomplete("this AR has no trust anchor configured")
            got = self.verifier.verify(name, staple)
        except StapleError as exc:
            self.stats["refused"] += 1
            self._events(Event.STAPLE_REFUSED, mn=normalize(name), size=len(staple),
                         error=type(exc).__name__, reason=str(exc), fallback="lookup")
            return None
        if len(self._done) >= self._cache:
            self._done.clear()
        self._done[staple] = got
        self._events(Event.STAPLE_VALIDATED, mn=got.name, size=len(staple), zones=list(got.zones),
                     expires=got.expires,
                     addrs=[str(a) for a in got.addresses] if got.addresses else [])
        return got

    async def resolve_stapled(self, name: str, staple: bytes) -> PublishedKey:
        got = self._validate(name, staple)
        if got is None:
            return await self._keys.resolve(name)
        return got.key

    def offer(self, name: str, staple: bytes | None) -> None:
        if staple is None:
            self._offered.pop(name, None)
        else:
            self._offered[name] = staple

    async def verify(self, name: str, claimed: list[IPv4Address]
                     ) -> tuple[list[IPv4Address], dict[IPv4Address, str]]:
        """ValidatingResolver.verify, with the forward set from the bundle when it validates
        and covers every claimed address; otherwise the lookups, as without a staple."""
        staple = self._offered.pop(normalize(name), None)
        got = self._validate(name, staple) if staple is not None else None
        if got is not None and (got.addresses is None or not set(claimed) <= set(got.addresses)):
            self._events(Event.STAPLE_REFUSED, mn=got.name, size=len(staple or b""),
                         error="StapleStale", fallback="lookup",
                         reason="a claimed address is not in the stapled address set")
            got = None
        if got is None or got.addresses is None:
            self.stats["lookup"] += 1
            return await self._checker.verify(name, claimed)
        self.stats["stapled"] += 1
        forward = got.addresses
        ptrs = await asyncio.gather(*(self._checker.ptr(a) for a in claimed),
                                    return_exceptions=True)
        return judge_claims(name, claimed, forward, ptrs, "stapled")


# --- command line, for lab nodes and the integration tests ----------------------------------


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="agents.staple", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="build NAME's bundle through the validating resolver")
    f.add_argument("--resolver", required=True)
    f.add_argument("--port", type=int, default=53)
    f.add_argument("name")
    a = sub.add_parser("auth", help="one AUTH as the MN of --config, with the given staple")
    a.add_argument("--config", required=True, type=Path, help="the MN's agent.json")
    a.add_argument("--keys", required=True, type=Path, help="the MN's ar_keys.json")
    a.add_argument("--ar", required=True, help="AR node name")
    a.add_argument("--staple", default="", help="hex; empty: no staple")
    return ap


async def _cli(args: argparse.Namespace) -> dict[str, Any]:
    if args.cmd == "fetch":
        b = await fetch_bundle(ValidatingResolver(args.resolver, args.port), args.name)
        return {"name": normalize(args.name), "size": len(b.data), "bundle": b.data.hex(),
                "records": [list(r) for r in b.records], "expires": b.expires,
                "addrs": sorted(str(x) for x in b.addresses)}
    # Imported here: the AR never needs the MN's agent to validate.
    from .auth import KeyStore, Peer, StaticDirectory
    from .contract import MnAgentConfig
    from .mn import load_key_list

    cfg = MnAgentConfig.load(args.config)
    if cfg.address is None:
        raise ValueError("the probe needs an MN with a provisioned address")
    peer = Peer(KeyStore.from_pem(cfg.identity, cfg.key.read_bytes()),
                StaticDirectory(load_key_list(args.keys)))
    fqdn = cfg.ars[args.ar]
    staple = bytes.fromhex(args.staple) if args.staple else None
    t0 = time.time()
    session = await peer.authenticate(
        (cfg.gateway, cfg.auth_port), fqdn, [f"{cfg.address}/32"], timeout=0.5, retries=3,
        local_addr=(str(cfg.address), 0), staple=staple)
    session.close()
    return {"ok": True, "rerouted": [str(x) for x in session.rerouted], "t_sent": t0,
            "auth_ms": (time.time() - t0) * 1000}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        print(json.dumps(asyncio.run(_cli(args))))
    except (AuthError, DnsError, StapleError, OSError, ValueError) as exc:
        print(f"agents.staple: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "Bundle", "DnsError", "StapleBogus", "StapleError", "StapleExpired", "StapleIncomplete",
    "StapleKeeper", "StapleMalformed", "StapleService", "StapleVerifier", "StapleWrongName",
    "Stapled", "encode_bundle", "fetch_bundle", "parse_bundle", "parse_trust_anchor",
]


if __name__ == "__main__":
    sys.exit(main())
