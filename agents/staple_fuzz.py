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
from dataclasses import asdict, dataclass, field

from agents.auth.errors import AuthError
from agents.auth.messages import AuthMessage

from .staple import StapleError, StapleVerifier
from .staple_vectors import MN_NAME, NOW, Tree, auth_with_staple


@dataclass
class StapleFuzzReport:
    inputs: int = 0
    crashes: int = 0
    forgeries: int = 0
    refused: int = 0
    accepted_same: int = 0  # e.g. a changed TTL: not signed, and harmless
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.crashes == 0 and self.forgeries == 0


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    op = rng.randrange(5)
    if op == 0 or not b:
        i = rng.randrange(len(b) or 1)
        b[i:i + 1] = bytes((rng.randrange(256),))
    elif op == 1:
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    elif op == 2:
        del b[rng.randrange(len(b)):]
    elif op == 3:
        i = rng.randrange(len(b))
        b[i:i] = rng.randbytes(rng.randrange(1, 8))
    else:
        i, j = sorted(rng.randrange(len(b)) for _ in range(2))
        del b[i:j]
    return bytes(b)


def run_campaign(count: int, seed: int = 0) -> StapleFuzzReport:
    rng = random.Random(seed)
    tree = Tree.make()
    bundle = tree.bundle()
    auth = auth_with_staple(bundle)
    truth = StapleVerifier(tree.trust_anchor(), clock=lambda: NOW).verify(MN_NAME, bundle)
    report = StapleFuzzReport()
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
            report.refused += 1
        except Exception as exc:  # noqa: BLE001 - the point: anything untyped is a crash
            report.crashes += 1
            if len(report.examples) < 20:
                report.examples.append(f"crash {exc!r}: {mutant.hex()}")
        else:
            if (got.key, got.addresses, got.name) != (truth.key, truth.addresses, truth.name):
                report.forgeries += 1
                report.examples.append(f"forgery: {mutant.hex()}")
            else:
                report.accepted_same += 1
        wire = mutate(rng, auth)
        report.inputs += 1
        try:
            AuthMessage.unpack(wire)
        except AuthError:
            pass
        except Exception as exc:  # noqa: BLE001
            report.crashes += 1
            report.examples.append(f"auth crash {exc!r}: {wire.hex()}")
    report.seconds = time.perf_counter() - start
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    report = run_campaign(args.count, args.seed)
    print(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
