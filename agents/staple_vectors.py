"""A deterministic signed DNS tree (root, ``example.``, ``mn1.example.``; P-256 combined signing
keys from fixed scalars, RFC 6979 signatures) and the stapled bundle of ``mn1.example``: the test
vectors of docs/protocol.md 6.9. ``python -m agents.staple_vectors`` prints the fenced block.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import dns.dnssec
import dns.dnssectypes
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rrset
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agents.auth.keys import Suite
from agents.auth.keystore import KeyStore
from agents.auth.messages import AuthMessage, to_prefix
from agents.auth.protocol import build_auth

from .dns import RECORD_VERSION, TLSA_MATCHING, TLSA_SELECTOR, TLSA_USAGE
from .staple import encode_bundle

INCEPTION = 1_700_000_000
EXPIRATION = INCEPTION + 7200  # a two-hour window, as the lab's policy signs
NOW = INCEPTION + 600
MN_NAME = "mn1.example"
AR_NAME = "ar1.isp.test"
ADDRESSES = (IPv4Address("10.64.1.30"), IPv4Address("10.64.0.10"))  # newest first
RECORD_TTL, KEY_TTL = 5, 60
ALGORITHM = dns.dnssectypes.Algorithm.ECDSAP256SHA256
IN = dns.rdataclass.IN


def scalar(who: str) -> ec.EllipticCurvePrivateKey:
    digest = hashlib.sha256(f"flatarch staple vector {who}".encode()).digest()
    return ec.derive_private_key(int.from_bytes(digest, "big"), ec.SECP256R1())


def spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class Zone:
    """One zone of the tree: its combined signing key and what it signs."""

    name: dns.name.Name
    key: ec.EllipticCurvePrivateKey
    inception: int = INCEPTION
    expiration: int = EXPIRATION
    dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY = field(init=False)

    def __post_init__(self) -> None:
        made = dns.dnssec.make_dnskey(self.key.public_key(), ALGORITHM, flags=257)
        assert isinstance(made, dns.rdtypes.ANY.DNSKEY.DNSKEY)
        self.dnskey = made

    def rrset(self, owner: str, rdtype: str, ttl: int, *texts: str) -> dns.rrset.RRset:
        return dns.rrset.from_text(owner, ttl, "IN", rdtype, *texts)

    def sign(self, rrset: dns.rrset.RRset, key: ec.EllipticCurvePrivateKey | None = None
             ) -> list[dns.rrset.RRset]:
        """The RRset and its RRSIG set, signed by this zone (or by ``key``, a forgery)."""
        signer = self.key if key is None else key
        dnskey = self.dnskey if key is None else Zone(self.name, key).dnskey
        sig = dns.dnssec.sign(rrset, signer, self.name, dnskey, inception=self.inception,
                              expiration=self.expiration, deterministic=True)
        sigs = dns.rrset.RRset(rrset.name, IN, dns.rdatatype.RRSIG, rrset.rdtype)
        sigs.update_ttl(rrset.ttl)
        sigs.add(sig)
        return [rrset, sigs]

    def keyset(self, signed: bool = False) -> list[dns.rrset.RRset]:
        rrset = dns.rrset.RRset(self.name, IN, dns.rdatatype.DNSKEY)
        rrset.update_ttl(KEY_TTL)
        rrset.add(self.dnskey)
        return self.sign(rrset) if signed else [rrset]

    def ds(self) -> dns.rdata.Rdata:
        return dns.dnssec.make_ds(self.name, self.dnskey, "SHA256")


@dataclass
class Tree:
    root: Zone
    tld: Zone
    home: Zone
    mn_key: ec.EllipticCurvePrivateKey

    @classmethod
    def make(cls) -> Tree:
        return cls(Zone(dns.name.root, scalar("root")),
                   Zone(dns.name.from_text("example."), scalar("example")),
                   Zone(dns.name.from_text(MN_NAME + "."), scalar(MN_NAME)), scalar("mn key"))

    def trust_anchor(self) -> str:
        return f". DS {self.root.ds().to_text()}"

    def leaf(self, name: str = MN_NAME) -> list[dns.rrset.RRset]:
        """The MN's A set, order record and key record, each with its RRSIG set."""
        z = self.home
        a = z.rrset(f"{name}.", "A", RECORD_TTL, *(str(x) for x in ADDRESSES))
        order = z.rrset(f"_addrs.{name}.", "TXT", RECORD_TTL,
                        " ".join(f'"{s}"' for s in (RECORD_VERSION, *map(str, ADDRESSES))))
        tlsa = z.rrset(f"_flatarch.{name}.", "TLSA", RECORD_TTL,
                       f"{TLSA_USAGE} {TLSA_SELECTOR} {TLSA_MATCHING} {spki(self.mn_key).hex()}")
        return [*z.sign(a), *z.sign(order), *z.sign(tlsa)]

    def chain(self, signed_keys: bool = False) -> list[dns.rrset.RRset]:
        """DNSKEY and DS of each zone up to the root, in the order fetch_bundle writes them."""
        out: list[dns.rrset.RRset] = []
        for child, parent in ((self.home, self.tld), (self.tld, self.root)):
            out += child.keyset(signed_keys)
            ds = dns.rrset.RRset(child.name, IN, dns.rdatatype.DS)
            ds.update_ttl(KEY_TTL)
            ds.add(child.ds())
            out += parent.sign(ds)
        return out + self.root.keyset(signed_keys)

    def bundle(self, signed_keys: bool = False) -> bytes:
        return encode_bundle(self.leaf() + self.chain(signed_keys))


def auth_with_staple(staple: bytes) -> bytes:
    """An AUTH from mn1.example to ar1.isp.test carrying ``staple`` (fixed nonces and time)."""
    tree = Tree.make()
    peer = KeyStore.from_private_bytes(MN_NAME, Suite.P256,
                                       tree.mn_key.private_numbers().private_value
                                       .to_bytes(32, "big"))
    ar = KeyStore.from_private_bytes(AR_NAME, Suite.P256,
                                     scalar("ar").private_numbers().private_value
                                     .to_bytes(32, "big"))
    data, _, _ = build_auth(peer, ar.published_key(), timestamp_us=NOW * 1_000_000,
                            peer_nonce=bytes(range(16)), auth_nonce=bytes(16),
                            addresses=[to_prefix(a) for a in ADDRESSES], mobility=True,
                            staple=staple)
    assert AuthMessage.unpack(data).staple == staple
    return data


def compute() -> list[tuple[str, str]]:
    tree = Tree.make()
    bundle = tree.bundle()
    auth = auth_with_staple(bundle)
    return [
        ("trust_anchor", tree.trust_anchor()),
        ("now", str(NOW)),
        ("name", MN_NAME),
        ("addresses", " ".join(map(str, ADDRESSES))),
        ("mn_spki", spki(tree.mn_key).hex()),
        ("bundle_len", str(len(bundle))),
        ("bundle", bundle.hex()),
        ("auth_len", str(len(auth))),
        ("auth", auth.hex()),
    ]


def render() -> str:
    lines = "\n".join(f"{k} = {v}" for k, v in compute())
    return f"```staple-vector\n{lines}\n```"


if __name__ == "__main__":
    print(render())
