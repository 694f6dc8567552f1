"""A population's records in its home domain's one zone (issue 15), on the dual-stack
figure2: each MN's AAAA at its own name, never all at the apex (BIND refuses an RRset of
more than 100 records, so the zone did not load and a 1,000-MN lab never came up)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

from topologies import model
from topologies.lab.dnsplane import DnsPlane, fake_ds, fake_tsig
from topologies.render.identities import provision
from topologies.scenarios.population import derived_topology

ROOT = Path(__file__).resolve().parents[2]
BIND_MAX_RECORDS_PER_TYPE = 100  # BIND 9.18.28 and later, by default


def test_every_population_mn_has_its_aaaa_at_its_own_name(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text())
    path = tmp_path / "population.yaml"
    path.write_text(yaml.safe_dump(derived_topology(doc, 150, seed=1), sort_keys=False))
    topo = model.load(path)
    assert topo.backbone6 is not None  # the case that broke: a dual-stack lab
    plane = DnsPlane(topo, tmp_path / "dns", provision(topo, tmp_path))
    files = plane.render_all({z: fake_ds(z) for z in plane.zone_names},
                             {n: fake_tsig(n) for n in plane.tsig_names})
    rrsets: Counter[tuple[str, str]] = Counter()
    aaaa: dict[str, int] = {}
    for line in files["named/example.db"].splitlines():
        f = line.split()
        if len(f) >= 5 and f[2] == "IN":
            rrsets[(f[0], f[3])] += 1
            if f[3] == "AAAA":
                aaaa[f[0]] = aaaa.get(f[0], 0) + 1
    members = {f"{n}.example." for n in topo.population_nodes}
    assert members <= set(aaaa) and all(n == 1 for n in aaaa.values())
    assert "example." not in aaaa
    assert max(rrsets.values()) <= BIND_MAX_RECORDS_PER_TYPE
