"""A population with DHCP members and rotation, with the real daemons (issue 15): 40 MNs in
one process, half of them leasing through their own udhcpc clients, a quarter taking new
addresses at the AR they are on and releasing the old ones, walked at 5 handoffs a second.
No rotation may fail, no handoff may fail but the one race the DNS design has, and no /32
may outlive its lease or its MN's return."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.addresses import ADDRESS_TTL
from tests.integration.labs import population_source, redirect_lab
from topologies.lab.lab import Lab
from topologies.scenarios.base import read_jsonl
from topologies.scenarios.population import (
    HANDOFFS,
    LEASES,
    PopulationScenario,
)

pytestmark = pytest.mark.root
MOBILES, DHCP, ROTATE = 40, 0.5, 0.25
# A handoff within the A record's TTL of a rotation meets the new AR's resolver still
# holding the old address set: the claim of the new address is refused (docs/scale.md).
CACHED = "not re-routed: not among the validated addresses of <>"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return population_source(tmp_path_factory.mktemp("population-dhcp"), MOBILES, seed=7, dhcp=DHCP)


@pytest.fixture(scope="module")
def lab(source: Path) -> Iterator[Lab]:
    yield from redirect_lab(source)


@pytest.fixture(scope="module")
def run(lab: Lab, source: Path, tmp_path_factory: pytest.TempPathFactory
        ) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("run")
    sc = PopulationScenario(lab, rate=5.0, duration_s=20.0, seed=7, dhcp=DHCP, rotate=ROTATE,
                            probe_interval_s=0.5, out_dir=out)
    sc.topology_file = source
    return sc.run(), out


def test_the_dhcp_members_lease_and_rotate(run: tuple[dict[str, Any], Path]) -> None:
    result, _ = run
    dhcp = result["dhcp"]
    assert dhcp["members"] == MOBILES * DHCP and result["up_s"] is not None
    rot = dhcp["rotations"]
    assert rot["ok"] >= 1 and rot["failed"] == 0, rot
    assert rot["released"] == rot["ok"]  # nothing holds the old address: it goes
    assert dhcp["addresses_held_at_end"] >= dhcp["members"]
    assert result["interruption_samples"] > 0


def test_every_handoff_succeeds_but_within_a_ttl_of_a_rotation(
        run: tuple[dict[str, Any], Path]) -> None:
    result, out = run
    h = result["handoffs"]
    assert h["attempted"] >= 40, h
    assert set(h["failures"]) <= {CACHED}, h["failures"]
    rows = read_jsonl(out / HANDOFFS)
    done: dict[str, list[float]] = {}
    for r in rows:
        if r.get("kind") == "rotate" and r.get("ok"):
            done.setdefault(r["mn"], []).append(float(r["t_bound"]))
    for r in rows:
        if r.get("not_rerouted"):
            t = float(r["t_auth_sent"])
            assert any(0 <= t - b <= ADDRESS_TTL + 1 for b in done.get(r["mn"], [])), r


def test_no_host_route_outlives_its_lease(lab: Lab, run: tuple[dict[str, Any], Path]) -> None:
    result, out = run
    assert result["stale_host_routes"] == {}
    leases = read_jsonl(out / LEASES)
    ever = {a for rec in leases for a in rec["addresses"]}
    held = {a for rec in json.loads((out / "run.json").read_text())["measured"][
        "leased_at_end"].values() for a in rec}
    gone = ever - held
    assert gone, "no lease ended in the run"
    for r in lab.topo.routers:
        routes = json.loads(lab.execs[r.name].check(["ip", "-j", "-4", "route", "show"]))
        host = {x["dst"] for x in routes if "/" not in x["dst"]
                and not str(x.get("dev", "")).endswith("-acc")}
        assert not host & gone, (r.name, sorted(host & gone))


def test_no_dhcp_client_outlives_the_population(run: tuple[dict[str, Any], Path]) -> None:
    left = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"udhcpc" in argv and any(b"/population/dhcp/" in a for a in argv):
                left.append(proc.name)
    assert not left
