"""Fuzz target ``dns_keys``: published keys as a resolver serves them. Random SPKIs (every key
type, curve OID, explicit parameters, point encoding and DER length form), their mutants, and
mutants of the whole DNS answer, go through ``ValidatingResolver.published_key`` and
``DnssecKeyResolver`` (agents/dns.py) and then the key store's load and ECDH.

Findings: any exception that is not an AuthError; a key accepted that is not the canonical DER
of a key of its suite, for another name, or from an answer without the AD bit (a forgery).
"""

from __future__ import annotations

import asyncio
import hashlib
import random

import dns.flags
import dns.message
import dns.rdatatype
import dns.rrset
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from agents import dns as adns
from agents.auth.errors import AuthError
from agents.auth.keys import PublishedKey, Suite, load_public_key, spki_of
from agents.auth.keystore import KeyStore, Role

from .common import Tally, mutate

NAME = "mn.fuzz.flatarch.test"
OWNER = f"{adns.KEY_LABEL}.{NAME}."
MUTANTS = 15

OID_EC = bytes.fromhex("06072a8648ce3d0201")
ALGORITHMS = [OID_EC, OID_EC, OID_EC, bytes.fromhex("06032b656e"),  # X25519
              bytes.fromhex("06032b6570"), bytes.fromhex("06032b656f"),  # Ed25519, X448
              bytes.fromhex("06032b6571"), bytes.fromhex("06092a864886f70d010101"),  # Ed448, RSA
              bytes.fromhex("06072a8648ce380401"), bytes.fromhex("06072a8648ce3e0201"),  # DSA, DH
              bytes.fromhex("06032a0304"), bytes.fromhex("0600")]
CURVES = [bytes.fromhex(h) for h in (
    "06082a8648ce3d030107", "06082a8648ce3d030107", "06052b81040022", "06052b81040023",
    "06052b8104000a", "06092b2403030208010107", "06052b81040021", "06082a03040506070801")]
# ECParameters of P-256 spelled out (version, prime field, curve, base, order, cofactor).
EXPLICIT_P256 = bytes.fromhex(
    "3081f7020101302c06072a8648ce3d0101022100ffffffff00000001000000000000000000000000ffffffffff"
    "ffffffffffffff305b0420ffffffff00000001000000000000000000000000fffffffffffffffffffffffc0420"
    "5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b031500c49d360886e704936a66"
    "78e1139d26b7819f7e900441046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
    "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5022100ffffffff00000000ffff"
    "ffffffffffffbce6faada7179e84f3b9cac2fc632551020101")


def _der(tag: int, content: bytes, long_form: bool = False) -> bytes:
    n = len(content)
    if n < 128 and not long_form:
        return bytes((tag, n)) + content
    raw = n.to_bytes((n.bit_length() + 7) // 8 or 1, "big")
    return bytes((tag, 0x80 | len(raw))) + raw + content


class _Pool:
    """Valid keys made once: generating a key per input would measure key generation."""

    def __init__(self, rng: random.Random) -> None:
        self.p256 = [ec.derive_private_key(rng.randrange(1, 2**255), ec.SECP256R1()).public_key()
                     for _ in range(16)]
        self.x25519 = [x25519.X25519PrivateKey.from_private_bytes(rng.randbytes(32)).public_key()
                       for _ in range(16)]
        self.valid = [spki_of(k) for k in self.p256 + self.x25519]


def _point(rng: random.Random, pool: _Pool) -> bytes:
    key = rng.choice(pool.p256).public_numbers()
    x, y = key.x.to_bytes(32, "big"), key.y.to_bytes(32, "big")
    return rng.choice((b"\x04" + x + y, b"\x04" + x + y, bytes((2 + (key.y & 1),)) + x,
                       b"\x00", b"\x04" + rng.randbytes(64), rng.randbytes(32),
                       b"\x04" + x + y[:-1] + bytes((y[-1] ^ 1,))))


def spki(rng: random.Random, pool: _Pool) -> bytes:
    """A random SubjectPublicKeyInfo, valid about a third of the time."""
    if rng.random() < 0.3:
        return rng.choice(pool.valid)
    alg = rng.choice(ALGORITHMS)
    long_form = rng.random() < 0.1
    params: bytes
    if alg == OID_EC:
        roll = rng.random()
        if roll < 0.6:
            params = rng.choice(CURVES)
        elif roll < 0.8:
            params = EXPLICIT_P256 if rng.random() < 0.5 else mutate(rng, EXPLICIT_P256)
        else:
            params = rng.choice((b"", b"\x05\x00", rng.randbytes(rng.randint(1, 12))))
        key = _point(rng, pool)
    else:
        params = rng.choice((b"", b"", b"\x05\x00"))
        key = rng.choice((rng.randbytes(32), bytes(32), rng.randbytes(rng.randint(0, 80))))
    unused = 0 if rng.random() < 0.9 else rng.randint(1, 8)
    inner = _der(0x30, alg + params, long_form)
    return _der(0x30, inner + _der(0x03, bytes((unused,)) + key), long_form)


def _nonce_txt(rng: random.Random) -> list[str]:
    roll = rng.random()
    if roll < 0.4:
        return []
    nonce = rng.randbytes(rng.choice((16, 16, 15, 0, 32))).hex()
    strings = ["v=fa1", f"nonce={nonce}", f"expires={rng.choice((1900000000, 0, -1, 2**70))}"]
    if roll < 0.6:
        strings[rng.randrange(3)] = rng.choice(("v=fa1", "nonce=zz", "expires=x", "=", ""))
    if roll < 0.7:
        strings.append("extra=1")
    return ['"' + s.replace('"', "") + '"' for s in strings]


def _answer(qtype: dns.rdatatype.RdataType, records: list[str]) -> bytes:
    """The validated (AD) answer to our query for OWNER/qtype, with id 0."""
    q = dns.message.make_query(OWNER, qtype, want_dnssec=False, use_edns=0, payload=1232)
    q.id = 0
    r = dns.message.make_response(q)
    r.flags |= dns.flags.AD
    if records:
        r.answer.append(dns.rrset.from_text_list(OWNER, 5, "IN", qtype, records))
    return r.to_wire()


class _ScriptedResolver(adns.ValidatingResolver):
    """The real resolver with its socket replaced by the case's answers, id patched in."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1", 53, timeout=0.1, tries=1)
        self.wires: dict[int, bytes] = {}

    async def _udp(self, q: dns.message.Message) -> dns.message.Message:
        wire = self.wires[q.question[0].rdtype]
        return self._answer(q, q.id.to_bytes(2, "big") + wire[2:])


def _forged(key: PublishedKey, wire: bytes) -> str | None:
    """Why an accepted key should not have been, or None."""
    if key.name != NAME:
        return f"key for {key.name}"
    public = load_public_key(key.suite, key.spki)  # it loaded once, it must load again
    if spki_of(public) != key.spki:
        return "non-canonical SPKI accepted"
    want = Suite.P256 if isinstance(public, ec.EllipticCurvePublicKey) else Suite.X25519
    if key.suite is not want:
        return "suite does not match the key type"
    if not dns.message.from_wire(wire).flags & dns.flags.AD:
        return "answer without the AD bit accepted"
    return None


def run(tally: Tally, count: int, seed: int) -> None:
    rng = random.Random(seed)
    pool = _Pool(rng)
    store = KeyStore.from_private_bytes("ar.fuzz.flatarch.test", Suite.P256,
                                        hashlib.sha256(b"flatarch fuzz keys").digest())
    x_store = KeyStore.from_private_bytes("ar.fuzz.flatarch.test", Suite.X25519,
                                          hashlib.sha256(b"flatarch fuzz keys x").digest())
    scripted = _ScriptedResolver()
    resolver = adns.DnssecKeyResolver(scripted)
    loop = asyncio.new_event_loop()
    nonce = bytes(16)

    async def resolve_and_load() -> PublishedKey:
        key = await resolver.resolve(NAME)
        (store if key.suite is Suite.P256 else x_store).derive_msk(
            key, Role.AUTHENTICATOR, nonce, nonce)
        return key

    try:
        while tally.inputs < count:
            base = spki(rng, pool)
            for i in range(MUTANTS + 1):
                if tally.inputs >= count:
                    return
                key_bytes = base if i == 0 or rng.random() < 0.3 else mutate(rng, base)
                tlsa = [f"3 1 0 {key_bytes.hex()}" if key_bytes else "3 1 0 00"]
                if rng.random() < 0.1:
                    tlsa.append(rng.choice((f"3 1 0 {rng.choice(pool.valid).hex()}",
                                            "3 0 1 " + "ab" * 32, f"2 1 0 {key_bytes.hex()}0a")))
                wire = _answer(dns.rdatatype.TLSA, tlsa)
                txt = _answer(dns.rdatatype.TXT, _nonce_txt(rng))
                if rng.random() < 0.25:  # the DNS message itself, damaged
                    if rng.random() < 0.5:
                        wire = wire[:2] + mutate(rng, wire[2:])
                    else:
                        txt = txt[:2] + mutate(rng, txt[2:])
                scripted.wires = {dns.rdatatype.TLSA: wire, dns.rdatatype.TXT: txt}
                ok, key = tally.run(key_bytes, lambda: loop.run_until_complete(
                    resolve_and_load()), (AuthError,))
                if ok and key is not None:
                    why = _forged(key, wire)
                    if why is None:
                        tally.accepted += 1
                    else:
                        tally.forgery(key_bytes, why)
    finally:
        loop.close()
