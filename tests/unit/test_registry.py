"""Scenarios plug in through the registry alone: a scenario defined here (outside the
package) gets its own `flatarch scenario` sub-command and options, and `flatarch analyse`
finds it from a run directory's run.json; and every verb is its own module."""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest

from topologies import cli
from topologies.lab.lab import Lab
from topologies.scenarios import registry
from topologies.scenarios.base import RUN_FILE, TOPOLOGY_FILE, RunDir, Scenario

ROOT = Path(__file__).resolve().parents[2]


class DummyScenario(Scenario):
    name = "dummy"
    help = "a scenario that lives in a test"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--knob", type=int, default=3)

    @classmethod
    def from_args(cls, lab: Lab, args: argparse.Namespace, out_dir: Path) -> Self:
        raise AssertionError("not built in a unit test")

    @classmethod
    def analyse(cls, out_dir: Path) -> dict[str, Any]:
        run = RunDir.open(out_dir)
        return {"scenario": "dummy", "knob": run.params["knob"], "topology": run.topo.name}

    @staticmethod
    def table(result: dict[str, Any]) -> str:
        return f"knob {result['knob']}"


@pytest.fixture
def dummy() -> Iterator[type[DummyScenario]]:
    registry.register(DummyScenario)
    try:
        yield DummyScenario
    finally:
        registry.SCENARIOS.pop("dummy", None)


def test_the_five_scenarios_register_themselves() -> None:
    assert {"handoff", "idle", "macro", "addresses", "baseline"} <= set(registry.load())


def test_a_new_scenario_gets_its_sub_command_and_options(dummy: type[Scenario]) -> None:
    args = cli.build_parser().parse_args(["scenario", "dummy", "--knob", "7", "--out", "d"])
    assert args.name == "dummy" and args.knob == 7 and args.out == "d"
    assert registry.get("dummy") is dummy
    # The options are the scenario's own: handoff's do not leak into it, nor its into handoff.
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["scenario", "dummy", "--mode", "draft"])
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["scenario", "handoff", "--knob", "1"])


def test_analyse_finds_the_scenario_from_run_json(dummy: type[Scenario], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copyfile(ROOT / "topologies" / "figure2.yaml", tmp_path / TOPOLOGY_FILE)
    (tmp_path / RUN_FILE).write_text(json.dumps({"scenario": "dummy", "params": {"knob": 7}}))
    out = tmp_path / "a.json"
    assert cli.main(["analyse", str(tmp_path), "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == {"scenario": "dummy", "knob": 7,
                                           "topology": "figure2"}
    assert "knob 7" in capsys.readouterr().out


def test_analyse_of_a_directory_that_is_no_run_fails_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["analyse", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("flatarch: ") and "run.json" in err and "\n" not in err
    (tmp_path / RUN_FILE).write_text(json.dumps({"scenario": "nosuch"}))
    shutil.copyfile(ROOT / "topologies" / "figure2.yaml", tmp_path / TOPOLOGY_FILE)
    assert cli.main(["analyse", str(tmp_path)]) == 1
    assert "no scenario 'nosuch'" in capsys.readouterr().err


def test_every_verb_is_a_module() -> None:
    names = [m.__name__.rsplit(".", 1)[1] for m in cli.verbs()]
    assert names[:9] == ["up", "exec_", "capture", "down", "status", "scenario", "bench",
                         "report", "analyse"]
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["nosuchverb"])
    assert exc.value.code == 2


class SweepScenario(DummyScenario):
    """A scenario whose points are labs of their own (as the population's sizes)."""

    name = "dummysweep"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--knob", type=lambda s: [int(x) for x in s.split(",")])

    @classmethod
    def points(cls, args: argparse.Namespace) -> list[tuple[str, argparse.Namespace]]:
        return [(f"knob-{k}", argparse.Namespace(**{**vars(args), "knob": k}))
                for k in args.knob]

    @classmethod
    def combine(cls, out_dir: Path, results: list[tuple[str, dict[str, Any]]]
                ) -> dict[str, Any]:
        return {"scenario": "dummysweep", "knob": sum(r["knob"] for _, r in results),
                "points": [sub for sub, _ in results]}


def test_a_run_of_several_labs_is_a_run_directory_per_point_and_analysed_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from topologies.cli import scenario as verb

    registry.register(SweepScenario)
    measured: list[tuple[int, Path]] = []

    def fake_lab(cls: type[Scenario], args: argparse.Namespace, out: Path) -> dict[str, Any]:
        # What a lab's run leaves: a complete run directory of its own.
        measured.append((args.knob, out))
        out.mkdir(parents=True)
        shutil.copyfile(ROOT / "topologies" / "figure2.yaml", out / TOPOLOGY_FILE)
        (out / RUN_FILE).write_text(json.dumps({"scenario": "dummysweep", "complete": True,
                                                "params": {"knob": args.knob}}))
        return cls.analysed(out)

    monkeypatch.setattr(verb, "measure_then_analyse", fake_lab)
    try:
        out, first, again = tmp_path / "run", tmp_path / "a.json", tmp_path / "b.json"
        assert cli.main(["scenario", "dummysweep", "--knob", "2,5", "--out", str(out),
                         "--json", str(first)]) == 0
        assert measured == [(2, out / "knob-2"), (5, out / "knob-5")]
        assert json.loads(first.read_text()) == {"scenario": "dummysweep", "knob": 7,
                                                 "points": ["knob-2", "knob-5"]}
        assert cli.main(["analyse", str(out), "--json", str(again)]) == 0
        assert again.read_text() == first.read_text()
        assert capsys.readouterr().out.count("knob 7") == 2
    finally:
        registry.SCENARIOS.pop("dummysweep", None)
