"""The population runtime without root (issue 15): its two iproute2 batches (golden files),
the agent's configuration and control commands (hostile input answered, never raised), and
the scenario's pure parts: the derived topology, the prober's lines by MN, host-route counts.
"""

from __future__ import annotations

import asyncio
import copy
import json
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.population import Population, PopulationConfig
from tests.golden import check_golden
from topologies import model
from topologies.analysis.measure import RouteEvent
from topologies.lab import procstat
from topologies.model import Topology, TopologyError
from topologies.render import identities
from topologies.render import population as render_population
from topologies.scenarios.population import derived_topology, host_route_counts, split_probe

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "lab" / "population"
FIGURE2 = yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text())


def topo(count: int, **pop: Any) -> Topology:
    d = copy.deepcopy(FIGURE2)
    d["population"] = {"count": count, "seed": 1, **pop}
    return model.build(d)


@pytest.mark.parametrize("kind", ["air", "population"])
def test_batches_golden(kind: str) -> None:
    text = render_population.render_batches(topo(3), 4242)[kind]
    check_golden(GOLDEN / f"{kind}.batch", text)


def test_every_mn_has_its_own_port_address_and_table() -> None:
    data = render_population.batch_data(topo(50), 1)
    ms = data["members"]
    for key in ("ifname", "port", "address", "table"):
        assert len({m[key] for m in ms}) == 50
    assert all(len(m["ifname"]) <= 15 and len(m["port"]) <= 15 for m in ms)


def test_a_dhcp_member_is_refused_until_the_dhcp_path_is_wired() -> None:
    with pytest.raises(TopologyError, match="uses DHCP"):
        render_population.members(topo(10, dhcp=0.5))


def _population(tmp: Path, count: int = 4) -> Population:
    t = topo(count)
    ids = identities.provision(t, tmp)
    ar_keys = {i.name: {"suite": int(i.suite), "spki": i.spki.hex(), "nonce": "",
                        "nonce_expires": 0} for i in ids if i.role == "ar"}
    (tmp / "ar_keys.json").write_text(json.dumps(ar_keys))
    cfg = render_population.agent_config(t, tmp, tmp / "ar_keys.json")
    again = PopulationConfig.from_json(json.loads(cfg.to_json()))
    assert again == cfg
    return Population(cfg)


HOSTILE: list[Any] = [
    {}, {"cmd": "nope"}, {"cmd": "attach"}, {"cmd": "attach", "mn": "p0"},
    {"cmd": "attach", "mn": "p0", "ar": "core1"}, {"cmd": "attach", "mn": "zz", "ar": "ar1"},
    {"cmd": "attach", "mn": ["p0"], "ar": {"x": 1}}, {"cmd": "attach_all", "deadline_s": "1"},
    {"cmd": "attach_all", "deadline_s": True}, {"cmd": 7},
]


def test_hostile_commands_are_answered_not_raised(tmp_path: Path) -> None:
    pop = _population(tmp_path)

    async def run() -> list[dict[str, Any]]:
        return [await pop.command(req) for req in HOSTILE]

    answers = asyncio.run(run())
    assert all(a["ok"] is False and a.get("error") for a in answers)
    status = asyncio.run(pop.command({"cmd": "status"}))
    assert status["ok"] and status["mobiles"] == 4 and status["auth_ok"] == 0


def test_a_missing_key_is_a_configuration_error(tmp_path: Path) -> None:
    pop = _population(tmp_path)
    keys = json.loads(pop.config.keys.read_text())
    keys.pop(next(iter(keys)))
    pop.config.keys.write_text(json.dumps(keys))
    with pytest.raises(ValueError, match="no key for"):
        Population(pop.config)


def test_the_derived_topology_holds_the_population() -> None:
    for n in (100, 1000, 3000):
        t = model.build(derived_topology(FIGURE2, n, seed=2))
        assert len(t.population_nodes) == n
        assert all(m.address is not None for m in t.population_nodes.values())
    assert FIGURE2.get("population") is None  # the source document is not changed


def test_probe_lines_are_split_by_source() -> None:
    text = ("PROBE 10.64.0.20 every 200.0 ms\n"
            "[1.000000] 64 bytes from 10.64.0.20: icmp_seq=1 ttl=60 time=1.0 ms\n"
            "[1.100000] 64 bytes from 10.64.1.20: icmp_seq=1 ttl=60 time=1.0 ms\n"
            "garbage\n[1.200000] 64 bytes from 10.64.0.20: icmp_seq=2 ttl=60 time=1.0 ms\n")
    groups = split_probe(text)
    assert set(groups) == {"10.64.0.20", "10.64.1.20"}
    assert groups["10.64.0.20"].count("icmp_seq") == 2


def _ev(ts: float, node: str, kind: str, dst: str, hop: str = "10.254.0.1") -> RouteEvent:
    return RouteEvent(ts, node, kind, IPv4Network(dst), 20, 186, frozenset({hop}))  # type: ignore[arg-type]


def test_host_routes_peak_and_end_skip_access_routes() -> None:
    events = [_ev(1, "agg1", "add", "10.64.0.5/32"), _ev(2, "agg1", "add", "10.64.0.6/32"),
              _ev(3, "agg1", "del", "10.64.0.5/32"),
              _ev(2, "ar2", "add", "10.64.0.6/32", "dev:ar2-acc"),
              _ev(2, "agg1", "add", "10.64.0.0/24")]
    peak, end = host_route_counts(events, 0.0, 10.0)
    assert peak == {"agg1": 2, "ar2": 0} and end == {"agg1": 1, "ar2": 0}


def test_a_move_abandons_the_auth_still_in_flight_to_the_cell_left(tmp_path: Path) -> None:
    pop = _population(tmp_path)
    started: list[str] = []

    async def slow(name: str, ar: str) -> dict[str, Any]:
        started.append(ar)
        await asyncio.sleep(0 if ar == "ar3" else 10)
        return {"ok": True, "mn": name, "ar": ar}

    pop.authenticate = slow  # type: ignore[method-assign]

    async def run() -> list[dict[str, Any]]:
        first = asyncio.ensure_future(pop.attach("p0", "ar2"))
        await asyncio.sleep(0.01)
        second = await pop.attach("p0", "ar3")
        return [await first, second]

    first, second = asyncio.run(asyncio.wait_for(run(), 5))
    assert started == ["ar2", "ar3"]
    assert first["superseded"] and not first["ok"] and second == {"ok": True, "mn": "p0",
                                                                    "ar": "ar3"}


def test_process_samples_summarise_by_kind() -> None:
    rows = [{"t": 1, "kind": "bgpd_agg", "node": "agg1", "cpu_pct": 10.0, "rss_mb": 20.0},
            {"t": 2, "kind": "bgpd_agg", "node": "agg1", "cpu_pct": 30.0, "rss_mb": 22.0},
            {"t": 1, "kind": "bgpd_agg", "node": "agg2", "cpu_pct": 5.0, "rss_mb": 25.0}]
    got = procstat.by_kind(rows)
    assert got == {"bgpd_agg": {"cpu_pct": 20.0, "cpu_pct_peak": 30.0, "rss_mb": 25.0}}
    assert procstat.backlog_drops() >= 0
