"""`flatarch export kathara|containerlab`: write the lab for an engine that spans hosts
(topologies/export/); its configs and keys are rendered and dry-run as for `up`, which
needs root (FRR's files belong to frr) but builds no namespace."""

from __future__ import annotations

import argparse
from pathlib import Path

from topologies import model
from topologies.cli.common import add_topology, require_root
from topologies.export import containerlab, kathara
from topologies.export.plan import IMAGE, build_plan

ORDER = 80


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ex = sub.add_parser("export", help="write the lab for Kathará or containerlab")
    engines = ex.add_subparsers(dest="engine", required=True, parser_class=type(ex))
    for name, what in (("kathara", "a Kathará lab: lab.conf, device dirs, startups, image"),
                       ("containerlab", "a *.clab.yml and the configs it binds")):
        p = engines.add_parser(name, help=what)
        add_topology(p)
        p.add_argument("--out", required=True, type=Path)
        p.add_argument("--image", default=IMAGE, help=f"the nodes' image (default {IMAGE})")
        p.add_argument("--no-configs", action="store_true",
                       help="only the engine's files, not the rendered configs and keys")
        if name == "containerlab":
            p.add_argument("--split", help="NAME@ADDRESS=node,node;...: one file per host, "
                                           "vxlan-stitch links between hosts")
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.no_configs:
        require_root()
    topo = model.load(args.topology)
    plan = build_plan(topo)
    plan.image = args.image
    if args.engine == "kathara":
        written = kathara.export(topo, plan, args.out, configs=not args.no_configs)
    else:
        written = containerlab.export(topo, plan, args.out, args.split,
                                      configs=not args.no_configs)
    for path in written:
        print(path)
    return 0
