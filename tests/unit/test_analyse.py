"""Raw data first: a run directory built here from synthetic raw files is analysed offline
(`flatarch analyse DIR`) into the scenario's own result, with the figures the files imply;
a scenario whose analysis fails leaves its raw files and says where; routes.jsonl
round-trips and its parser refuses what it did not write."""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
from collections.abc import Iterator
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, Self

import pytest

from topologies import cli
from topologies.analysis import measure
from topologies.analysis.measure import MeasureError, RouteEvent
from topologies.cli import scenario as cli_scenario
from topologies.lab.daemons import LabError
from topologies.lab.shaping import Applied
from topologies.scenarios import registry
from topologies.scenarios.base import RUN_FILE, TOPOLOGY_FILE, Scenario
from topologies.scenarios.handoff import RECORDS, ROUTES, HandoffScenario

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0
MN1 = IPv4Network("10.64.0.0/32")  # replaced by the topology's own address below


def _ping(t_from: float, t_to: float, lost: list[tuple[float, float]]) -> str:
    """`ping -D` lines every 10 ms, none for sends inside the ``lost`` windows."""
    lines, seq, t = [], 1, t_from
    while t < t_to:
        if not any(a <= t < b for a, b in lost):
            lines.append(f"[{t + 0.0001:.6f}] 64 bytes from 10.64.1.10: icmp_seq={seq} ttl=62 "
                         "time=0.100 ms")
        seq += 1
        t = t_from + seq * 0.01 - 0.01
    return "\n".join(lines) + "\n"


def _iperf(seconds: float) -> dict[str, Any]:
    ivs = [{"sum": {"start": i / 10, "end": (i + 1) / 10, "seconds": 0.1, "bytes": 250000}}
           for i in range(int(seconds * 10))]
    return {"intervals": ivs, "end": {"sum_received": {"bytes": 250000 * len(ivs),
                                                       "seconds": seconds,
                                                       "bits_per_second": 20e6}}}


def _record(frm: str, to: str, t: float, kind: str) -> dict[str, Any]:
    return {"ok": True, "mn": "mn1", "from": frm, "to": to, "t_attach": t, "t_auth_sent": t,
            "t_reply": t + 0.005, "auth_ms": 5.0, "mode": "redirect", "kind": kind,
            "direct_link": False, "warmup": False, "traceroute": ["inet", "core1", "agg1",
                                                                  to, "mn1"]}


def canned_handoff_run(d: Path) -> None:
    """Two handoffs of mn1: ar1 -> ar2 losing 5 probes, the old AR's route gone 70 ms after
    the AUTH; ar2 -> ar1 losing 2, the home AR's route back 40 ms after it."""
    from topologies import model

    topo = model.load(ROOT / "topologies" / "figure2.yaml")
    addr = topo.mobile("mn1").address
    prefix = IPv4Network((addr, 32))
    d.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "topologies" / "figure2.yaml", d / TOPOLOGY_FILE)
    (d / RUN_FILE).write_text(json.dumps({
        "scenario": "handoff", "topology": "figure2", "complete": True,
        "params": {"mn": "mn1", "modes": ["redirect"], "per_mode": 2, "period_s": 1.5},
        "measured": {"t_end": T0 + 4.0}}))
    recs = [_record("ar1", "ar2", T0 + 1.0, "intra-cluster"),
            _record("ar2", "ar1", T0 + 2.5, "return-home")]
    (d / RECORDS).write_text("".join(json.dumps(r) + "\n" for r in recs))
    acc = frozenset({"dev:ar1-acc"})
    events = [RouteEvent(T0, "ar1", "add", prefix, 0, 186, acc),
              RouteEvent(T0 + 1.07, "ar1", "del", prefix, 0, 186, acc),
              RouteEvent(T0 + 2.54, "ar1", "add", prefix, 0, 186, acc)]
    (d / ROUTES).write_text(measure.dump_route_events(events))
    (d / "ping.txt").write_text(_ping(T0, T0 + 4.2, [(T0 + 1.0, T0 + 1.05),
                                                     (T0 + 2.5, T0 + 2.52)]))
    (d / "iperf.json").write_text(json.dumps(_iperf(4.0)))


def test_analyse_gives_the_scenarios_result_and_the_figures_of_the_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "run"
    canned_handoff_run(d)
    own = HandoffScenario.analyse(d)
    h1, h2 = own["handoffs"]
    assert (h1["ping_lost"], h1["interruption_ms"]) == (5, pytest.approx(60.0))
    assert (h2["ping_lost"], h2["interruption_ms"]) == (2, pytest.approx(30.0))
    assert h1["reroute_ms"] == pytest.approx(70.0) and h2["reroute_ms"] == pytest.approx(40.0)
    assert own["iperf"]["survived"] is True
    row = next(r for r in own["summary"] if r["kind"] == "all")
    assert row["n"] == 2 and row["interruption_ms_p50"] == pytest.approx(45.0)
    assert row["interruption_ms_p95"] == pytest.approx(58.5)  # the one percentile
    # The verb, offline and without root, gives the same JSON.
    out = tmp_path / "b.json"
    assert cli.main(["analyse", str(d), "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(json.dumps(own))
    assert "redirect" in capsys.readouterr().out


def test_an_unfinished_run_is_refused_with_a_reason(tmp_path: Path) -> None:
    d = tmp_path / "run"
    canned_handoff_run(d)
    doc = json.loads((d / RUN_FILE).read_text())
    doc["measured"] = {}
    (d / RUN_FILE).write_text(json.dumps(doc))
    with pytest.raises(MeasureError, match="did not finish"):
        HandoffScenario.analyse(d)


# --- a failing analysis keeps the raw files ---------------------------------------------------


class _FakeLab:
    """Stands in for the lab: the CLI's flow around it is what is tested here."""

    def __init__(self, topo: Any) -> None:
        self.topo = topo
        self.shaping = Applied()  # no link attributes: nothing laid on the links
        self.torn_down = False

    def __enter__(self) -> _FakeLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.torn_down = True


class FailingScenario(Scenario):
    name = "failing"
    help = "measures, then cannot analyse"

    def __init__(self, out_dir: Path) -> None:  # no lab: nothing to drive
        self.dir = out_dir
        self.mn = "mn1"
        self._measured = {}

    @classmethod
    def from_args(cls, lab: Any, args: argparse.Namespace, out_dir: Path) -> Self:
        sc = cls(out_dir)
        sc.lab, sc.topo = lab, lab.topo
        return sc

    def measure(self) -> None:
        (self.dir / "ping.txt").write_text("[1.0] 64 bytes from x: icmp_seq=1 time=0.1 ms\n")
        self.note(t_end=2.0)

    @classmethod
    def analyse(cls, out_dir: Path) -> dict[str, Any]:
        raise MeasureError("no ping replies in or around the window")


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    registry.register(FailingScenario)
    monkeypatch.setattr(cli_scenario, "Lab", _FakeLab)
    monkeypatch.setattr(cli_scenario, "require_root", lambda: None)
    try:
        yield
    finally:
        registry.SCENARIOS.pop("failing", None)


def test_a_failed_analysis_leaves_the_raw_files_and_names_them(
        failing: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "kept"
    assert cli.main(["scenario", "failing", "--out", str(d)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("flatarch: the analysis failed: no ping replies")
    assert str(d) in err[-1] and f"flatarch analyse {d}" in err[-1]
    # The raw files, the parameters and the topology are all still there.
    assert (d / "ping.txt").read_text().startswith("[1.0]")
    run = json.loads((d / RUN_FILE).read_text())
    assert run["scenario"] == "failing" and run["complete"] and run["measured"]["t_end"] == 2.0
    assert (d / TOPOLOGY_FILE).exists()


def test_without_out_the_run_directory_is_kept_and_printed(
        failing: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["scenario", "failing"]) == 1
    kept = list((tmp_path / cli_scenario.RUNS).iterdir())
    assert len(kept) == 1 and (kept[0] / "ping.txt").exists()
    assert f"run directory {kept[0]}" in capsys.readouterr().err


def test_a_failed_measurement_still_names_the_directory(
        failing: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def broken(self: FailingScenario) -> None:
        (self.dir / "ping.txt").write_text("half a run\n")
        raise LabError("handoff 3 to ar5 failed: timeout")

    monkeypatch.setattr(FailingScenario, "measure", broken)
    d = tmp_path / "kept"
    assert cli.main(["scenario", "failing", "--out", str(d)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "handoff 3 to ar5 failed" in err and str(d) in err
    assert (d / "ping.txt").read_text() == "half a run\n"
    run = json.loads((d / RUN_FILE).read_text())
    assert not run["complete"] and "handoff 3 to ar5 failed" in run["measured"]["error"]


# --- routes.jsonl -------------------------------------------------------------------------


def test_route_events_round_trip_exactly() -> None:
    evs = [RouteEvent(1700000000.123456789, "agg1", "add", IPv4Network("10.64.1.10/32"), 20,
                      186, frozenset({"10.254.0.5", "10.254.0.9"})),
           RouteEvent(1700000000.2, "ar1", "del", IPv4Network("0.0.0.0/0"), 0, 2,
                      frozenset({"blackhole"})),
           # Issue 18: the watcher records both families.
           RouteEvent(1700000000.3, "agg1", "add", IPv6Network("2001:db8:4000:1::/64"), 20,
                      186, frozenset({"fe80::1", "fe80::2"}))]
    assert measure.parse_route_events(measure.dump_route_events(evs)) == evs


@pytest.mark.parametrize("line", [
    "not json", "[]", '{"ts": 1}', '{"ts": "1", "node": "a", "kind": "add", "dst": "10.0.0.0/8",'
    ' "metric": 0, "proto": 0, "nexthops": []}',
    '{"ts": 1, "node": "a", "kind": "mod", "dst": "10.0.0.0/8", "metric": 0, "proto": 0,'
    ' "nexthops": []}',
    '{"ts": 1, "node": "a", "kind": "add", "dst": "10.0.0.1/8", "metric": 0, "proto": 0,'
    ' "nexthops": []}',
    '{"ts": 1, "node": "a", "kind": "add", "dst": "2001:db8::1/64", "metric": 0, "proto": 0,'
    ' "nexthops": []}',
    '{"ts": 1, "node": "a", "kind": "add", "dst": "10.0.0.0/8", "metric": true, "proto": 0,'
    ' "nexthops": []}',
    '{"ts": 1, "node": "a", "kind": "add", "dst": "10.0.0.0/8", "metric": 0, "proto": 0,'
    ' "nexthops": [1]}',
])
def test_route_events_parser_refuses_what_it_did_not_write(line: str) -> None:
    with pytest.raises(MeasureError):
        measure.parse_route_events(line + "\n")


def test_route_events_parser_fuzz() -> None:
    """Mutated files give events or a MeasureError, never another exception."""
    rng = random.Random(1414)
    good = measure.dump_route_events([RouteEvent(
        1.5, "ar1", "add", IPv4Network("10.64.0.10/32"), 150, 186, frozenset({"dev:ar1-acc"}))])
    alphabet = '{}[]",:0123456789.-eE /aeiounrtlsdfx\\\n'
    for _ in range(3000):
        b = list(good)
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(b))
            op = rng.randrange(3)
            if op == 0:
                b[i] = rng.choice(alphabet)
            elif op == 1:
                del b[i]
            else:
                b.insert(i, rng.choice(alphabet))
        with contextlib.suppress(MeasureError):
            for ev in measure.parse_route_events("".join(b)):
                assert isinstance(ev, RouteEvent)


# --- idle: the same, from an idle run's files -----------------------------------------------


def canned_idle_run(d: Path) -> None:
    """One page: mn1 idle at ar1, moved to ar2 then ar3; the CN's burst of 3 from t=10.0
    starts a page at ar1 at 10.01, mn1's AUTH at 10.03 from ar3, the buffer flushed."""
    from topologies.scenarios.idle import PAGES

    d.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "topologies" / "figure2.yaml", d / TOPOLOGY_FILE)
    (d / RUN_FILE).write_text(json.dumps({
        "scenario": "idle", "params": {"mn": "mn1", "rounds": 1, "burst": 3,
                                       "interval_s": 0.01},
        "measured": {"buffer_bound": 64, "t_idle_phase": 9.0, "t_idle_end": 11.0,
                     "t_conn_phase": 11.0, "t_conn_end": 13.0}}))
    (d / PAGES).write_text(json.dumps({"idle_at": "ar1", "moved_to": ["ar2", "ar3"],
                                       "first": 1}) + "\n")
    (d / "send-1.txt").write_text("sent 1 10.000\nsent 2 10.010\nsent 3 10.020\n")
    (d / "recv.txt").write_text("listening\nrecv 1 10.050\nrecv 2 10.051\nrecv 3 10.052\n")
    ev = [{"ev": "page_start", "t": 10.01, "tal": ["ar1", "ar2", "ar3"]},
          {"ev": "page_broadcast", "t": 10.011},
          {"ev": "flushed", "t": 10.049, "sent": 3, "dropped": 0, "paging_ms": 39.0}]
    (d / "ar1.events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ev))
    mn = [{"ev": "idle", "t": 9.5}, {"ev": "attached", "t": 10.04, "t_auth_sent": 10.03,
                                     "ar": "ar3"},
          {"ev": "attached", "t": 11.5, "t_auth_sent": 11.49, "ar": "ar2"}]
    (d / "mn1.events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in mn))


def test_idle_analyse_from_its_files(tmp_path: Path) -> None:
    from topologies.scenarios.idle import IdleScenario

    d = tmp_path / "idle"
    canned_idle_run(d)
    res = IdleScenario.analyse(d)
    (page,) = res["pages"]
    assert page["paging_ms"] == pytest.approx(20.0) and page["answered_at"] == "ar3"
    assert page["first_packet_ms"] == pytest.approx(50.0)
    assert (page["buffered_delivered"], page["dropped"], page["in_order"]) == (3, 0, True)
    # Idle: mn1's idle and attach (2 each), the page on ar1's own link and one broadcast
    # request and reply; connected: one attach.
    assert res["signalling_detail"]["idle"]["mn_auth"] == 4
    assert res["signalling_detail"]["idle"]["page_broadcast"] == 2
    assert res["signalling"] == {"idle": 8, "connected": 2}
    assert res["buffer_bound"] == 64
    out = tmp_path / "b.json"
    assert cli.main(["analyse", str(d), "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))


# --- macro: the same, from a macro run's files -----------------------------------------------


def test_macro_analyse_from_its_files(tmp_path: Path) -> None:
    """mn3 leaves for the visited network (7 probes lost, path via the HA) and returns
    (3 lost, shortest path); one stale host route is left on agg1."""
    from topologies.scenarios.macro import RECORDS as MOVES
    from topologies.scenarios.macro import MacroScenario

    d = tmp_path / "macro"
    d.mkdir()
    shutil.copyfile(ROOT / "topologies" / "figure2.yaml", d / TOPOLOGY_FILE)
    addr = "10.64.1.20"
    (d / RUN_FILE).write_text(json.dumps({
        "scenario": "macro", "params": {"mn": "mn3", "rounds": 1},
        "measured": {"address": addr, "t_end": T0 + 9.0}}))
    moves = [{"direction": "leave", "from": "ar1", "to": "inet", "t_attach": T0 + 1.0,
              "auth_ms": 8.0, "care_of_ms": 12.5, "tunnel": "ipip",
              "traceroute": ["inet", "core2", "ha", "inet", "mn3"]},
             {"direction": "return", "from": "inet", "to": "ar1", "t_attach": T0 + 5.0,
              "auth_ms": 6.0, "traceroute": ["inet", "core1", "agg1", "ar1", "mn3"]}]
    (d / MOVES).write_text("".join(json.dumps(m) + "\n" for m in moves))
    host = IPv4Network(f"{addr}/32")
    (d / ROUTES).write_text(measure.dump_route_events([
        RouteEvent(T0 + 5.1, "agg1", "add", host, 20, 186, frozenset({"10.254.0.9"})),
        RouteEvent(T0 + 5.1, "ar1", "add", host, 0, 186, frozenset({"dev:ar1-acc"})),
        RouteEvent(T0 + 9.5, "agg2", "add", host, 20, 186, frozenset({"10.254.0.1"}))]))
    (d / "ping.txt").write_text(_ping(T0, T0 + 9.2, [(T0 + 1.0, T0 + 1.07),
                                                     (T0 + 5.0, T0 + 5.03)]))
    (d / "iperf.json").write_text(json.dumps(_iperf(9.0)))
    (d / "ha.agent.status.json").write_text(json.dumps({"mobility": {"attached": {}}}))
    res = MacroScenario.analyse(d)
    leave, ret = res["moves"]
    assert (leave["ping_lost"], leave["interruption_ms"]) == (7, pytest.approx(80.0))
    assert (ret["ping_lost"], ret["interruption_ms"]) == (3, pytest.approx(40.0))
    assert leave["path_via_ha"] and ret["path_optimal"] and not ret["path_via_ha"]
    assert res["interruption_ms_p95"] == {"leave": 80.0, "return": 40.0}
    # agg1's route counts; ar1's is on its access link; agg2's came after the window.
    assert res["stale_routers"] == ["agg1"] and res["ha_bindings_end"] == 0
    assert res["tunnel"] == "ipip" and res["iperf"]["survived"] is True
    out = tmp_path / "b.json"
    assert cli.main(["analyse", str(d), "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))


def test_macro_analyse_both_families(tmp_path: Path) -> None:
    """--family both: mn3 is dual-stack; one record per move and family. Its /64 was bound
    at the HA while away (the Binding Update's answer names it), its probe lost 12 while
    leaving and 5 returning, and agg2 still holds the /64 at the end."""
    import yaml

    from topologies import model
    from topologies.scenarios.handoff import PING6, dual_stack_walker
    from topologies.scenarios.macro import RECORDS as MOVES
    from topologies.scenarios.macro import MacroScenario, table

    d = tmp_path / "macro6"
    d.mkdir()
    doc = dual_stack_walker(yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text()),
                            dhcp_mn=True)
    assert doc["addressing"]["ipv6"]["mobiles"] == ["mn3"]
    (d / TOPOLOGY_FILE).write_text(yaml.safe_dump(doc, sort_keys=False))
    prefix6 = model.build(doc).mobile("mn3").prefix6
    assert prefix6 is not None
    addr = "10.64.1.20"
    (d / RUN_FILE).write_text(json.dumps({
        "scenario": "macro", "params": {"mn": "mn3", "rounds": 1,
                                        "families": ["ipv4", "ipv6"]},
        "measured": {"address": addr, "t_end": T0 + 9.0}}))
    moves = [{"direction": "leave", "from": "ar3", "to": "inet", "t_attach": T0 + 1.0,
              "auth_ms": 8.0, "care_of_ms": 12.5, "tunnel": "vxlan",
              "rerouted": [f"{addr}/32", str(prefix6)],
              "traceroute": ["inet", "core2", "ha", "inet", "mn3"],
              "traceroute6": ["inet", "core2", "ha", None, "mn3"]},
             {"direction": "return", "from": "inet", "to": "ar3", "t_attach": T0 + 5.0,
              "auth_ms": 6.0, "rerouted": [f"{addr}/32", str(prefix6)],
              "traceroute": ["inet", "core2", "agg3", "ar3", "mn3"],
              "traceroute6": ["inet", "core2", "agg3", "ar3", "mn3"]}]
    (d / MOVES).write_text("".join(json.dumps(m) + "\n" for m in moves))
    (d / ROUTES).write_text(measure.dump_route_events([
        RouteEvent(T0 + 5.1, "agg2", "add", prefix6, 20, 186, frozenset({"fe80::1"})),
        RouteEvent(T0 + 5.1, "ar3", "add", prefix6, 0, 186, frozenset({"dev:ar3-acc"}))]))
    (d / "ping.txt").write_text(_ping(T0, T0 + 9.2, [(T0 + 1.0, T0 + 1.07),
                                                     (T0 + 5.0, T0 + 5.03)]))
    (d / PING6).write_text(_ping(T0, T0 + 9.2, [(T0 + 1.0, T0 + 1.12),
                                                (T0 + 5.0, T0 + 5.05)]))
    (d / "iperf.json").write_text(json.dumps(_iperf(9.0)))
    (d / "ha.agent.status.json").write_text(json.dumps({"mobility": {"attached": {}},
                                                        "bound6": {}}))
    res = MacroScenario.analyse(d)
    assert [(m["direction"], m["family"]) for m in res["moves"]] == [
        ("leave", "ipv4"), ("leave", "ipv6"), ("return", "ipv4"), ("return", "ipv6")]
    leave4, leave6, ret4, ret6 = res["moves"]
    assert (leave6["ping_lost"], ret6["ping_lost"]) == (12, 5)
    assert leave6["bound_at_ha"] is True and "bound_at_ha" not in ret6
    assert leave4["path_via_ha"] and ret4["path_optimal"]
    # The IPv6 paths from the records' own traceroute -6 (a silent hop in the tunnel).
    assert leave6["path_via_ha"] is True and leave6["path_optimal"] is None
    assert ret6["path_via_ha"] is False and ret6["path_optimal"] is True
    assert res["interruption_ms_p95_by_family"]["ipv6"] == {
        "leave": pytest.approx(130.0), "return": pytest.approx(60.0)}
    assert res["interruption_ms_p95"] == res["interruption_ms_p95_by_family"]["ipv4"]
    assert res["away_paths_via_ha"] and res["return_paths_optimal"]
    # agg2's /64 counts; ar3's is its access route.
    assert res["stale_routes_end_by_family"] == {"ipv4": 0, "ipv6": 1}
    assert res["stale_routers"] == ["agg2"] and res["stale_routes_end"] == 1
    assert "ipv6 leave 130.0 ms" in table(res)


# --- addresses: the same, from an addresses run's files ------------------------------------


def test_addresses_analyse_from_its_files(tmp_path: Path) -> None:
    """Host routes over the run: agg1 learns mn3's /32 at 2 s, loses it at 6 s; the access
    route on ar3 does not count; the phases and addresses come from run.json."""
    from topologies.scenarios.addresses import AddressesScenario

    d = tmp_path / "addresses"
    d.mkdir()
    shutil.copyfile(ROOT / "topologies" / "figure2.yaml", d / TOPOLOGY_FILE)
    phases = [{"t": 0.0, "phase": "attached at home", "ar": "ar1", "address": "10.64.1.20"},
              {"t": 1.5, "phase": "moved, inter-cluster", "ar": "ar3"},
              {"t": 3.0, "phase": "renewal relayed with option 82", "owner": "ar1",
               "remote_id": "mn3.mn.example.", "circuit_id": "ar3-acc", "waited_s": 1.0},
              {"t": 5.0, "phase": "rotated", "new": "10.64.3.20"},
              {"t": 8.0, "phase": "renewal refused (NAK)", "address": "10.64.3.20"}]
    (d / RUN_FILE).write_text(json.dumps({
        "scenario": "addresses", "params": {"mn": "mn3"},
        "measured": {"t0": T0, "base": 0, "a1": "10.64.1.20", "a2": "10.64.3.20",
                     "new_src": "10.64.3.20", "t_end": T0 + 9.0, "phases": phases}}))
    host = IPv4Network("10.64.1.20/32")
    (d / ROUTES).write_text(measure.dump_route_events([
        RouteEvent(T0 + 2.0, "agg1", "add", host, 20, 186, frozenset({"10.254.0.9"})),
        RouteEvent(T0 + 2.0, "ar3", "add", host, 0, 186, frozenset({"dev:ar3-acc"})),
        RouteEvent(T0 + 6.0, "agg1", "del", host, 20, 186, frozenset({"10.254.0.9"}))]))
    (d / "iperf-long.json").write_text(json.dumps(_iperf(9.0)))
    res = AddressesScenario.analyse(d)
    assert res["host_routes_peak"] == 1 and res["host_routes_end"] == 0
    assert {"t": 2.0, "router": "agg1", "count": 1} in res["host_routes"]
    assert res["option82_seen"] and res["renew_limit_nak"]
    assert res["option82"] == {"owner": "ar1", "remote_id": "mn3.mn.example.",
                               "circuit_id": "ar3-acc"}
    assert res["new_connection_used_new_address"] and res["old_tcp_survived_rotation"]
    out = tmp_path / "b.json"
    assert cli.main(["analyse", str(d), "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))


def test_addresses_analyse_reports_the_64s_of_a_dhcpv6_run(tmp_path: Path) -> None:
    """With --family both (issue 18): the /64 routes off the access links counted apart from
    the /32s, the Remote-ID phase, the rotation's new prefix, the renewal limit's end."""
    from topologies.scenarios.addresses import AddressesScenario

    d = tmp_path / "addresses6"
    d.mkdir()
    shutil.copyfile(ROOT / "topologies" / "figure2.yaml", d / TOPOLOGY_FILE)
    p1, p2 = "2001:db8:4010:c0::/64", "2001:db8:4011:1c0::/64"
    phases = [{"t": 0.0, "phase": "attached at home", "ar": "ar3", "address": "10.65.0.100"},
              {"t": 0.5, "phase": "delegated at home", "ar": "ar3", "prefix": p1},
              {"t": 4.0, "phase": "renewal relayed with Remote-ID (DHCPv6)", "owner": "ar3",
               "remote_id": "mn3.example", "relay": "2001:db8:ff::a", "message": "REBIND",
               "waited_s": 3.0},
              {"t": 5.0, "phase": "rotated (IPv6)", "new": p2},
              {"t": 7.0, "phase": "old prefix released", "prefix": p1},
              {"t": 8.0, "phase": "renewal refused (lifetimes 0)", "prefix": p2}]
    (d / RUN_FILE).write_text(json.dumps({
        "scenario": "addresses", "params": {"mn": "mn3", "families": ["ipv4", "ipv6"]},
        "measured": {"t0": T0, "base": 0, "a1": "10.65.0.100", "a2": "10.65.1.100",
                     "new_src": "10.65.1.100", "t_end": T0 + 9.0, "phases": phases,
                     "base6": 0, "p1": p1, "p2": p2, "new_src6": "2001:db8:4011:1c0::1",
                     "p3": "2001:db8:4011:1c1::/64"}}))
    six = IPv6Network(p1)
    (d / ROUTES).write_text(measure.dump_route_events([
        RouteEvent(T0 + 2.0, "agg2", "add", six, 20, 186, frozenset({"fe80::1"})),
        RouteEvent(T0 + 2.0, "ar4", "add", six, 100, 250, frozenset({"dev:ar4-acc"})),
        RouteEvent(T0 + 2.0, "agg2", "add", IPv6Network("2001:db8:4010::/56"), 20, 186,
                   frozenset({"fe80::1"})),
        RouteEvent(T0 + 7.5, "agg2", "del", six, 20, 186, frozenset({"fe80::1"}))]))
    (d / "iperf-long.json").write_text(json.dumps(_iperf(9.0)))
    (d / "iperf6-long.json").write_text(json.dumps(_iperf(9.0)))
    res = AddressesScenario.analyse(d)
    assert res["families"] == ["ipv4", "ipv6"] and res["host_routes_peak"] == 0
    v6 = res["ipv6"]
    assert v6["host_routes_peak"] == 1 and v6["host_routes_end"] == 0  # not the pool, not ar4
    assert v6["remote_id_seen"] and v6["remote_id"]["remote_id"] == "mn3.example"
    assert v6["new_connection_used_new_prefix"] and v6["old_tcp_survived_rotation"]
    assert v6["renew_limit_ended"] and v6["old_prefix_released"]
    assert v6["prefixes"] == {"first": p1, "rotated": p2, "fresh": "2001:db8:4011:1c1::/64"}
    # An IPv6 run that stopped early says so, and keeps its files.
    doc = json.loads((d / RUN_FILE).read_text())
    del doc["measured"]["new_src6"]
    (d / RUN_FILE).write_text(json.dumps(doc))
    with pytest.raises(measure.MeasureError, match="no new_src6"):
        AddressesScenario.analyse(d)
    assert (d / ROUTES).exists()
