"""`flatarch exec NODE -- CMD...`: a command inside a node of the running lab, its status."""

from __future__ import annotations

import argparse
import subprocess

from topologies.cli.common import require_root
from topologies.lab.daemons import LabError
from topologies.lab.lab import attach

ORDER = 20


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ex = sub.add_parser("exec", help="run a command inside a node of the running lab")
    ex.add_argument("node")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    ex.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_root()
    _, execs = attach()
    if args.node not in execs:
        raise LabError(f"no node {args.node!r} (nodes: {', '.join(sorted(execs))})")
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise LabError("give a command after --")
    return subprocess.call(execs[args.node].argv(cmd))
