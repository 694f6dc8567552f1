"""`flatarch down`: stop everything this tool started and remove its namespaces and links;
with `--engine kathara`, undeploy an exported lab (topologies/cli/kathara.py)."""

from __future__ import annotations

import argparse

from topologies.cli import kathara
from topologies.cli.common import require_root
from topologies.lab.lab import teardown_all

ORDER = 30


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dn = sub.add_parser("down", help="stop everything this tool started")
    kathara.add_engine(dn, "down", topology=True)
    dn.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if kathara.on_kathara(args):
        return kathara.run_verb("down", args)
    require_root()
    for line in teardown_all():
        print(line)
    return 0
