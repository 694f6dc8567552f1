"""The evaluation writer (topologies/analysis/report.py) on a canned result: every number it prints
comes from the result, the losses of the flat architecture are named, the plots are drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from topologies.analysis import report

MACHINE = {"date": "2030-01-02 03:04 UTC", "uname": "Linux box 6.1.0 x86_64", "kernel": "6.1.0",
           "cpus": 2, "cpu_model": "Test CPU", "python": "3.11.2"}


def _handoff(mode: str, ms: float, t: float, kind: str = "intra-cluster") -> dict[str, Any]:
    return {"mode": mode, "kind": kind, "interruption_ms": ms, "ping_lost": int(ms // 10) - 1,
            "t_attach": t, "warmup": False, "attach_ms": 40.0, "hss_ms": 31.0,
            "messages": {"air": 4, "s1": 5, "s6a": 2}, "home_round_trips": 1}


def canned() -> dict[str, Any]:
    sessions = [{"mn": f"mn{i}", "address": f"10.64.{i}.10", "survived": True,
                 "recovery_ms": 120.0 + i, "timeline": [(-0.5, 0.1), (0.0, None), (0.2, 0.1)]}
                for i in (1, 2, 3)]
    dead = [{**s, "survived": False, "recovery_ms": None} for s in sessions]
    return {
        "scenario": "baseline", "topology": "figure2", "mn": "mn1", "anchor": "pgw",
        "home_rtt_ms": 30.0, "period_s": 2.0, "per_mode": 4, "elapsed_s": 321.0,
        "flat": {"modes": ["redirect", "draft"], "handoffs": 4, "interruption_ms_p50": 20.0,
                 "interruption_ms_p95": 97.5, "interruption_ms_p95_by_mode":
                 {"redirect": 21.5, "draft": 123.4}, "interruption_ms_p50_by_mode": {},
                 "path_stretch_mean": 1.0, "rtt_ms_mean": 0.111,
                 "home_round_trips_per_handoff": 0.25,
                 "messages_per_handoff": {"air": 2.0, "dns_queries": 3.0, "bgp_updates": 14.0,
                                          "ar_to_ar": 1.0},
                 "sessions_survived_failure": 3, "sessions_total": 3, "recovery_ms_max": 123.0,
                 "state_max_per_node": 2, "iperf": {"survived": True, "max_stall_ms": 200.0}},
        "anchored": {"handoffs": 2, "interruption_ms_p50": 55.0, "interruption_ms_p95": 66.6,
                     "path_stretch_mean": 1.4, "rtt_ms_mean": 0.222,
                     "home_round_trips_per_handoff": 1.0,
                     "messages_per_handoff": {"air": 4.0, "s1": 5.0, "s6a": 2.0},
                     "sessions_survived_failure": 0, "sessions_total": 3,
                     "recovery_ms_max": None, "state_max_per_node": 3, "attach_ms_p50": 40.0,
                     "hss_ms_p50": 31.0, "iperf": {"survived": True, "max_stall_ms": 300.0}},
        "handoffs": {"flat": [_handoff("redirect", 20.0, 1.0), _handoff("redirect", 21.5, 3.0),
                              _handoff("draft", 90.0, 5.0), _handoff("draft", 123.4, 7.0)],
                     "anchored": [_handoff("anchored", 55.0, 11.0),
                                  _handoff("anchored", 66.6, 13.0, "return-home")]},
        "warmup": {"flat": [], "anchored": []},
        "flat_summary": [{"mode": "redirect", "kind": "all", "n": 2, "interruption_ms_p50": 20.7,
                          "interruption_ms_p95": 21.5, "ping_lost": 2}],
        "stretch": [{"ar": "ar1", "anchor_distance": 3, "shortest_hops": 5, "flat_hops": 5,
                     "anchored_hops": 7, "flat_stretch": 1.0, "anchored_stretch": 1.4,
                     "flat_rtt_ms": 0.111, "anchored_rtt_ms": 0.222}],
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


def test_markdown_carries_the_run_numbers() -> None:
    md = report.render_markdown(canned(), MACHINE, {"cdf": "interruption-cdf.png"})
    assert "2030-01-02 03:04 UTC" in md and "Linux box 6.1.0 x86_64" in md and "2 CPUs" in md
    assert "| interruption p95 (ms), all flat modes | 97.50 | 66.60 |" in md
    assert "| interruption p95 (ms), flat draft only | 123.40 |  |" in md
    assert "| sessions surviving the failures | 3/3 | 0/3 |" in md
    assert "mn1 lost" in md and "mn1 121" in md
    assert "![interruption CDF, flat modes and anchored](interruption-cdf.png)" in md
    assert "*(path length and RTT per AR: not drawn)*" in md


def test_losses_name_where_flat_does_not_win() -> None:
    lost = report.losses(canned())
    text = "\n".join(lost)
    assert "draft mode" in text and "123.4" in text  # draft p95 above anchored p95
    assert "redirect mode" not in text  # 21.5 < 66.6: a win, not listed
    assert "Messages per handoff" in text  # 20 against 11
    assert "Home round trips" in text  # 0.25 DNS cache misses per handoff
    assert "State per node" not in text  # 2 < 3
    assert "Path stretch" not in text


def test_write_report_draws_every_plot(tmp_path: Path) -> None:
    path = report.write_report(canned(), tmp_path, machine=MACHINE)
    assert path == tmp_path / "evaluation.md"
    for png in ("anchored-handoff-timeline.png", "interruption-cdf.png", "path-stretch.png",
                "messages-per-handoff.png", "failure-timeline.png", "state.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
    assert (tmp_path / "evaluation.json").exists()
