"""`flatarch status`: per node of the running lab, daemons up, BGP sessions, OSPF, routes;
with `--engine kathara`, an exported lab's sessions and adjacencies (topologies/cli/kathara.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from topologies.cli import kathara
from topologies.cli.common import require_root, write_json
from topologies.lab import health
from topologies.lab.daemons import LabError, proc_comm, read_pid
from topologies.lab.lab import RUN_ROOT, attach

ORDER = 40


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    st = sub.add_parser("status", help="per-node daemons, sessions, routes")
    st.add_argument("--json")
    kathara.add_engine(st, "status", topology=True)
    st.set_defaults(func=run)


def _pid_alive(path: Path) -> int | None:
    pid = read_pid(path)
    return pid if pid is not None and proc_comm(pid) is not None else None


def run(args: argparse.Namespace) -> int:
    if kathara.on_kathara(args):
        return kathara.run_verb("status", args)
    require_root()
    state, execs = attach()
    base = RUN_ROOT / state["name"]
    out: dict[str, Any] = {"lab": state["name"], "nodes": {}}
    for name, ex in execs.items():
        rd = base / name
        info: dict[str, Any] = {
            "daemons": {
                d["kind"]: _pid_alive(Path(d["pid_file"])) is not None
                for d in state["daemons"] if d["node"] == name
            }
        }
        kinds = info["daemons"]
        try:
            if "ospfd" in kinds:
                info["ospf_full"] = health.ospf_full(ex, rd)
            if "bgpd" in kinds:
                info["bgp"] = health.bgp_peers(ex, rd)
            info["routes"] = len(ex.check(["ip", "-4", "route", "show"]).splitlines())
        except LabError as exc:
            info["error"] = str(exc)
        out["nodes"][name] = info
    for name, info in out["nodes"].items():
        daemons = " ".join(f"{k}{'' if v else '(DOWN)'}" for k, v in info["daemons"].items())
        bgp = info.get("bgp")
        bgp_s = f"bgp {sum(s == 'Established' for s in bgp.values())}/{len(bgp)}" if bgp else ""
        ospf = f"ospf {info['ospf_full']} full" if "ospf_full" in info else ""
        print(f"{name:<8} {daemons:<30} {bgp_s:<10} {ospf:<12} routes {info.get('routes', '?')}")
    write_json(args.json, out)
    return 0
