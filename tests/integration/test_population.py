"""A small population with the real daemons (issue 15): 50 MNs in one process, each with its
own key, address and radio port, walked at 10 handoffs a second for 10 s; every handoff a
real L2 move and a real AUTH. The run is dual-stack (issue 18): each AUTH claims the MN's /32
and its /64. No handoff may fail and no /32 or /64 may outlive its MN's return."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.labs import population_source, redirect_lab
from topologies.lab.lab import Lab
from topologies.scenarios.population import PopulationScenario

pytestmark = pytest.mark.root
MOBILES = 50


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return population_source(tmp_path_factory.mktemp("population"), MOBILES, seed=5)


@pytest.fixture(scope="module")
def lab(source: Path) -> Iterator[Lab]:
    yield from redirect_lab(source)


@pytest.fixture(scope="module")
def result(lab: Lab, source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    sc = PopulationScenario(lab, rate=10.0, duration_s=10.0, seed=5,
                            out_dir=tmp_path_factory.mktemp("run"), families=["ipv4", "ipv6"])
    sc.topology_file = source
    return sc.run()


def test_every_handoff_succeeds(result: dict[str, Any]) -> None:
    h = result["handoffs"]
    assert result["mobiles"] == MOBILES and result["up_s"] is not None
    assert h["attempted"] >= 50, h  # the walk's schedule at 10/s over 10 s
    assert h["failed"] == 0 and h["ok"] == h["attempted"], h["failures"]
    assert result["reroute_ms"]["p50"] is not None and result["auth_ms"]["p99"] is not None
    assert result["interruption_samples"] > 0
    # The same handoffs, read off the /64s and the CN's IPv6 prober.
    six = result["ipv6"]
    assert result["families"] == ["ipv4", "ipv6"] and six["family"] == "ipv6"
    assert six["reroute_ms"]["p50"] is not None and six["interruption_samples"] > 0


def test_no_stale_host_route_at_the_end(lab: Lab, result: dict[str, Any]) -> None:
    assert result["stale_host_routes"] == {} and result["ipv6"]["stale_host_routes"] == {}
    # And in the routers themselves: an MN back home has no /32 and no /64 off an access
    # link anywhere.
    assert lab.radio is not None
    home = [m for m in lab.topo.population_nodes.values()
            if lab.radio.where.get(m.name) == m.home]
    assert home
    for r in lab.topo.routers:
        for family, theirs in (("-4", {str(m.address) for m in home}),
                               ("-6", {str(m.prefix6) for m in home})):
            routes = json.loads(lab.execs[r.name].check(["ip", "-j", family, "route", "show"]))
            held = {x["dst"] for x in routes if not str(x.get("dev", "")).endswith("-acc")}
            assert not held & theirs, (r.name, family)


def test_host_routes_grew_with_the_moves(result: dict[str, Any]) -> None:
    peak = result["host_routes"]["peak"]
    assert any(n > 0 for n in peak.values())
    assert any(n > 0 for n in result["ipv6"]["host_routes"]["peak"].values())
    assert set(result["cpu_pct"]) >= {"population", "bgpd_agg", "exabgp", "ar_agent"}
