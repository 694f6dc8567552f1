"""`flatarch kathara up|status|handoff|down --lab DIR`, and `--engine kathara` on `flatarch
up|status|down`: the verbs that make sense on a lab exported with `flatarch export kathara`,
driven through Kathará's API (Docker, or Kubernetes through Megalos), one implementation
for both spellings. Scenarios, benches, captures and link shaping stay on our own engine."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from topologies import model
from topologies.cli.common import add_topology, write_json
from topologies.export.katharalab import KatharaLab, kathara_errors
from topologies.export.plan import IMAGE, ExportError
from topologies.lab.daemons import DeadlineError, wait_until
from topologies.lab.lab import stderr_progress

ORDER = 85
ENGINES = ("mininet", "kathara")
VERBS = {"up": "deploy, wait until converged, attach every MN at home",
         "status": "BGP sessions and OSPF adjacencies",
         "handoff": "move an MN to another cell (a runtime re-link)",
         "down": "undeploy"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kp = sub.add_parser("kathara", help="run an exported lab on Kathará: up, status, handoff, down")
    verbs = kp.add_subparsers(dest="kverb", required=True, parser_class=type(kp))
    for name, what in VERBS.items():
        p = verbs.add_parser(name, help=what)
        add_topology(p)
        p.add_argument("--lab", required=True, type=Path, help="the exported lab directory")
        _add_lab_options(p, name)
        p.add_argument("--json")
        if name == "handoff":
            p.add_argument("mn")
            p.add_argument("ar")
        p.set_defaults(func=run)


def _add_lab_options(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument("--image", default=IMAGE, help="the image the exported lab's devices run")
    if verb == "up":
        p.add_argument("--timeout", type=float, default=300.0,
                       help="seconds to wait for OSPF and BGP to converge")
        p.add_argument("--attach", metavar="MN[,MN...]",
                       help="the MNs to attach at home (default: every MN of the topology)")
    if verb == "status":
        p.add_argument("--wait", type=float, default=0.0, metavar="S",
                       help="poll up to S seconds for every session and adjacency to be up "
                       "(default: one snapshot); the JSON says how long it waited")


def add_engine(p: argparse.ArgumentParser, verb: str, topology: bool = False) -> None:
    """`--engine` on one of our engine's verbs, with the Kathará lab's options; with
    ``topology``, the verb has no --topology of its own and gets one."""
    p.add_argument("--engine", choices=ENGINES, default="mininet",
                   help="mininet: our own engine; kathara: a lab `flatarch export kathara` "
                   "wrote (with --lab), through Kathará's API")
    p.add_argument("--lab", type=Path, help="with --engine kathara: the exported lab directory")
    if topology:
        add_topology(p)
    _add_lab_options(p, verb)


def on_kathara(args: argparse.Namespace) -> bool:
    """Whether a verb of our engine was asked for Kathará; our engine refuses --lab."""
    if args.engine == "kathara":
        return True
    if args.lab is not None:
        raise ExportError("--lab names an exported lab: add --engine kathara")
    return False


def run(args: argparse.Namespace) -> int:
    return run_verb(args.kverb, args)


def run_verb(verb: str, args: argparse.Namespace) -> int:
    """One verb on the exported lab ``args.lab``; `flatarch kathara VERB` and `flatarch
    VERB --engine kathara` both come here."""
    if args.lab is None:
        raise ExportError("--engine kathara needs --lab DIR, a directory that "
                          "`flatarch export kathara --out DIR` wrote")
    if not (args.lab / "lab.conf").is_file():
        raise ExportError(f"{args.lab} holds no lab.conf: export the lab first "
                          f"(flatarch export kathara --out {args.lab})")
    topo = model.load(args.topology)
    with kathara_errors():
        return _run(verb, KatharaLab(topo, args.lab, args.image), args)


def _run(verb: str, lab: KatharaLab, args: argparse.Namespace) -> int:
    if verb == "up":
        return _up(lab, args)
    if verb == "status":
        t0 = time.monotonic()
        first = routing = lab.routing()
        deadline = t0 + args.wait
        while not routing.converged and time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            routing = lab.routing()
        print(routing.line())
        write_json(args.json, {**asdict(routing), "converged": routing.converged,
                               "waited_s": round(time.monotonic() - t0, 1),
                               "first": asdict(first)})
        return 0 if routing.converged else 1
    if verb == "handoff":
        answer = lab.handoff(args.mn, args.ar)
        print(json.dumps(answer, indent=1, sort_keys=True))
        write_json(args.json, answer)
        return 0 if answer.get("ok") else 1
    lab.undeploy()
    stderr_progress(f"undeployed {lab.topo.name}")
    return 0


def _up(lab: KatharaLab, args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    lab.deploy()
    times: dict[str, Any] = {"deploy_s": round(time.monotonic() - t0, 1)}
    stderr_progress(f"deployed {lab.topo.name}; waiting for OSPF and BGP")
    try:
        wait_until(lambda: lab.routing().converged, args.timeout, "OSPF and BGP to converge",
                   1.0)
    except DeadlineError as exc:
        raise ExportError(f"{exc}: {lab.routing().line()}") from None
    times["converged_s"] = round(time.monotonic() - t0, 1)
    answers = {}
    mobiles = args.attach.split(",") if args.attach else list(lab.topo.mobiles)
    for mn in mobiles:
        home = lab.topo.mobile(mn).home
        def attached(mn: str = mn, home: str = home) -> bool:
            return bool(lab.attach(mn, home).get("ok"))

        wait_until(attached, 60, f"{mn} to authenticate at {home}", 1.0)
        answers[mn] = home
    times["attached_s"] = round(time.monotonic() - t0, 1)
    routing = lab.routing()
    print(routing.line())
    write_json(args.json, {**asdict(routing), "attached": answers, **times})
    return 0
