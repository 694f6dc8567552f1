"""`flatarch up`: build the lab, wait until healthy; keep it, open the CLI, or check it.
With `--engine kathara`, deploy an exported lab instead (topologies/cli/kathara.py)."""

from __future__ import annotations

import argparse
import signal

from topologies import model
from topologies.cli import kathara
from topologies.cli.common import add_topology, require_root, stop_on, write_json
from topologies.export.plan import ExportError
from topologies.lab.lab import Lab, stderr_progress

ORDER = 10


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser("up", help="build the lab and wait until healthy")
    add_topology(up)
    up.add_argument("--cli", action="store_true", help="open the Mininet CLI")
    up.add_argument("--check", action="store_true", help="verify health, tear down, exit 0/1")
    up.add_argument("--json")
    kathara.add_engine(up, "up")
    up.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if kathara.on_kathara(args):
        if args.cli or args.check:
            raise ExportError("--cli and --check are our own engine's: on Kathará, "
                              "`flatarch status --engine kathara` checks the lab")
        return kathara.run_verb("up", args)
    require_root()
    topo = model.load(args.topology)
    with Lab(topo) as lab:
        if args.check:
            h = lab.check_health()
            print(h.table())
            write_json(args.json, h.as_json())
            return 0 if h.healthy else 1
        if args.cli:
            from topologies.lab.mncli import LabCli

            LabCli(lab)
            return 0
        stderr_progress(f"lab {topo.name} is up; Ctrl-C to stop it")
        stop_on(signal.SIGINT, signal.SIGTERM)
        try:
            signal.pause()
        except KeyboardInterrupt:
            stderr_progress("stopping")
    return 0
