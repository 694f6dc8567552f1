"""Fuzz campaign for the stapled bundle: ``python -m agents.staple_fuzz --count N``.

Mutates the test-vector bundle (and the AUTH carrying it) and checks that the parsers raise
only typed errors and that the verifier never accepts a bundle saying anything but the truth.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from agents.auth.errors import AuthError
from agents.auth.messages import AuthMessage

from .fuzzers.common import Tally, mutate
from .staple import StapleError, StapleVerifier
from .staple_vectors import MN_NAME, NOW, Tree, auth_with_staple


def run_campaign(count: int, seed: int = 0) -> Tally:
    """The campaign's tally: a refused bundle is `rejected`, one that says the truth despite
    the edit (a changed TTL: not signed, and harmless) `accepted`."""
    rng = random.Random(seed)
    tree = Tree.make()
    bundle = tree.bundle()
    auth = auth_with_staple(bundle)
    truth = StapleVerifier(tree.trust_anchor(), clock=lambda: NOW).verify(MN_NAME, bundle)
    report = Tally("staple")
    start = time.perf_counter()
    for n in range(count):
        # A fresh verifier half the time: the cached-keys path and the full chain both run.
        verifier = StapleVerifier(tree.trust_anchor(), clock=lambda: NOW)
        if n % 2:
            verifier.verify(MN_NAME, bundle)
        mutant = mutate(rng, bundle)
        report.inputs += 1
        try:
            got = verifier.verify(MN_NAME, mutant)
        except StapleError:
            report.rejected += 1
        except Exception as exc:  # noqa: BLE001 - the point: anything untyped is a crash
            report.uncaught += 1
            report.note("crash", mutant, repr(exc))
        else:
            if (got.key, got.addresses, got.name) != (truth.key, truth.addresses, truth.name):
                report.forgeries += 1
                report.note("forgery", mutant, "a bundle saying something else verified")
            else:
                report.accepted += 1
        wire = mutate(rng, auth)
        report.inputs += 1
        try:
            AuthMessage.unpack(wire)
        except AuthError:
            pass
        except Exception as exc:  # noqa: BLE001
            report.uncaught += 1
            report.note("auth crash", wire, repr(exc))
    report.seconds = time.perf_counter() - start
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    report = run_campaign(args.count, args.seed)
    print(json.dumps({**report.summary(), "ok": report.ok}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
