"""The experiment file of `flatarch run`: the shipped examples parse to the timeline they
mean; every kind of error is reported with its line, all at once, before any lab starts
(exit 2); hostile input raises only ExperimentError; the checks' verdicts name what failed."""

from __future__ import annotations

import contextlib
import random
import textwrap
from ipaddress import IPv4Network
from pathlib import Path

import pytest
import yaml

from agents.contract import REDIRECT_METRIC
from topologies import cli
from topologies.analysis.measure import RouteEvent
from topologies.cli import run as run_cli
from topologies.scenarios import declared, experiment
from topologies.scenarios.experiment import Check, ExperimentError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "topologies" / "experiments").glob("*.yaml"))


def parse(body: str) -> experiment.Experiment:
    return experiment.parse(textwrap.dedent(body), "x.yaml")


def errors(body: str) -> list[str]:
    with pytest.raises(ExperimentError) as info:
        parse(body)
    return info.value.errors


def test_the_three_examples_ship_and_parse() -> None:
    assert {p.stem for p in SHIPPED} >= {"figure2-walk", "failure-during-handoff",
                                         "idle-paging"}
    for p in SHIPPED:
        exp = experiment.load(p)
        assert exp.topology.name == "figure2" and exp.timeline and exp.checks


def test_every_cycles_a_handoff_through_its_ars() -> None:
    exp = experiment.load(ROOT / "topologies/experiments/figure2-walk.yaml")
    walk = [(f.t_s, f.target) for f in exp.timeline if f.action.verb == "handoff"]
    assert walk[:4] == [(1.0, "ar2"), (3.0, "ar3"), (5.0, "ar5"), (7.0, "ar1")]
    assert len(walk) == 8
    assert exp.duration_s == pytest.approx(16.0 + experiment.TAIL_S)


def test_times_units_until_and_lists_of_actions() -> None:
    exp = parse("""
        topology: figure2
        traffic:
          - udp: {from: cn, to: mobiles, start: 250ms, count: 5}
        timeline:
          - every: 0.5s
            until: 1.6s
            do: [idle mn1, mode draft]
          - at: 2
            do: link ar2 ar3 down
        duration: 4s
    """)
    assert [(f.t_s, f.action.verb) for f in exp.timeline] == [
        (0.5, "idle"), (0.5, "mode"), (1.0, "idle"), (1.0, "mode"), (1.5, "idle"),
        (1.5, "mode"), (2.0, "link")]
    assert [t.dst for t in exp.traffic] == ["mn1", "mn2", "mn3"]
    assert exp.traffic[0].start_s == 0.25 and exp.duration_s == 4.0


def test_every_error_at_once_with_its_line() -> None:
    errs = errors("""
        topology: figure2
        colour: blue
        traffic:
          - ping: {from: cn, to: mn9}
          - telnet: {from: cn, to: mn1}
          - iperf3: {from: cn, to: mn1, proto: sctp, rate: fast}
        timeline:
          - at: soon
            do: handoff mn1 ar2
          - at: 1s
            do: teleport mn1 ar2
          - at: 2s
            do: handoff mn1 core1
          - at: 3s
            do: rotate mn1
          - at: 4s
            do: link ar1 ar5 down
          - at: 5s
            do: fault poison bgpd agg2
          - at: 6s
            do: mode fast
          - every: 1s
            do: idle mn1
          - at: 7s
            until: 8s
            do: idle mn1
          - at: -1s
            do: idle mn1
        checks:
          - reachable: [cn, nowhere]
          - jitter_ms_p95 <= 3
          - be_fast
          - path: [cn]
    """)
    expect = [
        (3, "colour: unknown key"),
        (5, "unknown node 'mn9'"),
        (6, "unknown traffic 'telnet'"),
        (7, "'sctp' is not tcp or udp"),
        (7, "'fast' is not a rate"),
        (9, "bad time 'soon'"),
        (12, "unknown action 'teleport'"),
        (14, "'core1' is not an access router"),
        (16, "only an MN under dhcp.mobiles rotates"),
        (18, "no link between 'ar1' and 'ar5'"),
        (20, "fault 'poison' is not kill or restart"),
        (22, "mode 'fast' is not redirect or draft"),
        (23, "'every' needs 'until' or 'count'"),
        (26, "until: only with 'every'"),
        (28, "bad time '-1s'"),
        (31, "unknown node 'nowhere'"),
        (32, "unknown metric 'jitter_ms_p95'"),
        (33, "unknown check 'be_fast'"),
        (34, "name at least two nodes"),
    ]
    for line, text in expect:
        assert any(e.startswith(f"x.yaml:{line}: ") and text in e for e in errs), (line, text,
                                                                                  errs)
    assert len(errs) == len(expect), errs


@pytest.mark.parametrize(("body", "line", "text"), [
    ("topology: nowhere\n", 1, "no topology 'nowhere'"),
    ("name: x\n", 1, "missing 'topology'"),
    ("topology: figure2\ntimeline: [{at: 1s}]\n", 2, "missing 'do'"),
    ("topology: figure2\ntimeline: [{do: idle mn1}]\n", 2, "give 'at' or 'every'"),
    ("topology: figure2\ntimeline:\n  - {at: 5s, do: idle mn1}\nduration: 2s\n", 4,
     "ends before the last action"),
    ("topology: figure2\ntimeline:\n  - {every: 1s, at: 3s, until: 2s, do: idle mn1}\n", 3,
     "before the first firing"),
    ("topology: figure2\ntimeline:\n  - {every: 1ms, count: 5000, do: idle mn1}\n", 3,
     "more than"),
    ("topology: figure2\ntimeline:\n  - {at: 1s, do: handoff mn1}\n", 3,
     "expected `handoff MN AR [AR...]`"),
    ("topology: figure2\ntimeline:\n  - {at: 1s, do: fault kill nosuchd ar1}\n", 3,
     "unknown daemon 'nosuchd'"),
    ("topology: figure2\nlink_profile: {colours: {}}\n", 2, "unknown key"),
    ("topology: figure2\nlink_profile: {link_profiles: {core-agg: {delay_ms: -5}}}\n", 2,
     "delay_ms"),
    ("topology: figure2\ntraffic:\n  - udp: {from: cn, to: mn1, start: 9s}\nduration: 2s\n",
     3, "after the end"),
    ("topology: figure2\ntraffic:\n  - ping: {to: mn1}\n", 3, "missing 'from'"),
    ("topology: figure2\nchecks: [{path: [cn, '*', mn1], via: x}]\n", 2, "expected"),
    ("topology: [figure2\n", 2, "not YAML"),
    ("topology: !!python/object:os.system figure2\n", 1, "not YAML"),
    ("", 1, "empty"),
    ("topology: figure2\nchecks: ['pages[draft] >= 1']\n", 2, "take [redirect] or [draft]"),
    ("topology: figure2\nchecks: ['auth_ms_max[fast] < 9']\n", 2, "take [redirect] or [draft]"),
])
def test_each_error_kind_names_its_line(body: str, line: int, text: str) -> None:
    errs = errors(body)
    assert any(e.startswith(f"x.yaml:{line}: ") and text in e for e in errs), errs


def test_a_metric_may_name_one_handoff_mode() -> None:
    exp = parse("""
        topology: figure2
        checks: ["interruption_ms_p95[redirect] <= 25", "auth_ms_max >= 0.5"]
    """)
    assert [(c.metric, c.op, c.bound) for c in exp.checks] == [
        ("interruption_ms_p95[redirect]", "<=", 25.0), ("auth_ms_max", ">=", 0.5)]
    handoffs = [{"t": 1.0, "mode": "redirect", "interruption_ms": 20.0, "auth_ms": 8.0},
                {"t": 2.0, "mode": "draft", "interruption_ms": 140.0, "auth_ms": None}]
    m = declared.handoff_metrics([h for h in handoffs if h["mode"] == "redirect"], "[redirect]")
    assert m["interruption_ms_max[redirect]"] == 20.0 and m["auth_ms_p95[redirect]"] == 8.0
    assert declared.handoff_metrics(handoffs, "")["interruption_ms_max"] == 140.0
    # Both families' records of one move: two interruptions, one AUTH.
    both = [{"t": 1.0, "interruption_ms": 9.0, "auth_ms": 4.0},
            {"t": 1.0, "interruption_ms": 11.0, "auth_ms": 4.0},
            {"t": 3.0, "interruption_ms": 10.0, "auth_ms": 100.0}]
    m = declared.handoff_metrics(both, "")
    assert m["interruption_ms_max"] == 11.0
    assert m["auth_ms_p95"] == pytest.approx(4.0 + 0.95 * 96.0)  # over 2 AUTHs, not 3


def test_a_link_profile_is_laid_over_the_topology() -> None:
    exp = parse("""
        topology: figure2
        link_profile:
          profiles: {metro: {delay_ms: 2}}
          link_profiles: {agg-ar: {distance: metro}}
    """)
    assert exp.topology_doc["link_profiles"]["agg-ar"] == {"distance": "metro"}
    assert exp.topology.link_profile()["agg1-ar1"]["delay_ms"] == 2.0


def test_a_malformed_file_exits_2_with_every_error_and_starts_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_lab(*_a: object, **_k: object) -> None:
        raise AssertionError("a lab was started for an invalid experiment")

    monkeypatch.setattr(run_cli, "measure_then_analyse", no_lab)
    bad = tmp_path / "bad.yaml"
    bad.write_text("topology: figure2\ntimeline:\n  - {at: 1x, do: idle mn1}\n"
                   "  - {at: 2s, do: handoff mn7 ar2}\nchecks: [wobble]\n")
    assert cli.main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: timeline[0].at: bad time '1x'" in err
    assert f"{bad}:4: " in err and "'mn7' is not a mobile node" in err
    assert f"{bad}:5: checks[0]: unknown check 'wobble'" in err
    assert cli.main(["run", "--check", str(SHIPPED[0])]) == 0


def test_hostile_files_raise_only_experiment_errors() -> None:
    rng = random.Random(21)
    texts = [p.read_text() for p in SHIPPED]
    alphabet = "{}[]:-,#'\"!&*|> \n\tabz019.s"
    for n in range(400):
        text = bytearray(rng.choice(texts).encode())
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(text))
            op = rng.randrange(3)
            if op == 0:
                del text[i:i + rng.randint(1, 20)]
            elif op == 1:
                text[i:i] = rng.choice(alphabet).encode()
            else:
                text[i:i] = text[rng.randrange(len(text)):][:rng.randint(1, 30)]
        with contextlib.suppress(ExperimentError):
            experiment.parse(text.decode(errors="replace"), f"fuzz-{n}")


# --- the verdicts ---------------------------------------------------------------------------

METRICS: dict[str, float | None] = {"interruption_ms_p95": 41.5, "pages": None}


def check(kind: str, text: str, **kw: object) -> Check:
    return Check(kind, text, 7, **kw)  # type: ignore[arg-type]


def test_a_metric_check_fails_over_its_bound_and_when_unmeasured() -> None:
    v = declared.evaluate(check("metric", "interruption_ms_p95 <= 25",
                                metric="interruption_ms_p95", op="<=", bound=25.0),
                          METRICS, [], 0, [], list)
    assert not v["ok"] and v["value"] == 41.5 and v["line"] == 7
    v = declared.evaluate(check("metric", "pages >= 1", metric="pages", op=">=", bound=1.0),
                          METRICS, [], 0, [], list)
    assert not v["ok"] and "not measured" in v["detail"]


def test_auth_ok_path_and_reachable_verdicts() -> None:
    actions = [{"line": 4, "action": "handoff mn1 ar2", "ok": False, "error": "refused"}]
    v = declared.evaluate(check("auth_ok", "auth_ok"), METRICS, actions, 2, [], list)
    assert not v["ok"] and "line 4 handoff mn1 ar2: refused" in v["detail"]
    assert "only 1 of 2 actions ran" in v["detail"]
    probes = [{"line": 7, "src": "cn", "dst": "mn1", "hops": ["inet", "core2", "ar1", "mn1"]}]
    nodes = ("cn", "inet", "*", "ar1", "mn1")
    assert declared.evaluate(check("path", "p", nodes=nodes), METRICS, [], 0, probes,
                             list)["ok"]
    wrong = ("cn", "inet", "*", "ar2", "mn1")
    assert not declared.evaluate(check("path", "p", nodes=wrong), METRICS, [], 0, probes,
                                 list)["ok"]
    probes = [{"line": 7, "src": "cn", "dst": "mn1", "ok": True},
              {"line": 7, "src": "cn", "dst": "mn2", "ok": False}]
    v = declared.evaluate(check("reachable", "r", nodes=("cn", "mn1", "mn2")), METRICS, [],
                          0, probes, list)
    assert not v["ok"] and v["detail"] == "unreachable: cn -> mn2"


def test_report_exits_1_naming_each_failed_check(capsys: pytest.CaptureFixture[str]) -> None:
    result = {"experiment": "e", "topology": "figure2", "duration_s": 3.0, "actions": [],
              "handoffs": [], "metrics": {"pages": 0},
              "checks": [{"check": "pages >= 1", "line": 9, "ok": False, "detail": "0"},
                         {"check": "auth_ok", "line": 8, "ok": True, "detail": "fine"}],
              "failed": ["pages >= 1"]}
    assert run_cli.report(result, None) == 1
    out = capsys.readouterr()
    assert "FAIL  line   9  pages >= 1" in out.out and "PASS  line   8  auth_ok" in out.out
    assert "check failed (line 9): pages >= 1" in out.err and "auth_ok" not in out.err



def test_stale_routes_left_behind_are_named() -> None:
    topo = experiment.load(SHIPPED[0]).topology
    mn1 = IPv4Network("10.64.0.10/32")
    acc, bgp = frozenset({"dev:ar2-acc"}), frozenset({"10.254.0.9"})

    def ev(t: float, node: str, kind: str, metric: int, hops: frozenset[str]) -> RouteEvent:
        return RouteEvent(t, node, kind, mn1, metric, 186, hops)  # type: ignore[arg-type]

    final = {"mn1": {"ar": "ar2", "address": "10.64.0.10", "idle": False}}
    clean = [ev(1, "ar2", "add", 0, acc), ev(1, "core1", "add", 20, bgp),
             ev(2, "ar1", "add", REDIRECT_METRIC, bgp), ev(3, "ar1", "del", REDIRECT_METRIC,
                                                          bgp)]
    assert declared.stale_routes(topo, clean, final, 10.0) == []
    left = [*clean, ev(4, "ar3", "add", 0, frozenset({"dev:ar3-acc"})),
            ev(5, "agg2", "add", REDIRECT_METRIC, bgp)]
    assert declared.stale_routes(topo, left, final, 10.0) == [
        "agg2: mn1 (a redirect route)", "ar3: mn1 (an access-link route, mn1 is on ar2)"]
    home = {"mn1": {"ar": "ar1", "address": "10.64.0.10", "idle": False}}
    assert declared.stale_routes(topo, clean, home, 10.0) == [
        "ar2: mn1 (an access-link route, mn1 is on ar1)", "core1: mn1 (a host route, mn1 is home)"]
    assert declared.stale_routes(topo, left, final, 3.5) == []  # after the end: not counted


def test_each_page_is_timed_to_the_paged_mns_auth(tmp_path: Path) -> None:
    topo = experiment.load(SHIPPED[0]).topology
    (tmp_path / "ar1.events.jsonl").write_text(
        '{"t": 10.0, "ev": "page_start", "mn": "mn1.example", "tal": ["ar1"]}\n'
        '{"t": 50.0, "ev": "page_start", "mn": "mn1.example", "tal": ["ar1"]}\n'
        '{"t": 99.0, "ev": "page_start", "mn": "mn2.example"}\n')
    (tmp_path / "mn1.events.jsonl").write_text(
        '{"t": 9.0, "ev": "attached", "t_auth_sent": 9.0}\n'
        '{"t": 10.2, "ev": "attached", "t_auth_sent": 10.004}\n')
    got = declared.pages(topo, tmp_path, 0.0, 60.0)
    assert [(p["ar"], p["mn"], p["paging_ms"]) for p in got] == [
        ("ar1", "mn1", 4.0), ("ar1", "mn1", None)]  # the second page was never answered


DUAL = ROOT / "topologies" / "experiments" / "dual-stack-walk.yaml"


def test_family_both_runs_each_stream_and_check_once_per_family() -> None:
    exp = experiment.load(DUAL)
    assert exp.families == ("ipv4", "ipv6") and exp.mobiles6 == ["mn1"]
    assert exp.topology.backbone6 is not None and exp.topology.backbone6.mobiles == ("mn1",)
    assert exp.topology_doc["addressing"]["ipv6"]["mobiles"] == ["mn1"]  # what the lab gets
    assert [(t.kind, t.family) for t in exp.traffic] == [
        ("ping", "ipv4"), ("ping", "ipv6"), ("iperf3", "ipv4"), ("iperf3", "ipv6")]
    texts = [(c.text, c.family) for c in exp.checks]
    assert ("reachable: [cn, mn1] (ipv6)", "ipv6") in texts
    assert ("no_stale_routes (ipv4)", "ipv4") in texts and ("auth_ok", "ipv4") in texts
    assert {c.metric for c in exp.checks if c.kind == "metric"} >= {
        "interruption_ms_p95[ipv4]", "interruption_ms_p95[ipv6]"}
    assert len({declared.stream_file(i, t) for i, t in enumerate(exp.traffic)}) == 4


ONE_V6 = """
    topology: figure2
    traffic:
      - ping: {from: cn, to: mn1, family: ipv6}
      - ping: {from: cn, to: mn2}
    timeline:
      - {at: 1s, do: handoff mn1 ar2}
    checks:
      - reachable: [cn, mn2]
"""


def test_a_stream_names_its_family_and_family_replaces_the_files() -> None:
    exp = parse(ONE_V6)
    assert [(t.dst, t.family) for t in exp.traffic] == [("mn1", "ipv6"), ("mn2", "ipv4")]
    assert exp.mobiles6 == ["mn1"] and exp.families == ("ipv4",)
    assert exp.topology.backbone6 is not None and exp.topology.backbone6.mobiles == ("mn1",)
    assert [c.text for c in exp.checks] == ["reachable: [cn, mn2]"]  # IPv4 alone: as before
    six = experiment.parse(textwrap.dedent(ONE_V6), "x.yaml", family="ipv6")
    assert [(t.dst, t.family) for t in six.traffic] == [("mn1", "ipv6"), ("mn2", "ipv6")]
    assert [c.text for c in six.checks] == ["reachable: [cn, mn2] (ipv6)"]
    assert six.mobiles6 == ["mn1", "mn2"]


def test_ipv6_a_topology_cannot_carry_is_refused_with_its_line(tmp_path: Path) -> None:
    assert errors("""
        topology: figure2
        family: ipv5
        traffic:
          - ping: {from: cn, to: mn3, family: ipv6}
          - udp: {from: cn, to: mn1, family: all}
        checks:
          - interruption_ms_p95[ipv7] <= 1
    """) == [
        "x.yaml:3: family: 'ipv5' is not both, ipv4, ipv6",
        "x.yaml:6: traffic[1].udp.family: 'all' is not both, ipv4, ipv6",
        "x.yaml:8: checks[0]: interruption_ms_p95[ipv7]: only interruption_ms_p95, "
        "interruption_ms_max, auth_ms_p95, auth_ms_max take [redirect] or [draft] or [ipv4] "
        "or [ipv6]",
    ]
    assert errors("""
        topology: figure2
        traffic:
          - ping: {from: cn, to: mn3, family: ipv6}
    """) == ["x.yaml:4: family ipv6: mn3 takes its addresses by DHCP; IPv6 to it needs it "
             "under dhcp.ipv6 (DHCPv6)"]
    doc = yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text())
    del doc["addressing"]["ipv6"]
    (tmp_path / "v4.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "x.yaml").write_text("topology: v4.yaml\nfamily: both\n"
                                     "checks: [reachable: [cn, mn1]]\n")
    with pytest.raises(ExperimentError) as info:
        experiment.load(tmp_path / "x.yaml")
    assert info.value.errors == [f"{tmp_path / 'x.yaml'}:3: family ipv6: figure2 has no IPv6 "
                                 "backbone (addressing.ipv6 with loopbacks and links)"]


def test_stale_64s_are_named_as_stale_32s_are() -> None:
    topo = experiment.load(DUAL).topology
    prefix = topo.mobile("mn1").prefix6
    assert prefix is not None
    acc, bgp = frozenset({"dev:ar2-acc"}), frozenset({"fe80::1"})

    def ev(t: float, node: str, kind: str, metric: int, hops: frozenset[str]) -> RouteEvent:
        return RouteEvent(t, node, kind, prefix, metric, 186, hops)  # type: ignore[arg-type]

    routes = [ev(1, "ar2", "add", 1024, acc), ev(1, "core1", "add", 20, bgp),
              ev(2, "ar1", "add", REDIRECT_METRIC, bgp)]
    away = {"mn1": {"ar": "ar2", "prefixes6": [str(prefix)], "idle": False}}
    assert declared.stale_routes(topo, routes, away, 10.0, "ipv6", ["mn1"]) == [
        "ar1: mn1 (a redirect route)"]
    home = {"mn1": {"ar": "ar1", "prefixes6": [str(prefix)], "idle": False}}
    assert declared.stale_routes(topo, routes[:2], home, 10.0, "ipv6", ["mn1"]) == [
        "ar2: mn1 (an access-link route, mn1 is on ar1)",
        "core1: mn1 (a host route, mn1 is home)"]
    assert declared.stale_routes(topo, routes, away, 10.0, "ipv6", []) == []


def test_the_table_shows_each_familys_interruption() -> None:
    move = {"t": 101.0, "line": 15, "action": "handoff mn1 ar2 ar3 ar1", "verb": "handoff",
            "mn": "mn1", "to": "ar2", "ok": True, "auth_ms": 3.2}
    result = {"experiment": "dual-stack-walk", "topology": "figure2", "duration_s": 10.0,
              "t_zero": 100.0, "families": ["ipv4", "ipv6"], "actions": [move],
              "handoffs": [{**move, "family": "ipv4", "interruption_ms": 12.0},
                           {**move, "family": "ipv6", "interruption_ms": 14.5}],
              "metrics": {}, "checks": []}
    text = declared.table(result)
    assert "(ipv4 / ipv6)" in text
    assert "handoff mn1 ar2" in text and "12.0 / 14.5" in text
