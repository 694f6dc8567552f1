"""`flatarch bench auth|dns`: the authentication micro-benchmarks (no root) and the validated
key lookup through the lab's Unbound (brings the lab up)."""

from __future__ import annotations

import argparse

from topologies import model
from topologies.cli.common import add_topology, require_root, write_json
from topologies.lab.daemons import LabError
from topologies.lab.lab import Lab, stderr_progress

ORDER = 60


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    be = sub.add_parser("bench", help="micro-benchmarks")
    be.add_argument("what", help="auth (no root) or dns (brings up the lab)")
    be.add_argument("--json")
    add_topology(be)
    be.add_argument("--rounds", type=int, default=20)
    be.set_defaults(func=run)


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
        res = lab.dns.bench_resolution(lab.execs[client], names, rounds=args.rounds)
    for k, v in sorted(res.items()):
        if isinstance(v, int | float):
            print(f"{k:<26} {v:>12.2f}")
    write_json(args.json, res)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.what == "dns":
        return bench_dns(args)
    if args.what != "auth":
        raise LabError(f"unknown benchmark {args.what!r} (auth, dns)")
    from agents.auth.bench import run_bench

    res = run_bench(progress=stderr_progress)
    for k in ("openssl_p256_ecdh_per_s", "cold_per_s", "warm_per_s", "udp_warm_per_s"):
        print(f"{k:<26} {res[k]:>12,.0f}")
    ref = res["openssl_p256_ecdh_per_s"]
    if ref:
        print(f"{'cold / openssl ECDH':<26} {res['cold_per_s'] / ref:>12.2f}")
    write_json(args.json, res)
    return 0
