"""`--engine kathara` on `flatarch up|status|down` and `flatarch kathara ...` are one
implementation over topologies/export/katharalab.py, and a wrong command line is refused
with a reason before anything is deployed (no root, no Docker: the lab is a stand-in)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from topologies.cli import kathara as cli_kathara
from topologies.cli import main
from topologies.export.katharalab import Routing
from topologies.model import Topology

CALLS: list[tuple[str, ...]] = []


class StandInLab:
    """What the verbs ask of KatharaLab, recorded."""

    def __init__(self, topo: Topology, labdir: Path, image: str) -> None:
        self.topo = topo
        CALLS.append(("open", labdir.name, image))

    def deploy(self) -> None:
        CALLS.append(("deploy",))

    def undeploy(self) -> None:
        CALLS.append(("undeploy",))

    def routing(self) -> Routing:
        return Routing(40, 40, 56, 56)

    def attach(self, mn: str, ar: str) -> dict[str, Any]:
        CALLS.append(("attach", mn, ar))
        return {"ok": True}


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cli_kathara, "KatharaLab", StandInLab)
    CALLS.clear()
    (tmp_path / "lab.conf").write_text("")
    return tmp_path


@pytest.mark.parametrize("verb", ["up", "status", "down"])
def test_engine_kathara_and_the_kathara_verb_do_the_same(lab: Path, verb: str) -> None:
    assert main([verb, "--engine", "kathara", "--lab", str(lab)]) == 0
    via_engine = list(CALLS)
    CALLS.clear()
    assert main(["kathara", verb, "--lab", str(lab)]) == 0
    assert via_engine == CALLS
    expected = {"up": ("deploy",), "status": None, "down": ("undeploy",)}[verb]
    assert expected is None or expected in via_engine


def test_up_attaches_every_mn_at_home_and_reports_its_times(lab: Path, tmp_path: Path) -> None:
    out = tmp_path / "up.json"
    assert main(["up", "--engine", "kathara", "--lab", str(lab), "--json", str(out)]) == 0
    assert ("attach", "mn1", "ar1") in CALLS
    report = json.loads(out.read_text())
    assert report["attached"]["mn1"] == "ar1" and report["bgp_established"] == 40
    assert 0 <= report["deploy_s"] <= report["converged_s"] <= report["attached_s"]
    CALLS.clear()
    assert main(["up", "--engine", "kathara", "--lab", str(lab), "--attach", "mn2"]) == 0
    assert [c for c in CALLS if c[0] == "attach"] == [("attach", "mn2", "ar2")]


@pytest.mark.parametrize("argv, reason", [
    (["up", "--engine", "kathara"], "needs --lab DIR"),
    (["down", "--engine", "kathara", "--lab", "{empty}"], "holds no lab.conf"),
    (["status", "--lab", "{lab}"], "add --engine kathara"),
    (["up", "--engine", "kathara", "--lab", "{lab}", "--cli"], "our own engine's"),
])
def test_a_wrong_command_line_is_refused_before_any_deploy(
        lab: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
        reason: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [a.format(lab=lab, empty=empty) for a in argv]
    assert main(argv) == 1
    assert reason in capsys.readouterr().err
    assert ("deploy",) not in CALLS and ("undeploy",) not in CALLS


class KatharaFailure(Exception):
    """An error as Kathará raises it (its exceptions share no base class)."""


KatharaFailure.__module__ = "Kathara.exceptions"


def test_an_error_kathara_raises_is_one_line_and_an_error_of_ours_is_not_hidden(
        lab: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def fails(self: StandInLab) -> Routing:
        raise KatharaFailure("Cannot connect to Docker Daemon")

    monkeypatch.setattr(StandInLab, "routing", fails)
    assert main(["status", "--engine", "kathara", "--lab", str(lab)]) == 1
    assert "Kathará: KatharaFailure: Cannot connect to Docker Daemon" in capsys.readouterr().err

    def bug(self: StandInLab) -> Routing:
        raise KeyError("ours")

    monkeypatch.setattr(StandInLab, "routing", bug)
    with pytest.raises(KeyError):  # a bug of ours keeps its traceback
        main(["status", "--engine", "kathara", "--lab", str(lab)])
