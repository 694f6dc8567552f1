"""The `flatarch` command: the parser and `main`; each verb is a module of this package
(up, exec_, down, status, scenario, bench, report, analyse, ...) with `add_parser` and `run`.

Only this package exits; library code raises LabError (or another typed error) and `main`
turns it into a one-line reason on stderr and a non-zero status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from types import ModuleType

from topologies import model
from topologies.analysis.measure import MeasureError
from topologies.cli.common import Parser
from topologies.lab.daemons import LabError


def verbs() -> list[ModuleType]:
    """Every verb module of the package (one with `add_parser`), in help order."""
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "common":
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if callable(getattr(mod, "add_parser", None)):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="flatarch", description="flat-architecture mobility lab")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="verb", required=True, parser_class=Parser)
    for mod in verbs():
        mod.add_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except (LabError, model.TopologyError, MeasureError) as exc:
        print(f"flatarch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flatarch: interrupted", file=sys.stderr)
        return 130
