"""The Kathará export: lab.conf has a device per node and a collision domain per link and
per access link, each startup starts its daemons in the order the lab's declarations give,
and every export template has a golden file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.golden import check_golden
from topologies import model
from topologies.export import kathara
from topologies.export.katharalab import Routing
from topologies.export.plan import (
    MODES_FILE,
    ExportError,
    build_plan,
    check_staged,
    relink_steps,
    rundir,
)
from topologies.export.stage import _copy_tree
from topologies.lab.daemons import start_order
from topologies.lab.lab import DAEMON_CLASSES
from topologies.render.configs import CONFIGS, cells, render

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "export"
TOPO = model.load(ROOT / "topologies" / "figure2.yaml")
PLAN = build_plan(TOPO)


def lab_conf() -> str:
    return render("export/kathara-lab.conf.j2", kathara.lab_conf_data(TOPO, PLAN))


def startup(node: str) -> str:
    return render("export/kathara.startup.j2", kathara.startup_data(TOPO, PLAN.nodes[node]))


def test_lab_conf_has_a_device_per_node_and_a_domain_per_link_and_cell() -> None:
    entries = re.findall(r'^(\w+)\[(\d+)\]="([^"]+)"$', lab_conf(), re.M)
    devices = {d for d, _, _ in entries}
    assert devices == {*TOPO.nodes, *TOPO.mobiles}
    legend = dict(re.findall(r"^#   (\w{4})  (\S+)$", lab_conf(), re.M))
    assert all(len(short) <= 4 for short in legend)  # Megalos's limit
    domains: dict[str, set[str]] = {}
    for dev, _, cd in entries:
        domains.setdefault(legend[cd], set()).add(dev)
    links = {frozenset((lk.a, lk.b)) for lk in TOPO.links}
    p2p = {frozenset(m) for cd, m in domains.items() if not cd.startswith("acc-")}
    assert p2p == links
    for cell in cells(TOPO):
        homed = {mn for mn in TOPO.mobiles if TOPO.mobile(mn).home == cell}
        assert domains[f"acc-{cell}"] == {cell, *homed}


def test_interfaces_are_renamed_in_lab_conf_order() -> None:
    text = startup("ar1")
    ports = re.findall(r'^ar1\[(\d+)\]="([^"]+)"$', lab_conf(), re.M)
    renames = re.findall(r"^rename (\d+) (\S+)$", text, re.M)
    assert [i for i, _ in ports] == [k for k, _ in renames]
    assert [n for _, n in renames] == [*(i.name for i in TOPO.node("ar1").interfaces), "ar1-acc"]


@pytest.mark.parametrize("node", ["core1", "agg1", "ar1", "inet", "dns", "ha", "mn1"])
def test_startup_follows_the_declared_order(node: str) -> None:
    kinds = PLAN.nodes[node].kinds
    assert kinds == start_order(kinds, DAEMON_CLASSES)
    text = startup(node)
    started = [k for k in kinds if DAEMON_CLASSES[k].spawned_by is None]
    at = [text.index(f"# {k}: ") for k in started]
    assert at == sorted(at) and len(started) == len(kinds) - ("agent" in kinds)
    assert text.index("ip -batch") < min(at, default=len(text))


def test_a_lab_daemon_the_export_does_not_start_is_refused() -> None:
    staged = {n: list(e.kinds) for n, e in PLAN.nodes.items() if e.kinds}
    check_staged(PLAN, staged)
    staged["ar1"].append("delayline")
    with pytest.raises(ExportError, match="ar1"):
        check_staged(PLAN, staged)


def test_the_image_recipe_names_the_nodes_packages_and_no_host_only_one() -> None:
    text = render("export/build-image.sh.j2", kathara.image_data(PLAN))
    assert "debootstrap --variant=minbase bookworm" in text
    assert "CMD [\"/bin/bash\"]" in text
    for deb in ("frr", "bind9", "unbound", "nftables"):
        assert f"    {deb} \\\n" in text
    assert "mininet" not in text and "matplotlib" not in text


GOLDENS = {
    "lab.conf": lab_conf,
    "ar1.startup": lambda: startup("ar1"),
    "dns.startup": lambda: startup("dns"),
    "mn1.startup": lambda: startup("mn1"),
    "ha.startup": lambda: startup("ha"),
    "build-image.sh": lambda: render("export/build-image.sh.j2", kathara.image_data(PLAN)),
}


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_golden(name: str) -> None:
    check_golden(GOLDEN / "kathara" / name, GOLDENS[name]())


def test_every_export_template_has_a_golden_file() -> None:
    used = {"export/kathara-lab.conf.j2", "export/kathara.startup.j2",
            "export/build-image.sh.j2", "export/clab.yml.j2"}
    assert {str(p.relative_to(CONFIGS)) for p in (CONFIGS / "export").glob("*.j2")} == used
    assert (GOLDEN / "figure2.clab.yml").exists()


def test_a_relink_renames_the_new_interface_and_restores_the_mns_routes() -> None:
    steps = relink_steps(TOPO, "mn1")
    assert "name mn1-eth0" in steps[0].command and "net[0-9]" in steps[0].command
    assert steps[1].command == "ip -batch /run/flatarch/figure2/mn1/ip.batch"
    assert steps[1] in [s for s in PLAN.nodes["mn1"].steps]  # the same batch as at start


def test_routing_is_converged_only_with_every_session_and_adjacency() -> None:
    assert Routing(40, 40, 56, 56).converged
    assert not Routing(39, 40, 56, 56).converged
    assert not Routing(40, 40, 55, 56).converged
    assert not Routing(0, 0, 0, 0).converged  # nothing answered yet


def test_every_device_states_its_sysctls_in_lab_conf() -> None:
    text = lab_conf()
    for dev in ("ar1", "cn", "mn1"):
        assert f'{dev}[sysctl]="net.ipv4.ip_local_reserved_ports=' in text
    assert 'cn[sysctl]="net.ipv4.ip_forward=0"' in text  # Kathará would make it a router
    assert 'ar1[sysctl]="net.ipv4.ip_forward=1"' in text


def test_the_image_recipe_is_lean_and_keeps_nothing_outside_its_directory() -> None:
    text = render("export/build-image.sh.j2", kathara.image_data(PLAN))
    assert subprocess.run(["sh", "-n"], input=text, text=True).returncode == 0
    # Both pips (the checkout's wheel build, the chroot's install) without their caches.
    assert text.count("pip\" wheel -q --no-cache-dir") == 1
    assert text.count("pip install -q --no-cache-dir --no-index") == 1
    assert "trap cleanup EXIT" in text and 'rm -rf "$DIR"' in text
    for tool in ("iperf3", "tcpdump", "traceroute", "kmod", "isc-dhcp-client"):
        assert f"    {tool} \\\n" not in text  # our engine's scenarios' tools, not a node's
    assert "path-exclude /usr/share/%s/*" in text


def test_staging_records_the_modes_that_kathara_drops(tmp_path: Path) -> None:
    """Kathará copies a device's files with mode 0644 (mn3's DHCP hook could not run, so it
    never got its address on Kathará): the export lists every other mode for the startup."""
    src, dst = tmp_path / "stage" / "mn3", tmp_path / "out"
    (src / "keys").mkdir(parents=True)
    for name, mode in (("udhcpc.hook", 0o755), ("keys/identity.pem", 0o600),
                       ("agent.json", 0o644)):
        (src / name).write_text("x")
        (src / name).chmod(mode)
    _copy_tree(src, dst, tmp_path / "stage", TOPO, rundir(TOPO, "mn3"))
    where = rundir(TOPO, "mn3")
    assert (dst / MODES_FILE).read_text().splitlines() == [
        f"600 {where}/keys/identity.pem", f"755 {where}/udhcpc.hook"]
    assert f"done < {where}/{MODES_FILE}" in startup("mn3")
