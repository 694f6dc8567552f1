"""The population's DHCP members (issue 15): rendered with a link-local in their address's
place, leased through udhcpc's hook into the one process, routed by their own table, rotated
by the mobility model, and judged at the end by the addresses they still hold."""

from __future__ import annotations

import asyncio
import copy
import json
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, Literal, cast

import pytest
import yaml

from agents import control, dhcp_hook
from agents.addresses import Held
from agents.contract import ContractError
from agents.handoff import EventLog
from agents.population import Member, Population, PopulationAddresses, PopulationConfig
from agents.probe import Prober
from topologies import model
from topologies.analysis.measure import RouteEvent
from topologies.lab.daemons import LabError
from topologies.model import Topology, TopologyError
from topologies.render import identities
from topologies.render import population as render_population
from topologies.scenarios import mobility
from topologies.scenarios.population import (
    DHCP_FIRST,
    PopulationScenario,
    derived_topology,
    refusal_reason,
    summarise,
    with_refusals,
)

ROOT = Path(__file__).resolve().parents[2]
FIGURE2 = yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text())


def topo(count: int, dhcp: float) -> Topology:
    d = copy.deepcopy(FIGURE2)
    d["population"] = {"count": count, "seed": 1, "dhcp": dhcp}
    return model.build(d)


def _tsig(tmp: Path) -> Any:
    def path(identity: str) -> Path:
        p = tmp / f"{identity}.json"
        p.write_text(json.dumps({"name": identity, "secret": "c2VjcmV0", "algorithm":
                                 "hmac-sha256"}))
        return p
    return path


def test_a_dhcp_member_starts_from_its_link_local_in_its_own_table() -> None:
    t = topo(10, 0.5)
    ms = render_population.members(t, tsig=lambda n: Path(f"/k/{n}.json"))
    dhcp = [m for m in ms if m.address is None]
    assert len(dhcp) == 5 and all(m.link_local and m.tsig for m in dhcp)
    assert len({m.table for m in ms}) == 10
    batch = render_population.render_batches(t, 4242)["population"]
    for m in dhcp:
        assert f"rule add from {m.link_local} lookup {m.table}" in batch
        assert f"src {m.link_local} table {m.table}" in batch
    hook = render_population.render_hook()
    assert "agents.dhcp_hook" in hook and hook.startswith("#!/bin/sh")


def test_dhcp_members_need_their_hook_and_keys(tmp_path: Path) -> None:
    t = topo(4, 0.5)
    with pytest.raises(TopologyError, match="hook and TSIG"):
        render_population.agent_config(t, tmp_path, tmp_path / "k.json")
    with pytest.raises(ContractError, match="DHCP member needs"):
        Member(name="p0", identity="p0.example", ifname="p0-eth0", home="ar1")


def _population(tmp: Path, count: int = 4) -> Population:
    t = topo(count, 0.5)
    ids = identities.provision(t, tmp)
    ar_keys = {i.name: {"suite": int(i.suite), "spki": i.spki.hex(), "nonce": "",
                        "nonce_expires": 0} for i in ids if i.role == "ar"}
    (tmp / "ar_keys.json").write_text(json.dumps(ar_keys))
    cfg = render_population.agent_config(t, tmp, tmp / "ar_keys.json", tsig=_tsig(tmp),
                                         hook=tmp / "udhcpc.hook")
    assert PopulationConfig.from_json(json.loads(cfg.to_json())) == cfg
    assert cfg.dhcp is not None and cfg.dhcp.zone == "example"
    (tmp / "run").mkdir()
    return Population(cfg, tmp / "run")


HOSTILE_DHCP: list[Any] = [
    {"cmd": "dhcp"}, {"cmd": "dhcp", "mn": "nobody", "serial": 1, "env": {}},
    {"cmd": "dhcp", "mn": "MEMBER", "serial": "x", "env": {}},
    {"cmd": "dhcp", "mn": "MEMBER", "serial": 1, "env": "ip=1.2.3.4"},
    {"cmd": "dhcp", "mn": "MEMBER", "serial": 99, "event": "bound", "env": {"ip": "1.2.3.4"}},
    {"cmd": "rotate", "mn": "STATIC"}, {"cmd": "rotate", "mn": "MEMBER"},
    {"cmd": "rotate"},
]


def test_hostile_dhcp_and_rotate_commands_are_answered_not_raised(tmp_path: Path) -> None:
    pop = _population(tmp_path)
    member = next(n for n, m in pop.mobiles.items() if m.addresses is not None)
    static = next(n for n, m in pop.mobiles.items() if m.addresses is None)
    assert (tmp_path / "run" / "dhcp" / member).is_dir()

    async def run() -> list[dict[str, Any]]:
        reqs = [json.loads(json.dumps(r).replace("MEMBER", member).replace("STATIC", static))
                for r in HOSTILE_DHCP]
        return [await pop.command(r) for r in reqs]

    answers = asyncio.run(run())
    assert all(a["ok"] is False and a.get("error") for a in answers), answers
    status = asyncio.run(pop.command({"cmd": "status"}))
    assert status["leased"] == {n: [] for n, m in pop.mobiles.items() if m.addresses}


class _Proc:
    returncode: int | None = None
    pid = 4242


def test_a_lease_is_routed_by_the_members_own_table(tmp_path: Path) -> None:
    ran: list[list[str]] = []

    async def ip(argv: list[str]) -> None:
        ran.append(argv)

    async def batch(cmds: list[list[str]]) -> None:
        ran.extend(cmds)

    mgr = PopulationAddresses("p3.example", "p3-eth0", "10.255.255.254",
                              IPv4Address("169.254.0.13"), tmp_path / "hook",
                              tmp_path / "control", tmp_path, None, EventLog(None), ip=ip,
                              ip_batch=batch, table=1003)

    async def run() -> None:
        mgr.held[1] = Held(1, cast(asyncio.subprocess.Process, _Proc()))
        env = {"ip": "10.1.0.20", "serverid": "10.1.0.1", "lease": "60"}
        assert (await mgr.on_event(1, "bound", env))["ok"]
        assert (await mgr.on_event(1, "renew", env))["ok"]  # the same address: no new rule
        assert (await mgr.on_event(1, "deconfig", {}))["ok"]

    asyncio.run(run())
    rule = ["rule", "add", "from", "10.1.0.20", "lookup", "1003", "pref", "1003"]
    assert ran.count(rule) == 1
    assert ["route", "replace", "default", "via", "10.255.255.254", "dev", "p3-eth0", "src",
            "10.1.0.20", "table", "1003"] in ran
    assert ["rule", "del", "from", "10.1.0.20", "lookup", "1003", "pref", "1003"] in ran
    # With the lease gone, the member's table leaves from its link-local again.
    assert ran[-1] == ["route", "replace", "default", "via", "10.255.255.254", "dev",
                       "p3-eth0", "src", "169.254.0.13", "table", "1003"]
    assert all("main" not in c for c in ran)


def test_the_hook_names_the_member(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []

    def request(path: str, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        sent.append(req)
        return {"ok": True}

    monkeypatch.setattr(control, "request", request)
    monkeypatch.setenv("FLATARCH_MN_SOCK", "/x/control")
    monkeypatch.setenv("FLATARCH_LEASE_SERIAL", "2")
    monkeypatch.setenv(dhcp_hook.MN_NAME, "p7")
    monkeypatch.setenv("ip", "10.1.0.21")
    assert dhcp_hook.main(["bound"]) == 0
    assert sent == [{"cmd": "dhcp", "event": "bound", "serial": 2, "env": {"ip": "10.1.0.21"},
                     "mn": "p7"}]


def test_only_dhcp_members_rotate() -> None:
    start = {f"p{i}": "ar1" for i in range(40)}
    among = {f"p{i}" for i in range(0, 40, 4)}
    moves = mobility.random_walk(mobility.ar_adjacency(topo(2, 0.0)), start,
                                 mobility.Dwell(2.0), 30.0, seed=3, rotate=0.25, among=among)
    rotating = {m.mn for m in moves if m.kind == "rotate"}
    assert rotating and rotating <= among
    trace = [mobility.Move(1.0, "p0", "ar2"), mobility.Move(9.0, "p0", "ar3")]
    again = mobility.with_rotations(trace, 1.0, mobility.Dwell(1.0), 20.0, 1, {"p0"})
    assert [m for m in again if m.kind == "move"] == trace
    assert all(m.kind == "rotate" and m.mn == "p0" for m in again if m not in trace)


def test_the_scenario_checks_dhcp_and_rotate(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="needs --dhcp"):
        PopulationScenario(cast(Any, None), rotate=0.5, dhcp=0.2)
    with pytest.raises(LabError, match="fractions"):
        PopulationScenario(cast(Any, None), dhcp=1.5)


def test_the_derived_topology_makes_room_for_the_leases() -> None:
    doc = derived_topology(FIGURE2, 400, seed=1, dhcp=0.5)
    assert doc["dhcp"]["first"] == DHCP_FIRST and doc["dhcp"]["lease_s"] == 20
    t = model.build(doc)
    assert sum(1 for m in t.population_nodes.values() if m.address is None) == 200
    assert t.dhcp.last - t.dhcp.first + 1 >= 2 * 200 // 8
    assert model.build(derived_topology(FIGURE2, 40, seed=1, dhcp=0.5,
                                        lease_s=300)).dhcp.lease_s == 300
    with pytest.raises(LabError, match="do not fit the DHCP range"):
        derived_topology(FIGURE2, 3000, seed=1, dhcp=1.0)


def test_the_prober_follows_new_addresses_in_their_slots(tmp_path: Path) -> None:
    p = Prober("10.0.0.1", 1.0, ["10.0.0.2"])
    assert p.retarget(["10.0.0.1", "10.0.0.9"]) and p.targets == ["10.0.0.1", "10.0.0.9"]
    assert not p.retarget(["10.0.0.1"])  # a count that would shift every slot
    assert not p.retarget(["10.0.0.1", "2001:db8::1"])
    p.sock.close()


def _ev(ts: float, node: str, kind: Literal["add", "del"], dst: str) -> RouteEvent:
    return RouteEvent(ts, node, kind, IPv4Network(dst), 20, 186, frozenset({"10.254.0.1"}))


def test_a_dhcp_member_is_judged_by_the_addresses_it_holds_at_the_end() -> None:
    t = topo(4, 1.0)
    p0 = t.population_nodes["p0"]
    pool2 = t.nodes["ar2"].pool
    assert pool2 is not None and p0.home == "ar1"
    new = str(pool2.network_address + 20)
    home_pool = t.nodes[p0.home].pool
    assert home_pool is not None
    old = str(home_pool.network_address + 20)
    rows = [{"mn": "p0", "from": "ar1", "to": "ar2", "ok": True, "t_attach": 10.0,
             "t_auth_sent": 10.01, "auth_ms": 5.0, "not_rerouted": [],
             "claimed": [f"{old}/32"]},
            {"mn": "p0", "kind": "rotate", "at": "ar2", "ok": True, "t_start": 12.0,
             "t_bound": 12.05, "t_done": 12.2, "address": new, "released": [old]}]
    probe = "".join(f"[{10 + k * 0.2:.6f}] 64 bytes from {old}: icmp_seq={k} ttl=60 "
                    "time=1 ms\n" for k in range(1, 10))
    leases = [{"t": 5.0, "mn": "p0", "addresses": [old]},
              {"t": 12.1, "mn": "p0", "addresses": [new, old]},
              {"t": 12.2, "mn": "p0", "addresses": [new]}]
    params = {"mobiles": 4, "families": ["ipv4"], "probe_interval_s": 0.2, "rate_per_s": 1.0,
              "duration_s": 5.0, "model": "walk", "dhcp_members": 4, "rotate": 1.0}
    measured = {"t_start": 9.0, "where": {"p0": "ar2"}, "up": {"up_s": 1.0},
                "leased_at_end": {"p0": [new], "p1": [], "p2": [], "p3": []}}
    released = [_ev(10.1, "agg1", "add", f"{old}/32")]
    got = summarise(t, params, measured, rows, released, {"ipv4": probe}, [], {}, 14.0,
                    leases=leases)
    # The released address's /32 is still on agg1 at the end: stale. Its reroute counted.
    assert got["stale_host_routes"] == {"agg1": 1}
    assert got["handoffs"] == {"attempted": 1, "ok": 1, "failed": 0, "failures": {},
                               "superseded": 0, "recovered": None, "unrecovered": None,
                               "recovering_at_end": None}  # no recovery counts recorded
    assert got["reroute_ms"]["p50"] == pytest.approx(90.0, abs=0.5)
    rot = got["dhcp"]["rotations"]
    assert rot["ok"] == 1 and rot["released"] == 1 and got["dhcp"]["addresses_held_at_end"] == 1
    assert got["dhcp"]["lease_ms"]["p50"] == pytest.approx(50.0, abs=0.5)
    assert "dhcp: 4 members; rotations 1 ok" in PopulationScenario.table(
        {**got, "achieved_rate_per_s": 0.2})
    # Withdrawn when released: nothing stale.
    gone = [*released, _ev(12.3, "agg1", "del", f"{old}/32")]
    got = summarise(t, params, measured, rows, gone, {"ipv4": probe}, [], {}, 14.0,
                    leases=leases)
    assert got["stale_host_routes"] == {}
    # Still held, away from the pool it came from: owed, not stale.
    held = {**measured, "leased_at_end": {"p0": [new, old]}}
    got = summarise(t, params, held, rows, released, {"ipv4": probe}, [], {}, 14.0,
                    leases=leases)
    assert got["stale_host_routes"] == {}


def test_a_refusal_is_counted_by_the_ars_reason() -> None:
    rows = [{"mn": "p1", "to": "ar1", "t_auth_sent": 10.0, "t_reply": 10.02,
             "not_rerouted": ["10.64.1.15/32"]},
            {"mn": "p2", "to": "ar1", "t_auth_sent": 10.0, "t_reply": 10.02,
             "not_rerouted": ["10.64.1.16/32"]}]
    events = [{"ar": "ar1", "ev": "checked", "t": 10.01, "mn": "p1.example", "refused": {
        "10.64.1.15": "not among the validated addresses of p1.example"}},
              {"ar": "ar2", "ev": "checked", "t": 10.01, "mn": "p2.example", "refused": {
                  "10.64.1.16": "DNS: p2.example has no A record"}}]
    got = with_refusals(rows, events)
    assert refusal_reason(got[0]) == "not re-routed: not among the validated addresses of <>"
    assert refusal_reason(got[1]) == "not re-routed"  # the other AR's refusal is not its


def test_a_population_that_would_overflow_a_cell_is_refused_before_the_lab() -> None:
    # figure2's 8 cells hold 921 MNs each at home (a Linux bridge has 1,024 ports).
    assert model.build(derived_topology(FIGURE2, 7368, seed=1)).population_nodes
    with pytest.raises(LabError, match="Linux bridge of at most 1024 ports"):
        derived_topology(FIGURE2, 10_000, seed=1)


class _Gone:
    """A client that has exited but is not reaped yet."""

    returncode: int | None = None
    pid = 4243

    def send_signal(self, sig: int) -> None:
        raise ProcessLookupError(3, "No such process")


def test_a_client_gone_before_its_signal_is_no_error() -> None:
    from agents.addresses import _signal

    assert _signal(Held(1, cast(asyncio.subprocess.Process, _Gone())), 15) is False
    done = _Gone()
    done.returncode = 0
    assert _signal(Held(2, cast(asyncio.subprocess.Process, done)), 15) is False


def test_a_followed_address_is_measured_from_when_it_became_the_target() -> None:
    from topologies.analysis.measure import PingReply, ping_window
    from topologies.scenarios.population import _probed, target_periods

    # Slot seqs 1-40 went to the MN's first address; its second became the target at 40.5,
    # and its first reply came at 45.0 (sent every second): four probes lost, not forty.
    periods = target_periods([{"t": 0.0, "mn": "p0", "addresses": ["10.64.0.20"]},
                              {"t": 40.5, "mn": "p0", "addresses": ["10.64.0.30"]}])
    replies = [PingReply(seq, 1.0 * seq + 0.001, 1.0) for seq in range(45, 60)]
    span = _probed(replies, periods["p0"], "10.64.0.30", 41.0, 1.0)
    assert span is not None
    got, until = span
    assert until == float("inf") and got[0].seq == 5
    assert ping_window(got, 40.5, 50.0, 1.0)[0] == pytest.approx(5000.0)
    assert _probed(replies, periods["p0"], "10.64.0.20", 41.0, 1.0) is None
