"""The `flatarch` command: up, exec, down, status, bench, scenario, report.

Only this module exits; library code raises LabError (or another typed error) and the
verbs turn it into a one-line reason on stderr and a non-zero status.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from topologies import model
from topologies.lab import health
from topologies.lab.daemons import LabError, proc_comm, read_pid
from topologies.lab.lab import RUN_ROOT, Lab, attach, stderr_progress, teardown_all

DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[1] / "figure2.yaml"


def _write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("this verb builds network namespaces and needs root (use sudo)")


def cmd_up(args: argparse.Namespace) -> int:
    _require_root()
    topo = model.load(args.topology)
    with Lab(topo) as lab:
        if args.check:
            h = lab.check_health()
            print(h.table())
            _write_json(args.json, h.as_json())
            return 0 if h.healthy else 1
        if args.cli:
            from topologies.lab.mncli import LabCli

            LabCli(lab)
            return 0
        stderr_progress(f"lab {topo.name} is up; Ctrl-C to stop it")
        # A shell that backgrounds us may have set SIGINT to ignored; take both signals back.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            signal.pause()
        except KeyboardInterrupt:
            stderr_progress("stopping")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    _require_root()
    for line in teardown_all():
        print(line)
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    _require_root()
    _, execs = attach()
    if args.node not in execs:
        raise LabError(f"no node {args.node!r} (nodes: {', '.join(sorted(execs))})")
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise LabError("give a command after --")
    return subprocess.call(execs[args.node].argv(cmd))


def cmd_status(args: argparse.Namespace) -> int:
    _require_root()
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
    _write_json(args.json, out)
    return 0


def _pid_alive(path: Path) -> int | None:
    pid = read_pid(path)
    return pid if pid is not None and proc_comm(pid) is not None else None


def bench_dns(args: argparse.Namespace) -> int:
    """Validated key-lookup latency through the lab's Unbound, cold and cached."""
    _require_root()
    topo = model.load(args.topology)
    with Lab(topo) as lab:
        if lab.dns is None:
            raise LabError(f"topology {topo.name} has no dns service")
        client = topo.by_role(model.Role.AR)[0].name
        names = [lab.dns.identity_name("mn", m) for m in topo.mobiles]
        names += [lab.dns.identity_name("ar", a.name) for a in topo.by_role(model.Role.AR)]
        stderr_progress(f"resolving {len(names)} key names from {client}, {args.rounds} rounds")
        res = lab.dns.bench_resolution(lab.execs[client], names, rounds=args.rounds)
    for k, v in sorted(res.items()):
        if isinstance(v, int | float):
            print(f"{k:<26} {v:>12.2f}")
    _write_json(args.json, res)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "dns":
        return bench_dns(args)
    if args.what == "links":
        from topologies.lab import linkbench

        _require_root()
        res = linkbench.run(args.delay_ms, [args.pps] if args.pps else linkbench.POINTS_PPS,
                            progress=stderr_progress)
        print(linkbench.table(res))
        _write_json(args.json, res)
        return 0
    if args.what != "auth":
        raise LabError(f"unknown benchmark {args.what!r} (auth, dns, links)")
    from agents.auth.bench import run_bench

    res = run_bench(progress=stderr_progress)
    for k in ("openssl_p256_ecdh_per_s", "cold_per_s", "warm_per_s", "udp_warm_per_s"):
        print(f"{k:<26} {res[k]:>12,.0f}")
    ref = res["openssl_p256_ecdh_per_s"]
    if ref:
        print(f"{'cold / openssl ECDH':<26} {res['cold_per_s'] / ref:>12.2f}")
    _write_json(args.json, res)
    return 0


def _scenario_runner(name: str, args: argparse.Namespace, lab: Lab
                     ) -> tuple[Any, Callable[[dict[str, Any]], str]]:
    """The scenario object for ``name``, built from the command line, and its table."""
    out = Path(args.out) if args.out else None
    if name == "baseline":
        from topologies.scenarios import baseline as sb
        return sb.BaselineScenario(lab, per_mode=args.handoffs, period_s=args.period,
                                   home_rtt_ms=args.home_rtt_ms, out_dir=out), sb.table
    if name == "idle":
        from topologies.scenarios import idle as si
        return si.IdleScenario(lab, rounds=args.rounds, burst=args.burst, out_dir=out), si.table
    if name == "macro":
        from topologies.scenarios import macro as sm
        return sm.MacroScenario(lab, rounds=args.rounds, out_dir=out), sm.table
    if name == "addresses":
        from topologies.scenarios import addresses as sa
        return sa.AddressesScenario(lab, out_dir=out), sa.table
    from topologies.scenarios import handoff as sh
    modes = ["redirect", "draft"] if args.mode == "both" else [args.mode]
    return sh.HandoffScenario(lab, modes=modes, per_mode=args.handoffs, period_s=args.period,
                              out_dir=out), sh.table


SCENARIOS = ("handoff", "idle", "addresses", "macro", "baseline")


def cmd_scenario(args: argparse.Namespace) -> int:
    if args.name not in SCENARIOS:
        raise LabError(f"scenario {args.name!r} is not implemented yet (available: "
                       f"{', '.join(SCENARIOS)})")
    _require_root()
    topo = model.load(args.topology)
    with Lab(topo) as lab:
        runner, table = _scenario_runner(args.name, args, lab)
        result = runner.run()
    print(table(result))
    if not args.out and result.get("plots"):
        print("plots were drawn in the lab's run directory, now removed; keep them with --out",
              file=sys.stderr)
    _write_json(args.json, result)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The flat and anchored evaluation in one run, written as evaluation.md with plots."""
    _require_root()
    from topologies.analysis import report
    from topologies.scenarios import baseline as scenario_baseline

    topo = model.load(args.topology)
    out = Path(args.out)
    raw = out / "raw"
    with Lab(topo) as lab:
        result = scenario_baseline.BaselineScenario(
            lab, per_mode=args.handoffs, period_s=args.period, home_rtt_ms=args.home_rtt_ms,
            out_dir=raw).run()
    md = Path(args.markdown) if args.markdown else out / "evaluation.md"
    prefix = os.path.relpath(out, md.parent) + "/" if md.parent.resolve() != out.resolve() else ""
    path = report.write_report(result, out, raw=raw, prefix=prefix, markdown=md)
    print(scenario_baseline.table(result))
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="flatarch", description="flat-architecture mobility lab")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="verb", required=True)
    up = sub.add_parser("up", help="build the lab and wait until healthy")
    up.add_argument("--topology", default=str(DEFAULT_TOPOLOGY))
    up.add_argument("--cli", action="store_true", help="open the Mininet CLI")
    up.add_argument("--check", action="store_true", help="verify health, tear down, exit 0/1")
    up.add_argument("--json")
    up.set_defaults(func=cmd_up)
    ex = sub.add_parser("exec", help="run a command inside a node of the running lab")
    ex.add_argument("node")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_exec)
    dn = sub.add_parser("down", help="stop everything this tool started")
    dn.set_defaults(func=cmd_down)
    st = sub.add_parser("status", help="per-node daemons, sessions, routes")
    st.add_argument("--json")
    st.set_defaults(func=cmd_status)
    sc = sub.add_parser("scenario", help="run a scripted experiment")
    sc.add_argument("name", metavar="NAME", help=f"one of: {', '.join(SCENARIOS)}")
    sc.add_argument("--topology", default=str(DEFAULT_TOPOLOGY))
    sc.add_argument("--mode", default="both", choices=["redirect", "draft", "both"])
    sc.add_argument("--handoffs", type=int, default=20, help="handoffs per mode (at least)")
    sc.add_argument("--period", type=float, default=2.0, help="seconds between handoffs")
    sc.add_argument("--out", help="keep the raw files (ping, iperf3, agents' and bgpd's logs)")
    sc.add_argument("--rounds", type=int, default=5,
                    help="idle: pages to measure; macro: leave-and-return rounds")
    sc.add_argument("--burst", type=int, default=50, help="idle: packets sent to the idle MN")
    sc.add_argument("--home-rtt-ms", type=float, default=30.0,
                    help="baseline: round trip to the home network's HSS (emulated)")
    sc.add_argument("--json")
    sc.set_defaults(func=cmd_scenario)
    be = sub.add_parser("bench", help="micro-benchmarks")
    be.add_argument("what", help="auth (no root) or dns (brings up the lab)")
    be.add_argument("--json")
    be.add_argument("--topology", default=str(DEFAULT_TOPOLOGY))
    be.add_argument("--rounds", type=int, default=20)
    be.add_argument("--delay-ms", type=float, default=10.0, help="links: configured delay")
    be.add_argument("--pps", type=int, help="links: one rate instead of 100, 1,000, 10,000")
    be.set_defaults(func=cmd_bench)
    rp = sub.add_parser("report", help="run the evaluation and write evaluation.md")
    rp.add_argument("--out", default="results")
    rp.add_argument("--markdown", help="where evaluation.md goes (default: in --out)")
    rp.add_argument("--topology", default=str(DEFAULT_TOPOLOGY))
    rp.add_argument("--handoffs", type=int, default=12, help="measured handoffs per mode")
    rp.add_argument("--period", type=float, default=2.0, help="seconds between handoffs")
    rp.add_argument("--home-rtt-ms", type=float, default=30.0,
                    help="round trip to the home network's HSS (emulated)")
    rp.set_defaults(func=cmd_report)
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
    except (LabError, model.TopologyError) as exc:
        print(f"flatarch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flatarch: interrupted", file=sys.stderr)
        return 130

