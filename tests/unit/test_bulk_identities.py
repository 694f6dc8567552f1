"""Bulk identities for a population (issue 15): every MN's key made in one pass into one
private file, its records published in the home domain's one zone under one update rule,
so the DNS plane's zone count and key-tool runs do not grow with the population."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import dns.zone
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from agents import dns as adns
from agents.auth import KeyStore, Suite
from agents.auth.keys import spki_of
from topologies import model
from topologies.lab.dnsplane import DnsPlane, DnsPlaneError, fake_ds, fake_tsig
from topologies.model import HOME_TLD, Topology
from topologies.render import identities
from topologies.render.identities import Identity

ROOT = Path(__file__).resolve().parents[2]
BIND_TOOLS = ("dnssec-keygen", "dnssec-dsfromkey", "named-checkconf", "unbound-checkconf")


def topo(count: int, **pop: Any) -> Topology:
    d = copy.deepcopy(yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text()))
    d["addressing"]["pool_prefixlen"] = 20  # room for thousands of MNs per AR
    d["addressing"]["ipv6"]["pool_prefixlen"] = 52
    d["population"] = {"count": count, "seed": 1, **pop}
    return model.build(d)


def test_population_keys_are_one_private_file_and_bulk_identities(tmp_path: Path) -> None:
    t = topo(200, dhcp=0.25)
    idents = identities.provision(t, tmp_path)
    bulk = [i for i in idents if i.bulk]
    assert len(bulk) == 200 and all(i.role == "mn" for i in bulk)
    assert len({i.spki for i in bulk}) == 200  # a key pair each
    assert sum(i.address is None for i in bulk) == 50  # the DHCP ones have no A record yet
    path = identities.population_keys_path(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    keys = json.loads(path.read_text())
    assert set(keys) == {i.name for i in bulk}
    # No per-MN key file: the population runs in one process that reads the one file.
    assert not (tmp_path / "p0").exists()
    one = bulk[7]
    ks = KeyStore.from_pem(one.name, keys[one.name].encode())
    assert ks.spki == one.spki


def _plane(t: Topology, tmp: Path) -> DnsPlane:
    return DnsPlane(t, tmp / "dns", identities.provision(t, tmp))


def test_a_population_adds_records_not_zones(tmp_path: Path) -> None:
    small = _plane(topo(10), tmp_path / "a")
    big = _plane(topo(500), tmp_path / "b")
    assert big.zone_names == small.zone_names
    files = big.render_all({z: fake_ds(z) for z in big.zone_names},
                           {n: fake_tsig(n) for n in big.tsig_names})
    home = dns.zone.from_text(files[f"named/{HOME_TLD}.db"], relativize=False)
    names = {n.to_text() for n in home.nodes}
    assert "p499.example." in names and f"{adns.key_owner('p499.example')}." in names
    tlsa = home.get_rdataset(f"{adns.key_owner('p3.example')}.", "TLSA")
    assert tlsa is not None
    # One update rule for the whole population: each key its own name and below.
    assert 'grant "*" selfsub . A AAAA TLSA TXT;' in files["named.conf"]
    small_files = small.render_all({z: fake_ds(z) for z in small.zone_names},
                                   {n: fake_tsig(n) for n in small.tsig_names})
    assert files["named.conf"].count("grant ") == small_files["named.conf"].count("grant ")


def test_a_population_identity_must_be_one_label_under_the_home_domain() -> None:
    t = topo(1)
    spki = spki_of(ec.generate_private_key(ec.SECP256R1()).public_key())
    bad = Identity("a.p0.example", Suite.P256, spki, "mn", bulk=True)
    with pytest.raises(DnsPlaneError, match="must be <label>.example"):
        DnsPlane(t, Path("/nonexistent"), [bad])


@pytest.mark.skipif(any(shutil.which(t) is None for t in BIND_TOOLS),
                    reason="bind9 / unbound tools not installed")
def test_a_population_is_signed_with_the_same_key_tool_runs(tmp_path: Path) -> None:
    pl = _plane(topo(300, dhcp=0.1), tmp_path)
    pl.prepare()  # named-checkconf -z loads every zone, the population's records included
    keydirs = list((tmp_path / "dns" / "named" / "keys").iterdir())
    assert len(keydirs) == len(pl.zone_names)
