"""Golden files for every lab template: rendered configs must match tests/golden/.

Regenerate after an intended change with `UPDATE_GOLDEN=1 pytest tests/unit/test_render_golden.py`
and review the diff. The nodes chosen cover every role and every template. tests/golden/lab is
Figure 2 on an IPv4 backbone (without addressing.ipv6's backbone blocks), tests/golden/lab6
the same nodes dual-stack (issue 18), so an IPv4-only topology is seen to render as before.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from tests.golden import check_golden
from topologies import model
from topologies.render import configs as render

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "lab"
GOLDEN6 = ROOT / "tests" / "golden" / "lab6"
NODES = ["core1", "agg1", "ar2", "ar3", "inet", "cn", "dns", "ha", "mn1", "mn3", "air"]
BGP_SECRET = bytes(range(32))  # a fixed test secret: a lab makes its own (render/bgpkeys.py)


def figure2(dual_stack: bool) -> model.Topology:
    doc = yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text())
    if not dual_stack:
        for key in ("loopbacks", "links"):
            del doc["addressing"]["ipv6"][key]
    else:
        doc["dhcp"]["ipv6"] = ["mn3"]  # its /64s by DHCPv6 (the dhclient hook's golden)
    return model.build(doc)


def rendered(node: str, dual_stack: bool = False) -> dict[str, str]:
    topo = figure2(dual_stack)
    rundir = Path("/run/flatarch/figure2") / node
    if node in topo.mobiles:
        out = render.render_mobile(topo, node, rundir)
    elif node == "air":
        out = {"ip": render.render_air(topo)}
    else:
        out = render.render_node(topo, topo.node(node), rundir, BGP_SECRET)
    # The agent's interpreter path depends on the checkout; golden files say PYTHON.
    return {k: v.replace(sys.executable, "PYTHON").replace(str(ROOT), "ROOT")
            for k, v in out.items()}


CASES = [(n, k) for n in NODES for k in rendered(n)]
CASES6 = [(n, k) for n in NODES for k in rendered(n, dual_stack=True)]


@pytest.mark.parametrize("node, kind", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_golden(node: str, kind: str) -> None:
    text = rendered(node)[kind]
    path = GOLDEN / node / f"{kind}.conf"
    check_golden(path, text)


@pytest.mark.parametrize("node, kind", CASES6, ids=[f"{n}-{k}" for n, k in CASES6])
def test_golden_dual_stack(node: str, kind: str) -> None:
    check_golden(GOLDEN6 / node / f"{kind}.conf", rendered(node, dual_stack=True)[kind])


def test_every_template_has_a_golden_file() -> None:
    used = {"ip/node.batch.j2", "ip/mobile.batch.j2", "ip/air.batch.j2", "frr/zebra.conf.j2",
            "frr/ospfd.conf.j2", "frr/ospf6d.conf.j2", "frr/bgpd.conf.j2", "exabgp/exabgp.conf.j2",
            "nft/ar.nft.j2",
            "ip/overlay.bridge.j2", "dhcp/udhcpc.hook.j2", "dhcp/dhclient6.hook.j2",
            "dnsmasq/outside.conf.j2"}
    # A population's batches: golden files in tests/unit/test_population_runtime.py.
    used |= {"ip/population.batch.j2", "ip/population-air.batch.j2", "ip/population6.batch.j2"}
    lab_templates = {
        str(p.relative_to(render.CONFIGS))
        for sub in ("ip", "frr", "exabgp", "nft", "dhcp", "dnsmasq")
        for p in (render.CONFIGS / sub).glob("*.j2")
    }
    assert lab_templates == used
    kinds = {k for _, k in CASES}
    assert kinds == {"ip", "zebra", "ospfd", "bgpd", "exabgp", "nft", "agent", "bridge",
                     "hook", "dnsmasq"}
    assert {k for _, k in CASES6} == kinds | {"ospf6d", "hook6"}


def test_agg_keeps_own_more_specifics_in_cluster() -> None:
    """Draft 2.1: the aggregation router filters only the more-specifics of its aggregates."""
    text = rendered("agg1")["bgpd"]
    assert "aggregate-address 10.64.0.0/16\n" in text  # no summary-only
    assert "OWN-MORE-SPECIFICS seq 5 permit 10.64.0.0/16 ge 17 le 32" in text
    assert "OWN-MORE-SPECIFICS seq 10 permit 10.67.0.0/16 ge 17 le 32" in text  # also k4
    # Host routes tagged with the escape community leave the cluster; others of our own
    # aggregates are denied; everything else (a borrowed address) goes up.
    assert ("route-map TO-CORE permit 5\n match community ESCAPE\nexit\n"
            "route-map TO-CORE deny 10\n match ip address prefix-list OWN-MORE-SPECIFICS\n"
            "exit\nroute-map TO-CORE permit 20\n") in text
    assert "bgp community-list standard ESCAPE seq 5 permit 65000:911" in text
    assert "route-reflector-client" in text
    assert text.count("addpath-tx-all-paths") == 4  # to each AR client, not to the cores


def test_strict_undefined_catches_missing_data() -> None:
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        render.render("frr/zebra.conf.j2", {"name": "x"})
