"""`flatarch run`'s experiments in the Figure-2 lab with the real daemons (issue 21): the
shipped examples run green, their run directories analyse offline to the same result, and
`flatarch run` of an experiment whose check fails exits 1 naming that check. One lab for the
examples.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.labs import figure2_lab
from topologies.lab.lab import Lab
from topologies.scenarios import declared, experiment

EXAMPLES = Path(__file__).resolve().parents[2] / "topologies" / "experiments"
pytestmark = pytest.mark.root


IMPOSSIBLE = """\
topology: figure2
traffic:
  - ping: {from: cn, to: mn1}
timeline:
  - {at: 0.5s, do: handoff mn1 ar2}
  - {at: 2s, do: handoff mn1 ar1}
checks:
  - reachable: [cn, mn1]
  - interruption_ms_p95 < 0
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from figure2_lab()


def test_flatarch_run_exits_1_naming_the_failed_check(tmp_path: Path) -> None:
    """The whole verb, first (before the module's lab holds the machine): its own lab, a
    capture, the table, the JSON, exit 1 naming only the failed check; then the offline
    analysis of its run directory."""
    bad = tmp_path / "impossible.yaml"
    bad.write_text(IMPOSSIBLE)
    out = tmp_path / "run"
    flatarch = [sys.executable, "-m", "topologies.cli"]
    res = subprocess.run([*flatarch, "run", str(bad), "--out", str(out), "--json",
                          str(tmp_path / "r.json"), "--capture", "ar2"],
                         capture_output=True, text=True, timeout=400, cwd=EXAMPLES.parents[1])
    assert res.returncode == 1, res.stderr[-2000:]
    p95 = json.loads((tmp_path / "r.json").read_text())["metrics"]["interruption_ms_p95"]
    failed = [ln for ln in res.stderr.splitlines() if "check failed" in ln]
    assert failed == [f"flatarch: check failed (line 9): interruption_ms_p95 < 0: {p95:g}"]
    assert "PASS  line   8  reachable: [cn, mn1]" in res.stdout
    assert (out / "pcap" / "ar2.pcap").stat().st_size > 24  # more than the pcap header
    again = subprocess.run([*flatarch, "analyse", str(out)], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0 and "FAIL  line   9  interruption_ms_p95 < 0" in again.stdout


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
