"""The stapled DNSSEC bundle (agents/staple.py): build, strict parse, offline validation against
a signed tree made here with dnspython, every refusal typed, the key cache, the fuzz campaign
and the test vectors of docs/protocol.md 6.9.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
from ipaddress import IPv4Address
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.auth.keys import PublishedKey, Suite
from agents.auth.messages import AuthMessage
from agents.staple import (
    StapleBogus,
    StapleError,
    StapleExpired,
    StapleIncomplete,
    StapleKeeper,
    StapleMalformed,
    StapleService,
    StapleVerifier,
    StapleWrongName,
    auth_size,
    encode_bundle,
    fetch_bundle,
    fits_auth,
    parse_bundle,
)
from agents.staple_fuzz import run_campaign
from agents.staple_vectors import (
    ADDRESSES,
    EXPIRATION,
    MN_NAME,
    NOW,
    Tree,
    Zone,
    compute,
    scalar,
    spki,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def verifier(tree: Tree, now: float = NOW) -> StapleVerifier:
    return StapleVerifier(tree.trust_anchor(), clock=lambda: now)


def test_genuine_bundle_validates_offline() -> None:
    tree = Tree.make()
    got = verifier(tree).verify(MN_NAME, tree.bundle())
    assert got.name == MN_NAME
    assert got.addresses == ADDRESSES  # the order record's order, not numeric
    assert got.key.spki == spki(tree.mn_key) and got.key.nonce is None
    assert got.zones == ("mn1.example.", "example.", ".")
    assert got.expires == EXPIRATION


def _rrsig_offsets(bundle: bytes) -> list[int]:
    """Where each RRSIG's signature (its last 64 octets) starts in the bundle."""
    out: list[int] = []
    off = 0
    while off < len(bundle):
        while bundle[off]:
            off += 1 + bundle[off]
        off += 1
        rdtype, _, _, rdlen = struct.unpack_from("!HHIH", bundle, off)
        off += 10 + rdlen
        if rdtype == dns.rdatatype.RRSIG:
            out.append(off - 64)
    return out


@pytest.mark.parametrize("index", range(5))
def test_flipped_byte_in_any_rrsig_is_bogus(index: int) -> None:
    tree = Tree.make()
    bundle = tree.bundle()
    offsets = _rrsig_offsets(bundle)
    assert len(offsets) == 5  # A, order, key, DS of mn1.example, DS of example.
    at = offsets[index] + 10
    bad = bundle[:at] + bytes((bundle[at] ^ 0x01,)) + bundle[at + 1:]
    with pytest.raises(StapleBogus):
        verifier(tree).verify(MN_NAME, bad)


def test_key_not_in_the_chain_is_bogus() -> None:
    tree = Tree.make()
    leaf = tree.leaf()
    # The A set re-signed under the right signer name with a key the chain does not hold.
    leaf[0:2] = tree.home.sign(leaf[0], key=scalar("attacker"))
    with pytest.raises(StapleBogus):
        verifier(tree).verify(MN_NAME, encode_bundle(leaf + tree.chain()))
    # A whole tree of the attacker's own, up to a root that is not our trust anchor.
    fake = Tree(Zone(dns.name.root, scalar("evil root")), tree.tld, tree.home, tree.mn_key)
    with pytest.raises(StapleBogus):
        verifier(tree).verify(MN_NAME, fake.bundle())


def test_expired_and_not_yet_valid_signatures_are_refused() -> None:
    tree = Tree.make()
    with pytest.raises(StapleExpired):
        verifier(tree, now=EXPIRATION + 1).verify(MN_NAME, tree.bundle())
    with pytest.raises(StapleExpired):
        verifier(tree, now=NOW - 3600).verify(MN_NAME, tree.bundle())
    tree.home.expiration = NOW - 1  # only the home zone signed too short
    with pytest.raises(StapleExpired):
        verifier(tree).verify(MN_NAME, tree.bundle())


def test_bundle_for_another_name_is_refused() -> None:
    tree = Tree.make()
    with pytest.raises(StapleWrongName):
        verifier(tree).verify("mn2.example", tree.bundle())
    # mn2's records, signed by mn1's zone: the zone is not mn2's ancestor.
    forged = encode_bundle(tree.leaf("mn2.example") + tree.chain())
    with pytest.raises(StapleWrongName):
        verifier(tree).verify("mn2.example", forged)
    # An extra RRset that is not the MN's is not silently carried along.
    other = tree.home.sign(dns.rrset.from_text("x.mn1.example.", 5, "IN", "A", "10.0.0.1"))
    with pytest.raises(StapleWrongName):
        verifier(tree).verify(MN_NAME, encode_bundle(tree.leaf() + other + tree.chain()))


def test_missing_links_are_incomplete() -> None:
    tree = Tree.make()
    chain = tree.chain()
    no_ds = [rs for rs in chain if not (rs.name == tree.home.name
                                        and dns.rdatatype.DS in (rs.rdtype, rs.covers))]
    with pytest.raises(StapleIncomplete):
        verifier(tree).verify(MN_NAME, encode_bundle(tree.leaf() + no_ds))
    unsigned = [rs for rs in tree.leaf() if rs.rdtype != dns.rdatatype.RRSIG]
    with pytest.raises(StapleIncomplete):
        verifier(tree).verify(MN_NAME, encode_bundle(unsigned + chain))
    with pytest.raises(StapleIncomplete):
        verifier(tree).verify(MN_NAME, encode_bundle(tree.leaf()[:4] + chain))


def test_signed_key_sets_validate_and_parent_keys_are_cached_for_their_ttl(
        monkeypatch: pytest.MonkeyPatch) -> None:
    tree = Tree.make()
    leaf = [rs for rs in tree.leaf() if not rs.name.to_text().startswith("_addrs")]
    signed = encode_bundle(leaf + tree.chain(signed_keys=True))
    now = [float(NOW)]
    v = StapleVerifier(tree.trust_anchor(), clock=lambda: now[0])
    assert v.verify(MN_NAME, signed).addresses == tuple(sorted(ADDRESSES))
    calls = [0]
    real = dns.dnssec.validate

    def counted(*args: object, **kw: object) -> None:
        calls[0] += 1
        real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(dns.dnssec, "validate", counted)
    bundle = tree.bundle()
    v.verify(MN_NAME, bundle)
    full = calls[0]
    assert v.stats["cached_zone_keys"] == 2  # the root and example., never the MN's zone
    calls[0] = 0
    v.verify(MN_NAME, bundle)  # the same octets: the parents' links come from the cache
    assert calls[0] == full - 1  # DS of example. not checked again; DS of mn1.example. is
    # A flipped bit in a cached parent's link is not covered by the cache: refused.
    at = _rrsig_offsets(bundle)[-1] + 10  # the RRSIG over example.'s DS
    with pytest.raises(StapleBogus):
        v.verify(MN_NAME, bundle[:at] + bytes((bundle[at] ^ 1,)) + bundle[at + 1:])
    now[0] += 61  # past the DNSKEY TTL: the whole chain is validated again
    calls[0] = 0
    v.verify(MN_NAME, bundle)
    assert calls[0] == full


def test_parse_is_strict() -> None:
    tree = Tree.make()
    bundle = tree.bundle()
    assert len(parse_bundle(bundle)) == 13
    with pytest.raises(StapleMalformed):
        parse_bundle(b"")
    with pytest.raises(StapleMalformed):  # trailing octet
        parse_bundle(bundle + b"\x00")
    with pytest.raises(StapleMalformed):  # compression pointer as owner
        parse_bundle(bundle + b"\xc0\x00" + struct.pack("!HHIH", 1, 1, 5, 4) + bytes(4))
    with pytest.raises(StapleMalformed):  # class CH
        parse_bundle(b"\x00" + struct.pack("!HHIH", 1, 3, 5, 4) + bytes(4))
    with pytest.raises(StapleMalformed):  # a type that has no place here (NS)
        parse_bundle(b"\x00" + struct.pack("!HHIH", 2, 1, 5, 1) + b"\x00")
    with pytest.raises(StapleMalformed):  # A with 5 octets
        parse_bundle(b"\x00" + struct.pack("!HHIH", 1, 1, 5, 5) + bytes(5))
    a = b"\x00" + struct.pack("!HHIH", 1, 1, 5, 4) + bytes(4)
    with pytest.raises(StapleMalformed):  # duplicate record
        parse_bundle(a + a)
    with pytest.raises(StapleMalformed):  # one RRset, two TTLs
        parse_bundle(a + b"\x00" + struct.pack("!HHIH", 1, 1, 6, 4) + b"\x00\x00\x00\x01")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.builds(lambda i, b: Tree.make().bundle()[:i] + b,
                                           st.integers(0, 1300), st.binary(max_size=20)))
def test_parser_raises_only_typed_errors(data: bytes) -> None:
    tree = Tree.make()
    with contextlib.suppress(StapleError):
        verifier(tree).verify(MN_NAME, data)


def test_fuzz_campaign_finds_no_crash_and_no_forgery() -> None:
    report = run_campaign(400, seed=7)
    assert report.ok, report.examples
    assert report.rejected > 300


def test_stapled_auth_fits_one_datagram() -> None:
    values = dict(compute())
    auth = bytes.fromhex(values["auth"])
    assert len(auth) + 20 + 8 <= 1500  # IPv4 + UDP headers on a 1,500-octet MTU
    assert AuthMessage.unpack(auth).staple == bytes.fromhex(values["bundle"])


def test_document_vectors_match_and_validate() -> None:
    block = re.search(r"```staple-vector\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None, "docs/protocol.md lacks the staple vector"
    doc = dict(line.split(" = ", 1) for line in block.group(1).strip().splitlines())
    assert doc == dict(compute())
    got = StapleVerifier(doc["trust_anchor"], clock=lambda: int(doc["now"])).verify(
        doc["name"], bytes.fromhex(doc["bundle"]))
    assert [str(a) for a in got.addresses or ()] == doc["addresses"].split()
    assert got.key.spki.hex() == doc["mn_spki"]
    assert AuthMessage.unpack(bytes.fromhex(doc["auth"])).staple == bytes.fromhex(doc["bundle"])
    assert [IPv4Address(a) for a in doc["addresses"].split()] == list(ADDRESSES)


class _FakeResolver:
    """Answers like the lab's Unbound with DO set: data, its RRSIGs and the AD bit."""

    def __init__(self, tree: Tree) -> None:
        self.rrsets = tree.leaf() + tree.chain(signed_keys=True)
        self.asked: list[tuple[str, str]] = []

    async def exchange(self, qname: str, rdtype: dns.rdatatype.RdataType,
                       dnssec: bool = False) -> dns.message.Message:
        assert dnssec
        self.asked.append((qname, dns.rdatatype.to_text(rdtype)))
        q = dns.message.make_query(qname, rdtype, want_dnssec=True)
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AD
        owner = dns.name.from_text(qname)
        for rs in self.rrsets:
            if rs.name == owner and rdtype in (rs.rdtype, rs.covers):
                r.answer.append(rs)
        return r


def test_fetch_bundle_builds_what_the_verifier_accepts() -> None:
    tree = Tree.make()
    fake = _FakeResolver(tree)
    bundle = asyncio.run(fetch_bundle(fake, MN_NAME, clock=lambda: NOW))  # type: ignore[arg-type]
    assert ("." , "DNSKEY") in fake.asked and ("mn1.example.", "DS") in fake.asked
    assert bundle.addresses == frozenset(ADDRESSES) and bundle.expires == EXPIRATION
    assert NOW < bundle.refresh_at < EXPIRATION
    # The single-key DNSKEY sets go without their self-signatures: 1,197 octets.
    assert len(bundle.data) == len(tree.bundle())
    got = verifier(tree).verify(MN_NAME, bundle.data)
    assert got.addresses == ADDRESSES
    events: list[tuple[str, dict[str, object]]] = []
    keeper = StapleKeeper(fake, MN_NAME, lambda ev, **kw: events.append((ev, kw)),  # type: ignore[arg-type]
                          clock=lambda: NOW)
    assert keeper.current() is None
    assert asyncio.run(keeper.refresh(list(ADDRESSES)))
    assert keeper.current(ADDRESSES) == bundle.data and events[0][0] == "staple_built"
    assert keeper.current([IPv4Address("10.9.9.9")]) is None  # does not cover that address
    assert keeper.stale([ADDRESSES[0]]) and not keeper.stale(ADDRESSES)


class _Lookups:
    """The AR's lookup path, counted: what the fallback would ask the DNS."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.calls: list[str] = []

    async def resolve(self, name: str) -> PublishedKey:
        self.calls.append(f"key {name}")
        return PublishedKey(name, Suite.P256, spki(self.tree.mn_key))

    async def verify(self, name: str, claimed: list[IPv4Address]
                     ) -> tuple[list[IPv4Address], dict[IPv4Address, str]]:
        self.calls.append(f"verify {name}")
        return list(claimed), {}

    async def ptr(self, address: IPv4Address) -> str:
        self.calls.append(f"ptr {address}")
        return MN_NAME


def _service(tree: Tree, anchor: bool = True
             ) -> tuple[StapleService, _Lookups, list[tuple[str, dict[str, object]]]]:
    lookups = _Lookups(tree)
    events: list[tuple[str, dict[str, object]]] = []
    svc = StapleService(lookups, lookups, verifier(tree) if anchor else None,  # type: ignore[arg-type]
                        lambda ev, **kw: events.append((ev, kw)), clock=lambda: NOW)
    return svc, lookups, events


def test_ar_takes_key_and_addresses_from_a_valid_bundle_and_only_ptrs_from_dns() -> None:
    tree = Tree.make()
    svc, lookups, events = _service(tree)
    bundle = tree.bundle()
    key = asyncio.run(svc.resolve_stapled(MN_NAME, bundle))
    assert key.spki == spki(tree.mn_key)
    svc.offer(MN_NAME, bundle)
    accepted, refused = asyncio.run(svc.verify(MN_NAME, [ADDRESSES[1]]))
    assert accepted == [ADDRESSES[1]] and refused == {}
    assert lookups.calls == [f"ptr {ADDRESSES[1]}"]  # no key, no forward lookup
    assert [e for e, _ in events] == ["staple_validated"]  # one validation served both


def test_ar_refuses_bad_bundles_with_an_event_and_falls_back_to_lookups() -> None:
    tree = Tree.make()
    svc, lookups, events = _service(tree)
    bad = bytearray(tree.bundle())
    bad[_rrsig_offsets(bytes(bad))[0] + 10] ^= 1
    asyncio.run(svc.resolve_stapled(MN_NAME, bytes(bad)))
    svc.offer(MN_NAME, bytes(bad))
    asyncio.run(svc.verify(MN_NAME, [ADDRESSES[0]]))
    assert lookups.calls == [f"key {MN_NAME}", f"verify {MN_NAME}"]
    assert [(e, kw["error"], kw["fallback"]) for e, kw in events] == [
        ("staple_refused", "StapleBogus", "lookup")] * 2
    # A valid bundle that does not cover a claimed address: the lookups decide.
    svc.offer(MN_NAME, tree.bundle())
    asyncio.run(svc.verify(MN_NAME, [IPv4Address("10.64.9.9")]))
    assert lookups.calls[-1] == f"verify {MN_NAME}" and events[-1][1]["error"] == "StapleStale"
    # No trust anchor configured: every bundle is refused, nothing breaks.
    svc2, lookups2, events2 = _service(tree, anchor=False)
    asyncio.run(svc2.resolve_stapled(MN_NAME, tree.bundle()))
    assert lookups2.calls == [f"key {MN_NAME}"] and events2[0][1]["error"] == "StapleIncomplete"


def test_fits_auth_matches_the_encoder() -> None:
    values = dict(compute())
    bundle = bytes.fromhex(values["bundle"])
    auth = bytes.fromhex(values["auth"])  # no previous name, no cookie, two addresses
    assert fits_auth(bundle, MN_NAME, "ar1.isp.test", None, 2)
    assert auth_size(bundle, MN_NAME, "ar1.isp.test", None, 2) == len(auth)
    assert len(auth) + 16 <= 1472
    assert not fits_auth(bundle + bytes(200), MN_NAME, "ar1.isp.test", "ar2.isp.test", 2)


def test_wildcard_expanded_answers_are_refused() -> None:
    tree = Tree.make()
    leaf = tree.leaf()
    a = leaf[0]
    # An RRSIG claiming one label fewer than its owner: a wildcard expansion.
    sig = dns.dnssec.sign(a, tree.home.key, tree.home.name, tree.home.dnskey,
                          inception=tree.home.inception, expiration=tree.home.expiration)
    sigs = dns.rrset.RRset(a.name, a.rdclass, dns.rdatatype.RRSIG, dns.rdatatype.A)
    sigs.update_ttl(a.ttl)
    sigs.add(sig.replace(labels=sig.labels - 1))
    with pytest.raises(StapleMalformed, match="wildcard"):
        verifier(tree).verify(MN_NAME, encode_bundle([a, sigs, *leaf[2:]] + tree.chain()))
