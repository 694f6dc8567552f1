"""Golden files for the baseline mode's templates (configs/baseline/), and the anchored plan's
invariants: one tunnel address and MAC per node, a pool apart from every lab range.

Regenerate after an intended change with
`UPDATE_GOLDEN=1 pytest tests/unit/test_baseline_render.py` and review the diff.
"""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest
import yaml

from tests.golden import check_golden
from topologies import model
from topologies.lab import anchored as baseline
from topologies.render import configs as render

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "baseline"
NODES = ["pgw", "ar1", "ar8", "inet", "core1", "mn1"]


def topo(name: str = "figure2.yaml") -> model.Topology:
    return model.load(ROOT / "topologies" / name)


RENDERED = baseline.render_baseline(topo())
CASES = [(n, k) for n in NODES for k in RENDERED[n]]
# A dual-stack plane (issue 18): tests/golden/baseline6.
RENDERED6 = baseline.render_baseline(topo(), ipv6=True)
CASES6 = [(n, k) for n in NODES for k in RENDERED6[n]]


@pytest.mark.parametrize("node, kind", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_golden(node: str, kind: str) -> None:
    text = RENDERED[node][kind]
    path = GOLDEN / node / f"{kind}.conf"
    check_golden(path, text)


@pytest.mark.parametrize("node, kind", CASES6, ids=[f"{n}-{k}" for n, k in CASES6])
def test_golden_dual_stack(node: str, kind: str) -> None:
    check_golden(GOLDEN.with_name("baseline6") / node / f"{kind}.conf", RENDERED6[node][kind])


def test_a_dual_stack_plane_gives_each_mn_its_own_anchored_prefix() -> None:
    t = topo()
    prefixes = {baseline.anchored_prefix6(t, mn) for mn in t.mobiles}
    assert len(prefixes) == len(t.mobiles)
    assert all(p.subnet_of(baseline.ANCHOR_POOL6) and p.prefixlen == 64 for p in prefixes)
    assert not any(p.overlaps(t.plan6.block("addressing.ipv6.managed").network)  # type: ignore[union-attr]
                   for p in prefixes)
    assert ("ar1", "ip6") in CASES6 and ("ar1", "ip6") not in CASES


def test_a_dual_stack_plane_needs_a_dual_stack_backbone() -> None:
    doc = yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text())
    for key in ("loopbacks", "links"):
        doc["addressing"]["ipv6"].pop(key)
    with pytest.raises(baseline.BaselineError, match="dual-stack backbone"):
        baseline.render_baseline(model.build(doc), ipv6=True)


def test_every_baseline_template_is_covered() -> None:
    templates = {p.name for p in (render.CONFIGS / "baseline").glob("*.j2")}
    assert templates == {"pgw.batch.j2", "pgw.bridge.j2", "enb.batch.j2", "enb.nft.j2",
                         "enb6.batch.j2", "routes.batch.j2", "ue.batch.j2"}
    kinds = {(n, k) for n, k in CASES}
    assert {("pgw", "ip"), ("pgw", "bridge"), ("ar1", "ip"), ("ar1", "nft"), ("inet", "ip"),
            ("core1", "ip"), ("mn1", "ip")} <= kinds


@pytest.mark.parametrize("name", ["figure2.yaml", "three_by_five.yaml"])
def test_plan_is_consistent(name: str) -> None:
    t = topo(name)
    nodes = [baseline.anchor_node(t).name, *(a.name for a in t.by_role(model.Role.AR))]
    assert len({baseline.tunnel_address(t, n) for n in nodes}) == len(nodes)
    assert len({baseline.tunnel_mac(t, n) for n in nodes}) == len(nodes)
    pool = baseline.ANCHOR_POOL
    assert not pool.overlaps(t.managed) and not pool.overlaps(t.cn_network)
    assert not pool.overlaps(t.plan.block("mn-link-local").network)
    assert not IPv4Network(str(baseline.TUNNEL["net"])).overlaps(
        IPv4Network(str(render.OVERLAY["net"])))
    addrs = {baseline.anchored_address(t, mn) for mn in t.mobiles}
    assert len(addrs) == len(t.mobiles) and all(a in pool for a in addrs)


def test_topology_without_anchor_is_refused() -> None:
    doc = (ROOT / "topologies" / "three_by_five.yaml").read_text()
    doc = "\n".join(ln for ln in doc.splitlines() if "pgw" not in ln)
    import yaml

    t = model.build(yaml.safe_load(doc))
    with pytest.raises(baseline.BaselineError, match="pgw"):
        baseline.render_baseline(t)
