"""`flatarch report`: the flat and anchored evaluation, one baseline run per distance (zero
delay and each of the topology's distance sets), written as one evaluation.md with its
plots; each raw run is kept under OUT/raw-DISTANCE and, with --reuse, analysed again instead
of measured again (so the runs can be taken one at a time)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from topologies.analysis.measure import MeasureError
from topologies.cli.common import add_topology
from topologies.cli.scenario import measure_then_analyse
from topologies.scenarios import registry
from topologies.scenarios.handoff import add_probe_interval

ORDER = 70
ZERO = "zero"  # the run without any link attribute


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rp = sub.add_parser("report", help="run the evaluation and write evaluation.md")
    rp.add_argument("--out", default="results")
    rp.add_argument("--markdown", help="where evaluation.md goes (default: in --out)")
    add_topology(rp)
    rp.add_argument("--distances", metavar="NAME,...",
                    help=f"the runs, side by side: {ZERO} and/or the topology's distance sets "
                    f"(default: {ZERO} and every set under its `distances:`)")
    rp.add_argument("--reuse", action="store_true",
                    help="analyse a distance's kept raw run instead of measuring it again")
    rp.add_argument("--handoffs", type=int, default=12, help="measured handoffs per mode")
    rp.add_argument("--period", type=float, default=2.0, help="seconds between handoffs")
    add_probe_interval(rp)
    rp.set_defaults(func=run, capture=None)


def distances(topology: str, given: str | None) -> list[str]:
    if given:
        return [d.strip() for d in given.split(",") if d.strip()]
    doc = yaml.safe_load(Path(topology).read_text())
    sets = doc.get("distances") if isinstance(doc, dict) else None
    return [ZERO, *(sorted(sets) if isinstance(sets, dict) else [])]


def run(args: argparse.Namespace) -> int:
    from topologies.analysis import report

    cls = registry.get("baseline")
    out = Path(args.out)
    results: dict[str, dict[str, Any]] = {}
    raws: dict[str, Path] = {}
    for name in distances(args.topology, args.distances):
        raw = raws[name] = out / f"raw-{name}"
        if args.reuse and (raw / "run.json").exists():
            try:
                results[name] = cls.analysed(raw)
                print(f"flatarch: {name}: the kept run in {raw}", file=sys.stderr)
                continue
            except (MeasureError, OSError, KeyError, ValueError) as exc:
                print(f"flatarch: {name}: measuring again ({exc})", file=sys.stderr)
        one = argparse.Namespace(**{**vars(args), "distance": None if name == ZERO else name})
        results[name] = measure_then_analyse(cls, one, raw)
        print(f"{name}:\n{cls.table(results[name])}")
    md = Path(args.markdown) if args.markdown else out / "evaluation.md"
    prefix = os.path.relpath(out, md.parent) + "/" if md.parent.resolve() != out.resolve() else ""
    path = report.write_report(results, out, raws=raws, prefix=prefix, markdown=md)
    print(f"wrote {path}")
    return 0
