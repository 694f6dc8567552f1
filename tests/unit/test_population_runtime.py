"""The population runtime without root (issue 15): its two iproute2 batches (golden files),
the agent's configuration and control commands (hostile input answered, never raised), and
the scenario's pure parts: the derived topology, the prober's lines by MN, host-route counts.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents import population as population_agent
from agents.population import Population, PopulationConfig
from tests.golden import check_golden
from topologies import model
from topologies.analysis.measure import RouteEvent
from topologies.lab import procstat
from topologies.lab.popnet import NeighbourLimits
from topologies.model import Topology, TopologyError
from topologies.render import identities
from topologies.render import population as render_population
from topologies.scenarios.population import (
    PopulationScenario,
    derived_topology,
    host_route_counts,
    split_probe,
    summarise,
)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "lab" / "population"
FIGURE2 = yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text())


def topo(count: int, **pop: Any) -> Topology:
    d = copy.deepcopy(FIGURE2)
    d["population"] = {"count": count, "seed": 1, **pop}
    return model.build(d)


@pytest.mark.parametrize("kind", ["air", "population", "population6"])
def test_batches_golden(kind: str) -> None:
    text = render_population.render_batches(topo(3), 4242, ipv6=True)[kind]
    check_golden(GOLDEN / f"{kind}.batch", text)


def test_an_ipv4_run_has_no_ipv6_half() -> None:
    files = render_population.render_batches(topo(3), 4242)
    assert set(files) == {"air", "population"}
    assert all(m.prefix6 is None for m in render_population.members(topo(3)))


def test_a_dual_stack_member_holds_its_planned_prefix() -> None:
    t = topo(40)
    ms = render_population.members(t, ipv6=True)
    assert [m.prefix6 for m in ms] == [t.population_nodes[m.name].prefix6 for m in ms]
    assert len({m.prefix6 for m in ms}) == 40 and all(
        m.prefix6 is not None and m.prefix6.prefixlen == 64 for m in ms)
    data = render_population.batch_data(t, 1, ipv6=True)
    assert all(d["address6"] == str(m.prefix6.network_address + 1)  # type: ignore[union-attr]
               for d, m in zip(data["members"], ms, strict=True))


def test_ipv6_without_a_dual_stack_backbone_is_refused() -> None:
    d = copy.deepcopy(FIGURE2)
    for key in ("loopbacks", "links"):
        d["addressing"]["ipv6"].pop(key)
    d["population"] = {"count": 3, "seed": 1}
    with pytest.raises(TopologyError, match="dual-stack backbone"):
        render_population.members(model.build(d), ipv6=True)


def test_every_mn_has_its_own_port_address_and_table() -> None:
    data = render_population.batch_data(topo(50), 1)
    ms = data["members"]
    for key in ("ifname", "port", "address", "table"):
        assert len({m[key] for m in ms}) == 50
    assert all(len(m["ifname"]) <= 15 and len(m["port"]) <= 15 for m in ms)


def _population(tmp: Path, count: int = 4, ipv6: bool = False) -> Population:
    t = topo(count)
    ids = identities.provision(t, tmp)
    ar_keys = {i.name: {"suite": int(i.suite), "spki": i.spki.hex(), "nonce": "",
                        "nonce_expires": 0} for i in ids if i.role == "ar"}
    (tmp / "ar_keys.json").write_text(json.dumps(ar_keys))
    cfg = render_population.agent_config(t, tmp, tmp / "ar_keys.json", ipv6)
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
    assert got == {"bgpd_agg": {"cpu_pct": 20.0, "cpu_pct_peak": 30.0, "rss_mb": 25.0,
                                "cpu_pct_all": 25.0}}  # agg1's mean and agg2's
    assert procstat.backlog_drops() >= 0


def _ev6(ts: float, node: str, kind: str, dst: object, hop: str = "fe80::1") -> RouteEvent:
    net = IPv6Network(dst) if isinstance(dst, IPv6Network) else IPv4Network(dst)  # type: ignore[arg-type]
    return RouteEvent(ts, node, kind, net, 20, 186, frozenset({hop}))  # type: ignore[arg-type]


def test_a_dual_stack_run_gives_each_family_its_reroute_interruption_and_stale_routes() -> None:
    t = topo(3)
    p0, p1 = t.population_nodes["p0"], t.population_nodes["p1"]
    assert p0.address is not None and p0.prefix6 is not None and p1.prefix6 is not None
    a6 = p0.prefix6.network_address + 1
    rows = [{"mn": "p0", "from": p0.home, "to": "ar2", "ok": True, "t_attach": 10.0,
             "t_auth_sent": 10.01, "auth_ms": 5.0, "not_rerouted": []}]
    events = [_ev6(10.11, "agg1", "add", f"{p0.address}/32"),
              _ev6(10.21, "agg1", "add", p0.prefix6),
              _ev6(10.05, "agg1", "add", p1.prefix6)]  # p1 ends at home: a stale /64
    v4 = "".join(f"[{10 + k * 0.2:.6f}] 64 bytes from {p0.address}: icmp_seq={k} ttl=60 "
                 "time=1 ms\n" for k in range(1, 20))
    v6 = "".join(f"[{10 + k * 0.2:.6f}] 64 bytes from {a6}: icmp_seq={k} ttl=60 time=1 ms\n"
                 for k in range(1, 20) if k not in (1, 2))
    params = {"mobiles": 3, "families": ["ipv4", "ipv6"], "probe_interval_s": 0.2,
              "rate_per_s": 1.0, "duration_s": 5.0, "model": "walk"}
    measured = {"t_start": 9.0, "where": {"p0": "ar2"}, "up": {"up_s": 1.0}}
    got = summarise(t, params, measured, rows, events, {"ipv4": v4, "ipv6": v6}, [], {}, 14.0)
    six = got["ipv6"]
    assert got["family"] == "ipv4" and six["family"] == "ipv6"
    assert got["reroute_ms"]["p50"] == pytest.approx(100.0, abs=0.5)
    assert six["reroute_ms"]["p50"] == pytest.approx(200.0, abs=0.5)
    assert six["interruption_ms"]["p50"] > got["interruption_ms"]["p50"]
    assert got["stale_host_routes"] == {} and six["stale_host_routes"] == {"agg1": 1}
    assert six["host_routes"]["peak"] == {"agg1": 2} and got["host_routes"]["peak"] == {"agg1": 1}
    assert "ipv6: reroute ms" in PopulationScenario.table({**got, "achieved_rate_per_s": 0.2})


def test_neighbour_limits_are_raised_for_the_population_then_put_back(tmp_path: Path) -> None:
    pattern = str(tmp_path / "{family}.gc_thresh{n}")
    for family, (t2, t3) in (("ipv4", (8192, 16384)), ("ipv6", (512, 1024))):
        for n, v in ((2, t2), (3, t3)):
            Path(pattern.format(family=family, n=n)).write_text(f"{v}\n")
    limits = NeighbourLimits(1000, path=pattern)
    need = 4 * 1000 + 2048
    assert limits.raise_() == [f"ipv6 gc_thresh2 512 -> {need}",
                               f"ipv6 gc_thresh3 1024 -> {2 * need}"]
    assert Path(pattern.format(family="ipv4", n=3)).read_text() == "16384\n"  # high enough
    Path(pattern.format(family="ipv6", n=2)).write_text("99999\n")  # someone else's since
    limits.restore()
    assert Path(pattern.format(family="ipv6", n=3)).read_text() == "1024\n"
    assert Path(pattern.format(family="ipv6", n=2)).read_text() == "99999\n"


def test_an_auth_abandoned_by_a_move_makes_its_ar_the_next_ones_previous(
        tmp_path: Path) -> None:
    """A move back before the AR answered: that AR may still accept the AUTH, and its late
    route beats the new AR's in the same LOCAL_PREF second unless the MN names it (seen at
    1,000 MNs: a /32 left at seven routers for an MN back home)."""
    pop = _population(tmp_path)
    mob = pop.mobiles["p0"]
    home = mob.member.home
    seen: list[str | None] = []

    class Session:
        rerouted: list[Any] = []
        not_rerouted: list[Any] = []

        def close(self) -> None:
            pass

    async def resolve(fqdn: str) -> None:
        return None

    async def authenticate(server: Any, fqdn: str, *args: Any, previous: str | None = None,
                           **kw: Any) -> Session:
        seen.append(previous)
        await asyncio.sleep(10 if fqdn.startswith("ar3.") else 0)
        return Session()

    pop.directory.resolve = resolve  # type: ignore[method-assign,assignment]
    mob.peer.authenticate = authenticate  # type: ignore[method-assign,assignment]

    async def run() -> list[dict[str, Any]]:
        first = asyncio.ensure_future(pop.attach("p0", "ar3"))
        await asyncio.sleep(0.01)
        return [await pop.attach("p0", home), await first]

    back, left = asyncio.run(asyncio.wait_for(run(), 5))
    assert left["superseded"] and back["ok"] and back["previous"] == "ar3"
    assert seen == [None, pop.config.ars["ar3"]]


SNMP = """Ip: Forwarding DefaultTTL InDiscards OutDiscards OutNoRoutes
Ip: 1 64 0 19 3
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors
Udp: 900 12 435 800 435
IpExt: InNoMcastRoutes InNoRoutes
IpExt: 0 2
Ip6InDiscards                   \t0
Udp6RcvbufErrors                \t7
Udp6NoPorts 1
garbage line here
Ip: a b
"""


def test_kernel_drop_counters_are_parsed_and_differenced_per_node() -> None:
    got = procstat.parse_snmp(SNMP)
    assert got["Ip:OutDiscards"] == 19 and got["Udp:RcvbufErrors"] == 435
    assert got["IpExt:InNoRoutes"] == 2 and got["Udp6RcvbufErrors"] == 7
    assert got["Udp6NoPorts"] == 1 and "Ip:a" not in got

    class Node:
        def __init__(self, text: str) -> None:
            self.text = text

        def run(self, cmd: object, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
            return subprocess.CompletedProcess([], 0, self.text, "")

    before = procstat.drop_counters({"ar3": Node(SNMP), "dns": Node("Udp: NoPorts\nUdp: 5\n")})
    assert set(before["ar3"]) <= set(procstat.DROP_COUNTERS) and before["dns"] == {
        "Udp:NoPorts": 5}
    after = {"ar3": {**before["ar3"], "Udp:RcvbufErrors": 500}, "dns": {"Udp:NoPorts": 5},
             "new": {"Udp:NoPorts": 9}}
    # Only what grew; a node first seen after the start is not guessed at.
    assert procstat.drops_between(before, after) == {"ar3": {"Udp:RcvbufErrors": 65}}
    assert procstat.drop_totals({"a": {"Udp:NoPorts": 2}, "b": {"Udp:NoPorts": 3,
                                                                "Ip:InDiscards": 1}}) == {
        "Ip:InDiscards": 1, "Udp:NoPorts": 5}


def test_the_machine_cpu_is_shared_out_by_state() -> None:
    before = procstat.machine_cpu("cpu  100 0 50 800 0 0 50 0 0 0\ncpu0 1 2 3\n")
    after = procstat.machine_cpu("cpu  400 0 150 900 0 0 150 0 0 0\n")
    assert before["softirq"] == 50 and after["user"] == 400
    # 300 user, 100 system, 100 idle, 100 softirq ticks of 600.
    got = procstat.machine_cpu_between(before, after)
    assert got["user"] == 50.0 and got["idle"] == 16.7 and got["softirq"] == 16.7
    assert procstat.machine_cpu_between({}, after) == {}
    assert procstat.machine_cpu("no cpu line") == {}
    assert sum(procstat.machine_cpu().values()) > 0  # this machine's own


def test_a_failed_handoff_is_tried_again_at_its_ar_until_answered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An overload's AUTH timeout leaves the MN on a cell that never re-routed it: a
    station keeps trying, so the population does, with backoff, and counts the end."""
    monkeypatch.setattr(population_agent, "RECOVER_FIRST_S", 0.01)
    pop = _population(tmp_path)
    tries: list[str] = []

    async def flaky(name: str, ar: str) -> dict[str, Any]:
        tries.append(ar)
        ok = len(tries) >= 3
        return {"ok": ok, "mn": name, "ar": ar, "t_auth_sent": 1.0,
                **({} if ok else {"error": "AuthTimeout: x"})}

    pop.authenticate = flaky  # type: ignore[method-assign]

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        rec = await pop.attach("p0", "ar2")
        await asyncio.wait_for(pop.mobiles["p0"].recovering or asyncio.sleep(0), 5)
        return rec, pop.recovery()

    rec, recovery = asyncio.run(run())
    assert not rec["ok"] and tries == ["ar2", "ar2", "ar2"]
    assert recovery == {"ok": True, "recovered": 1, "unrecovered": 0, "recovering": 0}
    assert [e["ev"] for e in pop.events.records] == ["handoff_recovered"]
    assert pop.events.records[0]["tries"] == 2


def test_a_move_ends_the_retries_for_the_cell_left_and_they_give_up_in_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(population_agent, "RECOVER_FIRST_S", 0.01)
    monkeypatch.setattr(population_agent, "RECOVER_FOR_S", 0.2)
    pop = _population(tmp_path)
    tries: list[str] = []

    async def refused(name: str, ar: str) -> dict[str, Any]:
        tries.append(ar)
        return {"ok": False, "mn": name, "ar": ar, "t_auth_sent": 1.0,
                "error": "AuthRejected: no"}

    pop.authenticate = refused  # type: ignore[method-assign]

    async def run() -> dict[str, Any]:
        await pop.attach("p0", "ar2")
        await asyncio.sleep(0.05)
        left = pop.mobiles["p0"].recovering
        await pop.attach("p0", "ar3")  # moved on: ar2 is not tried again
        assert left is not None and left.done()
        after = len([t for t in tries if t == "ar2"])
        retry = pop.mobiles["p0"].recovering
        assert retry is not None
        await asyncio.wait_for(retry, 5)  # ar3's retries run out after RECOVER_FOR_S
        assert len([t for t in tries if t == "ar2"]) == after
        return pop.recovery()

    assert asyncio.run(run()) == {"ok": True, "recovered": 0, "unrecovered": 1,
                                  "recovering": 0}
    assert pop.events.records[-1]["ev"] == "handoff_unrecovered"
    assert asyncio.run(pop.command({"cmd": "recovery"}))["unrecovered"] == 1
