"""The evaluation writer (topologies/analysis/report.py) on canned results at two distances:
every number it prints comes from the results, flat / flat_draft / anchored side by side and
never mixed, the losses of the flat architecture are named, the plots are drawn."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from topologies.analysis import report

MACHINE = {"date": "2030-01-02 03:04 UTC", "uname": "Linux box 6.1.0 x86_64", "kernel": "6.1.0",
           "cpus": 2, "cpu_model": "Test CPU", "python": "3.11.2"}


def _handoff(mode: str, ms: float, t: float, kind: str = "intra-cluster") -> dict[str, Any]:
    return {"mode": mode, "kind": kind, "interruption_ms": ms, "ping_lost": int(ms // 10) - 1,
            "t_attach": t, "warmup": False, "attach_ms": 40.0, "hss_ms": 31.0,
            "messages": {"air": 4, "s1": 5, "s6a": 2}, "home_round_trips": 1}


def _flat(mode: str, dns: str, p95: float, trips: float, phases: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "mode": mode, "dns_mode": dns, "handoffs": 2, "interruption_ms_p50": 20.0,
        "interruption_ms_p95": p95, "reroute_ms_p50": 80.0, "reroute_ms_p95": 90.0,
        "auth_ms_p50": 4.0 if dns == "stapled" else 9.0, "auth_ms_p95": 5.0,
        "home_round_trips_per_handoff": trips,
        "auth_size": {"min": 1001.0, "p50": 1002.0, "max": 1003.0} if dns == "stapled"
        else None,
        "messages_per_handoff": {"air": 2.0, "dns_queries": 3.0, "bgp_updates": 14.0,
                                 "ar_to_ar": 1.0},
        "sessions_total": 3, "iperf": {"survived": True, "max_stall_ms": 200.0},
        "path_stretch_mean": None, "rtt_ms_mean": None, "sessions_survived_failure": None,
        "recovery_ms_max": None, "state_max_per_node": None}
    if phases:
        fields.update(path_stretch_mean=1.0, rtt_ms_mean=0.111, sessions_survived_failure=3,
                      recovery_ms_max=123.0, state_max_per_node=2)
    return fields


def canned() -> dict[str, Any]:
    sessions = [{"mn": f"mn{i}", "address": f"10.64.{i}.10", "survived": True,
                 "recovery_ms": 120.0 + i, "timeline": [(-0.5, 0.1), (0.0, None), (0.2, 0.1)]}
                for i in (1, 2, 3)]
    dead = [{**s, "survived": False, "recovery_ms": None} for s in sessions]
    return {
        "scenario": "baseline", "topology": "figure2", "mn": "mn1", "anchor": "pgw",
        "home_rtt_ms": 0.0, "period_s": 2.0, "per_mode": 4, "elapsed_s": 321.0,
        "probe_interval_ms": 1.0, "link_profile": {},
        "configs": {"flat": {"mode": "redirect", "dns_mode": "stapled"},
                    "flat_draft": {"mode": "draft", "dns_mode": "lookup"}},
        "flat": _flat("redirect", "stapled", 21.5, 0.0, True),
        "flat_draft": _flat("draft", "lookup", 123.4, 3.5, False),
        "anchored": {"handoffs": 2, "interruption_ms_p50": 55.0, "interruption_ms_p95": 66.6,
                     "path_stretch_mean": 1.4, "rtt_ms_mean": 0.222,
                     "home_round_trips_per_handoff": 1.0,
                     "messages_per_handoff": {"air": 4.0, "s1": 5.0, "s6a": 2.0},
                     "sessions_survived_failure": 0, "sessions_total": 3,
                     "recovery_ms_max": None, "state_max_per_node": 3, "attach_ms_p50": 40.0,
                     "attach_ms_p95": 44.0, "hss_ms_p50": 31.0,
                     "iperf": {"survived": True, "max_stall_ms": 300.0}},
        "handoffs": {"flat": [_handoff("redirect", 20.0, 1.0), _handoff("redirect", 21.5, 3.0)],
                     "flat_draft": [_handoff("draft", 90.0, 5.0), _handoff("draft", 123.4, 7.0)],
                     "anchored": [_handoff("anchored", 55.0, 11.0),
                                  _handoff("anchored", 66.6, 13.0, "return-home")]},
        "warmup": {"flat": [], "flat_draft": [], "anchored": []},
        "flat_summary": [{"mode": "redirect", "dns_mode": "stapled", "kind": "all", "n": 2,
                          "interruption_ms_p50": 20.7, "interruption_ms_p95": 21.5,
                          "reroute_ms_p50": 80.0, "reroute_ms_p95": 90.0, "auth_ms_p50": 4.0,
                          "auth_ms_p95": 5.0, "home_round_trips_mean": 0.0, "ping_lost": 2}],
        "stretch": [{"ar": "ar1", "anchor_distance": 3, "shortest_hops": 5, "flat_hops": 5,
                     "anchored_hops": 7, "flat_stretch": 1.0, "anchored_stretch": 1.4,
                     "flat_rtt_ms": 0.111, "anchored_rtt_ms": 0.222,
                     "flat_expected_rtt_ms": 0.0, "anchored_expected_rtt_ms": 0.0}],
        "state": [{"mns_away": k, "mns_total": 3, "flat_total": 4 * k, "flat_max": k,
                   "flat_max_node": "agg1", "anchored_total": 3, "anchored_max": 3,
                   "anchored_max_node": "pgw"} for k in range(3)],
        "failures": [{"arch": "anchored", "event": "anchor pgw down", "sessions": dead,
                      "survived": 0, "total": 3},
                     {"arch": "flat", "event": "aggregation RR agg2 down",
                      "sessions": sessions, "survived": 3, "total": 3}],
        "timelines": {"anchored": [(10.0 + i * 0.01, 0.1 if i % 50 else None)
                                   for i in range(400)]},
    }


def two() -> dict[str, dict[str, Any]]:
    far = copy.deepcopy(canned())
    far["home_rtt_ms"] = 40.0
    far["link_profile"] = {"inet-cn": {"delay_ms": 20.0}, "home": {"delay_ms": 20.0}}
    far["flat_draft"]["auth_ms_p50"] = 77.7
    return {"zero": canned(), "regional": far}


def test_markdown_carries_both_runs_side_by_side() -> None:
    md = report.render_markdown(two(), MACHINE, {"zero": {"cdf": "zero-cdf.png"},
                                                 "regional": {}})
    assert "2030-01-02 03:04 UTC" in md and "Linux box 6.1.0 x86_64" in md and "2 CPUs" in md
    head = [ln for ln in md.splitlines() if ln.startswith("| measure |")][0]
    assert head == ("| measure | flat @ zero | flat_draft @ zero | anchored @ zero | "
                    "flat @ regional | flat_draft @ regional | anchored @ regional |")
    assert "| interruption p95 (ms) | 21.50 | 123.40 | 66.60 | 21.50 | 123.40 | 66.60 |" in md
    assert "| home round trips per handoff | 0.00 | 3.50 | 1.00 | 0.00 | 3.50 | 1.00 |" in md
    # A kept run without flat_draft's failure phase: it borrows nothing from flat.
    assert "| sessions surviving the failures | 3/3 | — | 0/3 | 3/3 | — | 0/3 |" in md
    assert "| regional | flat_draft (draft, lookup) | 77.70 |" in md
    assert "1001 / 1002 / 1003" in md
    assert "the home network 40 ms RTT away" in md
    assert "**zero**: RTT above the links' own, largest over the ARs: flat 0.111 ms" in md
    assert "mn1 lost" in md and "mn1 121" in md
    assert "![interruption CDF (zero)](zero-cdf.png)" in md
    assert "*(interruption CDF (regional): not drawn)*" in md


def test_losses_name_where_flat_does_not_win() -> None:
    text = "\n".join(report.losses(canned()))
    assert "flat_draft (draft, lookup)**: p95 123.4" in text  # above the anchored 66.6
    assert "Handoff interruption, flat (redirect" not in text  # 21.5 < 66.6: a win
    assert "Home round trips, flat_draft" in text and "Home round trips, flat (" not in text
    assert "Messages per handoff, flat" in text  # 20 against 11
    assert "State per node" not in text  # 2 < 3
    assert "Path stretch" not in text


def test_write_report_draws_every_plot(tmp_path: Path) -> None:
    path = report.write_report(two(), tmp_path, machine=MACHINE)
    assert path == tmp_path / "evaluation.md"
    for run in ("zero", "regional"):
        for png in ("anchored-handoff-timeline.png", "interruption-cdf.png", "path-stretch.png",
                    "messages-per-handoff.png", "failure-timeline.png", "state.png"):
            assert (tmp_path / f"{run}-{png}").stat().st_size > 1000, png
    doc = (tmp_path / "evaluation.json").read_text()
    assert '"regional"' in doc and '"timelines"' not in doc
