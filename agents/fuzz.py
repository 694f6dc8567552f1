"""The fuzz campaign: ``python -m agents.fuzz --count N [--target T ...] [--json FILE]``.

Every parser that faces the air or the backbone gets ``N`` structure-aware inputs and mutants
(agents/fuzzers/); per target it reports inputs, uncaught exceptions and accepted forgeries
(both must be 0) and the p50, p99 and max cost per input, and exits non-zero on any finding.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable

from .fuzzers import dhcp, dhcp6, epc, exabgp, keys, messages, paging, ra, verifier
from .fuzzers.common import Tally

TARGETS: dict[str, Callable[[Tally, int, int], None]] = {
    "auth_messages": messages.run,
    "verifier": verifier.run,
    "dns_keys": keys.run,
    "dhcp": dhcp.run,
    "dhcp6": dhcp6.run,
    "exabgp": exabgp.run,
    "ra": ra.run,
    "paging": paging.run,
    "epc": epc.run,
}


def run_target(name: str, count: int, seed: int) -> Tally:
    tally = Tally(name)
    # Every rejected input logs a line otherwise; the tally is the record.
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.CRITICAL)
    logging.disable(logging.CRITICAL)
    started = time.perf_counter()
    try:
        TARGETS[name](tally, count, seed)
    finally:
        tally.seconds = time.perf_counter() - started
        logging.disable(logging.NOTSET)
        root.setLevel(saved)
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS),
                        help="run only this target (repeatable)")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    args = parser.parse_args(argv)
    if args.count <= 0:
        parser.error("--count must be positive")
    seed = args.seed if args.seed is not None else int(time.time())
    results: dict[str, Tally] = {}
    print(f"{'target':<14} {'inputs':>9} {'uncaught':>8} {'forged':>6} {'accepted':>8} "
          f"{'p50 us':>8} {'p99 us':>8} {'max us':>9} {'s':>6}")
    for name in args.target or list(TARGETS):
        tally = run_target(name, args.count, seed)
        results[name] = tally
        s = tally.summary()
        print(f"{name:<14} {s['inputs']:>9} {s['uncaught']:>8} {s['forgeries']:>6} "
              f"{s['accepted']:>8} {s['p50_us']:>8} {s['p99_us']:>8} {s['max_us']:>9} "
              f"{s['seconds']:>6}", flush=True)
    ok = all(t.ok for t in results.values())
    for tally in results.values():
        for line in tally.examples:
            print(f"{tally.target}: {line}", file=sys.stderr)
    if args.json:
        report = {"seed": seed, "count": args.count, "ok": ok,
                  "targets": {name: t.summary() for name, t in results.items()}}
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
