"""DNS plane without root: golden files for every DNS template, the zone layout, the
update-policy grants, input validation, and a real key generation + config dry-run.

Regenerate the golden files after an intended change with
`UPDATE_GOLDEN=1 pytest tests/unit/test_dns_plane.py` and review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from ipaddress import IPv4Address
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataset
import dns.zone
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from agents.auth.keys import Suite, spki_of
from tests.golden import check_golden
from topologies.lab.daemons import ConfigCheckError
from topologies.lab.dnsplane import (
    DnsPlane,
    DnsPlaneError,
    DsRecord,
    Named,
    Unbound,
    fake_ds,
    fake_tsig,
    render,
)
from topologies.model import load
from topologies.model.links import LinkAttributes
from topologies.render.configs import CONFIGS
from topologies.render.identities import Identity

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "dns"
RUNDIR = Path("/run/flatarch/figure2/dns")
BIND_TOOLS = ("dnssec-keygen", "dnssec-dsfromkey", "named", "named-checkconf", "unbound",
              "unbound-checkconf")


def p256(seed: int) -> bytes:
    return spki_of(ec.derive_private_key(seed, ec.SECP256R1()).public_key())


def x255(seed: int) -> bytes:
    return spki_of(x25519.X25519PrivateKey.from_private_bytes(bytes([seed]) * 32).public_key())


def identities() -> list[Identity]:
    """Fixed keys and nonces: golden output must not depend on randomness."""
    return [
        Identity("mn1.example", Suite.P256, p256(1001), "mn", address=IPv4Address("10.64.0.10")),
        Identity("mn2.example", Suite.X25519, x255(7), "mn"),
        Identity("ar1.isp.test", Suite.P256, p256(2001), "ar", nonce=bytes(range(16)),
                 nonce_expires=2_000_000_000),
        Identity("ar2.isp.test", Suite.X25519, x255(9), "ar", nonce=bytes(range(16, 32)),
                 nonce_expires=2_000_000_000),
        Identity("ha.isp.test", Suite.P256, p256(3001), "ha", nonce=bytes(16),
                 nonce_expires=2_000_000_000),
    ]


def plane(topology: str = "figure2", ids: list[Identity] | None = None,
          rundir: Path = RUNDIR) -> DnsPlane:
    topo = load(ROOT / "topologies" / f"{topology}.yaml")
    return DnsPlane(topo, rundir, identities() if ids is None else ids)


def rendered() -> dict[str, str]:
    pl = plane()
    return pl.render_all({z: fake_ds(z) for z in pl.zone_names},
                         {n: fake_tsig(n) for n in pl.tsig_names})


FILES = sorted(rendered())


@pytest.mark.parametrize("rel", FILES)
def test_golden(rel: str) -> None:
    text = rendered()[rel]
    path = GOLDEN / "figure2" / rel
    check_golden(path, text)


def test_every_dns_template_is_covered() -> None:
    templates = {str(p.relative_to(CONFIGS)) for sub in ("bind", "unbound")
                 for p in (CONFIGS / sub).glob("*.j2")}
    assert templates == {"bind/named.conf.j2", "bind/policy.conf.j2", "bind/zone.db.j2",
                         "unbound/unbound.conf.j2"}
    assert {"named.conf", "unbound.conf", "named/root.db"} <= set(FILES)


def test_rendering_is_deterministic() -> None:
    assert rendered() == rendered()


def test_templates_are_strict() -> None:
    with pytest.raises(DnsPlaneError, match="has no attribute .directory."):
        render("unbound/unbound.conf.j2", {"unbound": {}})
    zone = {"origin": "x.", "ttl": 1, "soa": {"ttl": 1, "mname": "a.", "rname": "b.",
                                              "serial": 1, "refresh": 1, "retry": 1,
                                              "expire": 1, "minimum": 1},
            "records": [{"owner": "x.", "ttl": 1, "type": "MX"}]}
    with pytest.raises(DnsPlaneError, match="cannot render record type MX"):
        render("bind/zone.db.j2", {"zone": zone})


def _zones() -> dict[str, dns.zone.Zone]:
    out = {}
    for rel, text in rendered().items():
        if rel.startswith("named/"):
            z = dns.zone.from_text(text, relativize=False, check_origin=True)
            assert z.origin is not None
            out[z.origin.to_text()] = z
    return out


def test_zone_files_parse_and_chain_to_the_root() -> None:
    pl = plane()
    zones = _zones()
    assert set(zones) == set(pl.zone_names)
    for name in pl.zone_names:
        if name == ".":
            continue
        parent = name.split(".", 1)[1] or "."
        while parent not in zones:
            parent = parent.split(".", 1)[1] or "."
        ds = zones[parent].get_rdataset(name, "DS")
        assert ds is not None, f"{parent} has no DS for {name}"
        assert ds[0].digest.hex().upper() == fake_ds(name).digest
    assert set(pl.zone_names) >= {".", "test.", "example.", "isp.test.", "10.in-addr.arpa.",
                                   "mn1.example.", "mn2.example."}
    pools = [z for z in pl.zone_names if z.count(".") == 5]
    assert sorted(pools) == sorted(
        f"{n.split('.')[2]}.{n.split('.')[1]}.10.in-addr.arpa."
        for n in (str(ar.pool.network_address) for ar in pl.topo.nodes.values() if ar.pool)
    )


def _get(zone: dns.zone.Zone, owner: str, rtype: str) -> dns.rdataset.Rdataset:
    rds = zone.get_rdataset(owner, rtype)
    assert rds is not None, f"{owner} {rtype} missing"
    return rds


def test_key_nonce_address_and_ptr_records() -> None:
    zones = _zones()
    isp, mn1, mn2 = zones["isp.test."], zones["mn1.example."], zones["mn2.example."]
    tlsa = _get(isp, "_flatarch.ar1.isp.test.", "TLSA")
    assert (tlsa[0].usage, tlsa[0].selector, tlsa[0].mtype) == (3, 1, 0)
    assert tlsa[0].cert == p256(2001) and tlsa.ttl == 5
    txt = _get(isp, "_flatarch.ar1.isp.test.", "TXT")
    assert txt[0].strings == (b"v=fa1", b"nonce=" + bytes(range(16)).hex().encode(),
                              b"expires=2000000000")
    # ARs without identity still get an A record (and a TSIG key for their pool).
    assert str(_get(isp, "ar5.isp.test.", "A")[0]) == "10.66.0.1"
    assert isp.get_rdataset("_flatarch.ar5.isp.test.", "TLSA") is None
    assert str(_get(isp, "ha.isp.test.", "A")[0]) == "10.253.0.6"
    assert str(_get(mn1, "mn1.example.", "A")[0]) == "10.64.0.10"
    assert _get(mn1, "_addrs.mn1.example.", "TXT")[0].strings == (b"v=fa1",
                                                                        b"10.64.0.10")
    assert mn2.get_rdataset("mn2.example.", "A") is None  # no address yet
    assert _get(mn2, "_flatarch.mn2.example.", "TLSA")[0].cert == x255(7)
    ptr = _get(zones["0.64.10.in-addr.arpa."], "1.0.64.10.in-addr.arpa.", "PTR")
    assert str(ptr[0]) == "ar1.isp.test."


def test_update_policy_grants_are_per_identity() -> None:
    conf = rendered()["named.conf"]
    block = conf.split('zone "mn1.example." {', 1)[1].split("};\n};", 1)[0]
    assert 'grant "mn1.example." name mn1.example. A AAAA;' in block
    assert 'grant "mn1.example." name _addrs.mn1.example. TXT;' in block
    assert 'grant "mn1.example." name _flatarch.mn1.example. TLSA TXT;' in block
    assert "mn2.example" not in block
    pool = conf.split('zone "0.64.10.in-addr.arpa." {', 1)[1].split("};\n};", 1)[0]
    assert 'grant "ar1.isp.test." zonesub PTR;' in pool and "ar2" not in pool
    isp = conf.split('zone "isp.test." {', 1)[1].split("};\n};", 1)[0]
    assert 'grant "ar1.isp.test." name _flatarch.ar1.isp.test. TLSA TXT;' in isp
    assert " A;" not in isp  # nobody rewrites AR/HA addresses
    # Static zones are inline-signed, dynamic ones signed in place; all under dnssec-policy.
    assert conf.count('dnssec-policy "flatarch";') == len(plane().zone_names)


def test_unbound_trusts_only_the_lab_root() -> None:
    conf = rendered()["unbound.conf"]
    root = fake_ds(".")
    assert f'trust-anchor: ". DS {root.key_tag} 13 2 {root.digest}"' in conf
    assert conf.count("trust-anchor") == 1 and "auto-trust-anchor" not in conf
    assert "interface: 10.253.0.2" in conf and "rrset-roundrobin: no" in conf
    assert 'local-zone: "test." nodefault' in conf


def test_names_addresses_and_keys() -> None:
    pl = plane()
    assert pl.identity_name("ar", "ar1") == "ar1.isp.test"
    assert pl.identity_name("ha", "ha") == "ha.isp.test"
    assert pl.identity_name("mn", "mn7") == "mn7.example"
    with pytest.raises(DnsPlaneError):
        pl.identity_name("cn", "cn")
    assert pl.resolver_address == IPv4Address("10.253.0.2") == pl.update_address
    assert (pl.resolver_port, pl.update_port) == (53, 5300)
    name, secret, alg = pl.tsig_key_for("ar7.isp.test.")
    assert (name, alg) == ("ar7.isp.test", "hmac-sha256") and len(secret) == 44
    assert pl.tsig_key_for("mn1.example")[1] != secret
    with pytest.raises(DnsPlaneError, match="no TSIG key"):
        pl.tsig_key_for("mn9.example")
    assert pl.zone_of("_flatarch.ar1.isp.test") == "isp.test."
    assert pl.zone_of("5.0.64.10.in-addr.arpa") == "0.64.10.in-addr.arpa."
    assert pl.zone_of("x.mn1.example") == "mn1.example."


@pytest.mark.parametrize("ident, match", [
    (Identity("ar1.example", Suite.P256, p256(1), "ar"), "must be <label>.isp.test"),
    (Identity("x.ar1.isp.test", Suite.P256, p256(1), "ar"), "must be <label>.isp.test"),
    (Identity("mn1.isp.test", Suite.P256, p256(1), "mn"), "under example"),
    (Identity("mn1.example", Suite.X25519, p256(1), "mn"), "does not match suite"),
    (Identity("mn1.example", Suite.P256, b"junk", "mn"), "not a DER"),
    (Identity("ar1.isp.test", Suite.P256, p256(1), "ar", nonce=bytes(16)), "go together"),
    (Identity("MN_1!.example", Suite.P256, p256(1), "mn"), "not a valid"),
])
def test_bad_identities_are_rejected(ident: Identity, match: str) -> None:
    with pytest.raises(DnsPlaneError, match=match):
        plane(ids=[ident])


def test_duplicate_identity_and_narrow_pools_are_rejected(tmp_path: Path) -> None:
    ident = identities()[0]
    with pytest.raises(DnsPlaneError, match="twice"):
        plane(ids=[ident, ident])
    inner = Identity("a.mn1.example", Suite.P256, p256(5), "mn")
    with pytest.raises(DnsPlaneError, match="inside mn mn1.example"):
        plane(ids=[ident, inner])
    doc = (ROOT / "topologies" / "figure2.yaml").read_text()
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text(doc.replace("pool_prefixlen: 24", "pool_prefixlen: 26")
                      .replace("  mobiles: [mn3]\n", ""))
    with pytest.raises(DnsPlaneError, match="/24 or shorter"):
        DnsPlane(load(narrow), RUNDIR, [])


def test_other_topology_and_wide_pools(tmp_path: Path) -> None:
    pl = plane("three_by_five", ids=[])
    assert sum(1 for z in pl.zone_names if z.count(".") == 5) == 15
    doc = (ROOT / "topologies" / "figure2.yaml").read_text()
    wide = tmp_path / "wide.yaml"
    wide.write_text(doc.replace("pool_prefixlen: 24", "pool_prefixlen: 23"))
    pl = DnsPlane(load(wide), RUNDIR, [])
    assert sum(1 for z in pl.zone_names if z.count(".") == 5) == 16  # two /24 zones per AR


def test_model_needs_every_ds() -> None:
    pl = plane()
    with pytest.raises(DnsPlaneError, match="no DS"):
        pl.model({".": DsRecord(1, 13, 2, "AA")}, {})
    with pytest.raises(DnsPlaneError, match="prepare"):
        pl.daemons()


@pytest.mark.skipif(any(shutil.which(t) is None for t in BIND_TOOLS),
                    reason="bind9 / unbound tools not installed")
def test_prepare_generates_keys_and_passes_dry_runs(tmp_path: Path) -> None:
    pl = plane(rundir=tmp_path / "dns")
    pl.prepare()
    named, unbound = pl.daemons()
    assert isinstance(named, Named) and isinstance(unbound, Unbound)
    assert set(named.signed_zones) == set(pl.zone_names)
    # The trust anchor is the DS of the root KSK BIND will adopt.
    keydir = tmp_path / "dns" / "named" / "keys" / "root"
    ksk_text = next(p.read_text() for p in keydir.glob("K.+013+*.key")
                    if " 257 3 13 " in p.read_text())
    line = next(ln for ln in ksk_text.splitlines() if not ln.startswith(";"))
    dnskey = dns.rdata.from_text("IN", "DNSKEY", line.split("DNSKEY", 1)[1])
    ds = dns.dnssec.make_ds(dns.name.root, dnskey, "SHA256")
    assert ds.digest.hex().upper() == pl.trust_anchor.digest
    assert pl.trust_anchor.digest in (tmp_path / "dns" / "unbound.conf").read_text()
    # Agents' TSIG key files are private.
    path = pl.tsig_path("ar1.isp.test")
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["secret"] == pl.tsig_key_for("ar1.isp.test")[1]
    # A broken config is caught by the daemon's own checker.
    unbound.config += "server:\n    no-such-option: yes\n"
    unbound.write()
    with pytest.raises(ConfigCheckError):
        unbound.dry_run()
    named.config += "zone broken {"
    named.write()
    with pytest.raises(ConfigCheckError):
        named.dry_run()


def test_a_home_distance_moves_only_the_home_zones_stubs() -> None:
    topo = load(ROOT / "topologies" / "figure2.yaml")
    far = dataclasses.replace(topo, home_link=LinkAttributes(delay_ms=20.0))
    pl = DnsPlane(far, RUNDIR, identities())
    conf = pl.render_all({z: fake_ds(z) for z in pl.zone_names},
                         {n: fake_tsig(n) for n in pl.tsig_names})["unbound.conf"]
    # The home zones are asked where the delay line holds the flow; the rest stays local.
    assert 'name: "mn1.example."\n    stub-addr: 10.253.0.2@5300' in conf
    assert 'name: "isp.test."\n    stub-addr: 127.0.0.1@5300' in conf
    assert 'name: "example."\n    stub-addr: 127.0.0.1@5300' in conf
    assert "10.253.0.2@5300" not in rendered()["unbound.conf"]  # no distance: no change
