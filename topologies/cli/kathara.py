"""`flatarch kathara up|status|handoff|down --lab DIR`: the verbs that make sense on a lab
exported with `flatarch export kathara`, driven through Kathará's API (Docker, or Kubernetes
through Megalos). Scenarios, benches, captures and link shaping stay on our own engine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from topologies import model
from topologies.cli.common import add_topology, write_json
from topologies.export.katharalab import KatharaLab
from topologies.export.plan import IMAGE, ExportError
from topologies.lab.daemons import DeadlineError, wait_until
from topologies.lab.lab import stderr_progress

ORDER = 85


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kp = sub.add_parser("kathara", help="run an exported lab on Kathará: up, status, handoff, down")
    verbs = kp.add_subparsers(dest="kverb", required=True, parser_class=type(kp))
    for name, what in (("up", "deploy, wait until converged, attach every MN at home"),
                       ("status", "BGP sessions and OSPF adjacencies"),
                       ("handoff", "move an MN to another cell (a runtime re-link)"),
                       ("down", "undeploy")):
        p = verbs.add_parser(name, help=what)
        add_topology(p)
        p.add_argument("--lab", required=True, type=Path, help="the exported lab directory")
        p.add_argument("--image", default=IMAGE)
        p.add_argument("--json")
        if name == "up":
            p.add_argument("--timeout", type=float, default=300.0)
        if name == "handoff":
            p.add_argument("mn")
            p.add_argument("ar")
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    topo = model.load(args.topology)
    lab = KatharaLab(topo, args.lab, args.image)
    if args.kverb == "up":
        return _up(lab, args)
    if args.kverb == "status":
        routing = lab.routing()
        print(routing.line())
        write_json(args.json, {**routing.__dict__, "converged": routing.converged})
        return 0 if routing.converged else 1
    if args.kverb == "handoff":
        answer = lab.handoff(args.mn, args.ar)
        print(json.dumps(answer, indent=1, sort_keys=True))
        write_json(args.json, answer)
        return 0 if answer.get("ok") else 1
    lab.undeploy()
    return 0


def _up(lab: KatharaLab, args: argparse.Namespace) -> int:
    lab.deploy()
    stderr_progress(f"deployed {lab.topo.name}; waiting for OSPF and BGP")
    try:
        wait_until(lambda: lab.routing().converged, args.timeout, "OSPF and BGP to converge",
                   1.0)
    except DeadlineError as exc:
        raise ExportError(f"{exc}: {lab.routing().line()}") from None
    answers = {}
    for mn in lab.topo.mobiles:
        home = lab.topo.mobile(mn).home
        def attached(mn: str = mn, home: str = home) -> bool:
            return bool(lab.attach(mn, home).get("ok"))

        wait_until(attached, 60, f"{mn} to authenticate at {home}", 1.0)
        answers[mn] = home
    routing = lab.routing()
    print(routing.line())
    write_json(args.json, {**routing.__dict__, "attached": answers})
    return 0
