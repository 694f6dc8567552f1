"""`flatarch run`'s experiments in the Figure-2 lab with the real daemons (issue 21): the
shipped examples run green, their run directories analyse offline to the same result, and
an experiment whose check fails is reported failed, naming that check. One lab for all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.labs import figure2_lab
from topologies.cli import run as run_cli
from topologies.lab.lab import Lab
from topologies.scenarios import declared, experiment

EXAMPLES = Path(__file__).resolve().parents[2] / "topologies" / "experiments"
pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from figure2_lab()


def run(lab: Lab, path: Path, out: Path) -> dict[str, Any]:
    text = path.read_text()
    exp = experiment.parse(text, str(path), path.parent)
    return declared.DeclaredExperiment(lab, exp, text, out_dir=out).run()


def green(result: dict[str, Any]) -> None:
    assert result["failed"] == [], declared.table(result)


def test_the_figure2_walk(lab: Lab, tmp_path: Path) -> None:
    result = run(lab, EXAMPLES / "figure2-walk.yaml", tmp_path)
    green(result)
    walk = [(h["from"], h["to"], h["mode"]) for h in result["handoffs"]]
    assert walk == [(a, b, m) for m in ("redirect", "draft") for a, b in
                    [("ar1", "ar2"), ("ar2", "ar3"), ("ar3", "ar5"), ("ar5", "ar1")]]
    assert all(h["interruption_ms"] is not None for h in result["handoffs"])
    assert result["iperf"][0]["survived"], result["iperf"]
    assert (tmp_path / "timeline.png").stat().st_size > 0
    # The run directory is enough: the offline analysis gives the same result.
    again = declared.DeclaredExperiment.analysed(tmp_path)
    assert json.dumps(again, sort_keys=True, default=str) == json.dumps(
        result, sort_keys=True, default=str)


def test_a_failure_during_a_handoff(lab: Lab, tmp_path: Path) -> None:
    result = run(lab, EXAMPLES / "failure-during-handoff.yaml", tmp_path)
    green(result)
    verbs = [a["action"] for a in result["actions"] if a["verb"] in ("fault", "link")]
    assert verbs == ["fault kill bgpd agg2", "link ar3 agg2 down", "fault restart bgpd agg2",
                     "link ar3 agg2 up"]
    assert next(d for d in lab.daemons["agg2"] if d.kind == "bgpd").alive()
    udp = result["iperf"][0]  # the bystander's iperf3 UDP stream
    assert udp["proto"] == "udp" and udp["packets"] > 0 and udp["mean_mbps"] > 0, udp


def test_an_idle_mn_paged_across_its_tal(lab: Lab, tmp_path: Path) -> None:
    result = run(lab, EXAMPLES / "idle-paging.yaml", tmp_path)
    green(result)
    moves = [a for a in result["actions"] if a["verb"] == "handoff"]
    assert [m.get("idle") for m in moves[:2]] == [True, True]  # silent moves inside the TAL
    assert result["metrics"]["pages"] >= 1
    assert result["udp"][0]["received"] == 50


def test_a_failed_check_fails_the_run_and_is_named(lab: Lab, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "impossible.yaml"
    bad.write_text("topology: figure2\ntraffic:\n  - ping: {from: cn, to: mn1}\n"
                   "timeline:\n  - {at: 0.5s, do: handoff mn1 ar2}\n"
                   "  - {at: 2s, do: handoff mn1 ar1}\n"
                   "checks:\n  - reachable: [cn, mn1]\n  - interruption_ms_p95 < 0\n")
    result = run(lab, bad, tmp_path / "run")
    capsys.readouterr()
    assert run_cli.report(result, str(tmp_path / "r.json")) == 1
    err = capsys.readouterr().err
    assert "check failed (line 9): interruption_ms_p95 < 0" in err
    assert "reachable" not in err
    assert json.loads((tmp_path / "r.json").read_text())["failed"] == [
        "interruption_ms_p95 < 0"]
