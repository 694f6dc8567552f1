"""`flatarch bench auth|dns|flood|links|update`: the authentication micro-benchmarks (no
root), the validated key lookup through the lab's Unbound (brings the lab up),
authentication under floods at the AR (namespaces of its own), and an AR agent's CPU per
reflected UPDATE (no root). Each prints a table and writes JSON."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from topologies import model
from topologies.analysis.stats import percentile
from topologies.cli.common import add_topology, require_root, write_json
from topologies.lab.daemons import LabError
from topologies.lab.lab import Lab, stderr_progress

ORDER = 60


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    be = sub.add_parser("bench", help="micro-benchmarks")
    be.add_argument("what", choices=sorted(BENCHES), help="auth or update (no root), dns (brings "
                    "up the lab), flood or links (root, namespaces of their own)")
    be.add_argument("--json")
    add_topology(be)
    be.add_argument("--rounds", type=int, default=20, help="dns: lookups per name")
    be.add_argument("--pps", type=int, help="flood: packets per second (default 100,000); "
                    "links: one rate instead of 100, 1,000 and 10,000")
    be.add_argument("--delay-ms", type=float, default=10.0, help="links: configured delay")
    be.add_argument("--sources", type=int, default=8000, help="flood: spoofed sources")
    be.add_argument("--mobiles", type=int, default=1000, help="update: host routes held")
    be.add_argument("--handoffs", type=int, default=500, help="update: moves measured")
    be.add_argument("--burst", type=int, default=1, help="update: lines per turn of the loop")
    be.add_argument("--profile", action="store_true", help="update: print cProfile's top")
    be.set_defaults(func=run)


def summarise_latency(res: dict[str, Any]) -> dict[str, Any]:
    """p50 and p95 of each list of samples (``<what>_ms``), by the one percentile."""
    out = dict(res)
    for key in ("cold_ms", "cached_ms"):
        if key in res:
            out[f"{key}_p50"] = round(percentile(res[key], 0.5), 3)
            out[f"{key}_p95"] = round(percentile(res[key], 0.95), 3)
    return out


def bench_dns(args: argparse.Namespace) -> int:
    """Validated key-lookup latency through the lab's Unbound, cold and cached."""
    require_root()
    topo = model.load(args.topology)
    with Lab(topo) as lab:
        if lab.dns is None:
            raise LabError(f"topology {topo.name} has no dns service")
        client = topo.by_role(model.Role.AR)[0].name
        names = [lab.dns.identity_name("mn", m) for m in topo.mobiles]
        names += [lab.dns.identity_name("ar", a.name) for a in topo.by_role(model.Role.AR)]
        stderr_progress(f"resolving {len(names)} key names from {client}, {args.rounds} rounds")
        res = summarise_latency(lab.dns.bench_resolution(lab.execs[client], names,
                                                         rounds=args.rounds))
    for k, v in sorted(res.items()):
        if isinstance(v, int | float):
            print(f"{k:<26} {v:>12.2f}")
    write_json(args.json, res)
    return 0


def bench_flood(args: argparse.Namespace) -> int:
    """Legitimate AUTH success and latency under floods at the AR (issue 19)."""
    require_root()
    from topologies.lab.floodbench import FloodConfig, format_table, run_flood_bench

    res = run_flood_bench(FloodConfig(pps=args.pps or 100_000, sources=args.sources),
                          stderr_progress)
    print(format_table(res))
    write_json(args.json, res)
    return 0


def bench_links(args: argparse.Namespace) -> int:
    """Configured against measured delay, jitter, loss and rate of an emulated link."""
    require_root()
    from topologies.lab import linkbench

    res = linkbench.run(args.delay_ms, [args.pps] if args.pps else linkbench.POINTS_PPS,
                        progress=stderr_progress)
    print(linkbench.table(res))
    write_json(args.json, res)
    return 0


def bench_auth(args: argparse.Namespace) -> int:
    from agents.auth.bench import run_bench

    res = run_bench(progress=stderr_progress)
    for k in ("openssl_p256_ecdh_per_s", "cold_per_s", "warm_per_s", "udp_warm_per_s"):
        print(f"{k:<26} {res[k]:>12,.0f}")
    ref = res["openssl_p256_ecdh_per_s"]
    if ref:
        print(f"{'cold / openssl ECDH':<26} {res['cold_per_s'] / ref:>12.2f}")
    write_json(args.json, res)
    return 0


def bench_update(args: argparse.Namespace) -> int:
    """CPU per reflected UPDATE at an AR agent not in the handoff (issue 15), no root."""
    from agents.arbench import BenchConfig, format_table, run_bench

    res = run_bench(BenchConfig(mobiles=args.mobiles, handoffs=args.handoffs,
                                burst=max(1, args.burst), profile=args.profile),
                    stderr_progress)
    print(format_table(res))
    for key in ("profile_loop", "profile_fib"):
        if key in res:
            print(f"\n{key}:\n{res.pop(key)}")
    write_json(args.json, res)
    return 0


BENCHES: dict[str, Callable[[argparse.Namespace], int]] = {
    "auth": bench_auth, "dns": bench_dns, "flood": bench_flood, "links": bench_links,
    "update": bench_update,
}


def run(args: argparse.Namespace) -> int:
    return BENCHES[args.what](args)
