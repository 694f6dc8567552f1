"""The handoff scenario's walk and summary, from the topology alone (no lab)."""

from __future__ import annotations

from pathlib import Path

from topologies import model
from topologies.scenarios import base
from topologies.scenarios import handoff as scenario

ROOT = Path(__file__).resolve().parents[2]


def test_walk_covers_every_case_of_the_issue_and_ends_at_home() -> None:
    topo = model.load(ROOT / "topologies" / "figure2.yaml")
    steps = base.walk(topo, "mn1")
    assert [(s.to, s.kind, s.direct_link) for s in steps] == [
        ("ar2", "intra-cluster", False),
        ("ar3", "inter-cluster", True),  # across the direct AR-AR link (draft 2.2)
        ("ar5", "inter-cluster", False),
        ("ar1", "return-home", False),
    ]


def test_walk_on_a_topology_without_ar_links() -> None:
    topo = model.load(ROOT / "topologies" / "three_by_five.yaml")
    steps = base.walk(topo, "mn1")
    kinds = [s.kind for s in steps]
    assert kinds[0] == "intra-cluster" and kinds[-1] == "return-home"
    assert "inter-cluster" in kinds


def test_summary_rows_per_mode_and_kind() -> None:
    rows = scenario.summarise([
        {"mode": "redirect", "kind": "intra-cluster", "interruption_ms": v, "reroute_ms": 70.0,
         "auth_ms": 5.0, "ping_lost": 1, "core_updates": 0, "path_optimal": True}
        for v in (10.0, 20.0, 20.0, 30.0)
    ])
    intra = next(r for r in rows if r["kind"] == "intra-cluster")
    assert intra["n"] == 4 and intra["interruption_ms_p50"] == 20.0
    assert abs(intra["interruption_ms_p95"] - 28.5) < 1e-9
    assert intra["core_updates_max"] == 0 and intra["path_optimal"] == 4
    assert any(r["kind"] == "all" for r in rows)


def test_plan_starts_with_an_unmeasured_round_and_gives_each_mode_whole_round_trips() -> None:
    topo = model.load(ROOT / "topologies" / "figure2.yaml")
    sc = scenario.HandoffScenario.__new__(scenario.HandoffScenario)
    sc.topo, sc.mn, sc.modes, sc.per_mode = topo, "mn1", ["redirect", "draft"], 6
    sc.steps = base.walk(topo, "mn1")
    plan = sc.plan()
    assert [m for _, _, m in plan[:4]] == [False] * 4  # the warm-up round trip
    measured = [(mode, s.to) for mode, s, m in plan if m]
    assert len(measured) == 16  # 6 rounded up to two round trips of 4, per mode
    assert [mode for mode, _ in measured] == ["redirect"] * 8 + ["draft"] * 8
    assert measured[7][1] == measured[15][1] == "ar1"  # each mode ends at home


def test_plots_are_drawn_from_the_measurements(tmp_path: Path) -> None:
    from topologies.analysis import plots

    handoffs = [{"mode": m, "interruption_ms": v, "t_attach": 100.0 + i, "warmup": False}
                for i, (m, v) in enumerate([("redirect", 10.0), ("redirect", 20.0),
                                            ("draft", 80.0), ("draft", 90.0)])]
    timeline = [(100.0 + i * 0.01, None if i % 50 == 0 else 0.2) for i in range(500)]
    a = plots.handoff_timeline(timeline, handoffs, tmp_path / "t.png")
    b = plots.interruption_cdf(handoffs, tmp_path / "c.png")
    for f in (a, b):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 5000
