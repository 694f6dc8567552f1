"""Fuzz campaign for the parser and the authenticator: ``python -m agents.auth.fuzz --count N``.

Hypothesis draws scenarios and mutation seeds; reports inputs tried, crashes and accepted
forgeries, and exits non-zero if either is not zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from ..fuzzers.common import INTERESTING, Tally, mutate
from .authenticator import Authenticator, AuthResult, Limits
from .errors import AuthError
from .keys import PublishedKey, StaticDirectory, Suite
from .keystore import KeyStore, Role
from .messages import MsgType, Prefix, to_prefix, unpack_any
from .protocol import SessionKeys, build_auth, build_remsk, open_auth_reply

AR_NAME = "ar.fuzz.flatarch.test"
PEER_NAME = "mn.fuzz.flatarch.test"
WRONG_SUITE_NAME = "x25519.fuzz.flatarch.test"
UNKNOWN_NAME = "nobody.fuzz.flatarch.test"
BATCH = 64  # inputs per hypothesis example: the scenario's message, then mutants of it
SOURCE = ("192.0.2.7", 40000)
_ACCEPTING = (MsgType.AUTH_REPLY, MsgType.REMSK_ACK)


def _secret(label: str) -> bytes:
    import hashlib

    return hashlib.sha256(b"flatarch fuzz " + label.encode()).digest()


class _World:
    """One authenticator, its legitimate peer, an attacker, and a loop to run slow paths."""

    def __init__(self, report: Tally) -> None:
        self.report = report
        self.loop = asyncio.new_event_loop()
        self.ar_ks = KeyStore.from_private_bytes(AR_NAME, Suite.P256, _secret("ar"))
        self.peer_ks = KeyStore.from_private_bytes(PEER_NAME, Suite.P256, _secret("peer"))
        # The attacker holds a valid key of its own but claims the peer's name.
        self.attacker_ks = KeyStore.from_private_bytes(PEER_NAME, Suite.P256, _secret("evil"))
        x_ks = KeyStore.from_private_bytes(WRONG_SUITE_NAME, Suite.X25519, _secret("x"))
        self.directory = StaticDirectory([self.peer_ks.published_key(), x_ks.published_key()])
        self.auth = Authenticator(AR_NAME, self.ar_ks, self.directory, self._rerouted,
                                  limits=Limits(per_source_rate=None, load_threshold_per_s=500))
        self.ar_key = self.auth.published_key()
        self.directory.publish(self.ar_key)
        self.last_ts = 0

    @staticmethod
    def _rerouted(result: AuthResult) -> tuple[Prefix, ...]:
        return result.addresses

    def next_ts(self) -> int:
        self.last_ts = max(int(time.time() * 1_000_000), self.last_ts + 1)
        return self.last_ts

    def close(self) -> None:
        self.loop.close()

    def handle(self, data: bytes) -> bytes | None:
        out = self.auth._handle_now(data, SOURCE)
        if out is None or isinstance(out, bytes):
            return out
        return self.loop.run_until_complete(out)

    def session(self) -> SessionKeys:
        """A fresh authenticated session, seen from the peer side."""
        n_p = os.urandom(16)
        data, msk0, ctx0 = build_auth(self.peer_ks, self.ar_key, timestamp_us=self.next_ts(),
                                      peer_nonce=n_p, auth_nonce=self.ar_key.nonce or bytes(16),
                                      addresses=(), mobility=False)
        reply = self.handle(data)
        if reply is None:
            raise AuthError("fuzz fixture could not open a session")
        _, keys = open_auth_reply(reply, msk0, ctx0, peer_nonce=n_p,
                                  peer_name_len=len(PEER_NAME))
        return keys


# --- scenario strategies ----------------------------------------------------------------------

_names = st.sampled_from([PEER_NAME, UNKNOWN_NAME, WRONG_SUITE_NAME, "a", "a-b.c", AR_NAME,
                          "x" * 63 + ".y", ".".join(["abcdefg"] * 31)])
_prefixes = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda v: to_prefix(f"{v >> 24}.{v >> 16 & 255}."
                                                      f"{v >> 8 & 255}.{v & 255}")),
    st.binary(min_size=16, max_size=16).map(
        lambda b: to_prefix(":".join(b[i:i + 2].hex() for i in range(0, 16, 2)))),
)
_address_lists = st.lists(_prefixes, max_size=16, unique=True)


@st.composite
def _scenarios(draw: st.DrawFn) -> tuple[str, dict[str, Any], int]:
    kind = draw(st.sampled_from(["genuine", "genuine", "attacker", "wrong_fields", "remsk",
                                 "garbage", "typed_garbage"]))
    params: dict[str, Any] = {}
    if kind in ("genuine", "attacker", "wrong_fields"):
        params["addresses"] = draw(_address_lists)
        params["mobility"] = draw(st.booleans())
        params["nonce"] = draw(st.sampled_from(["published", "zero", "random"]))
        params["cookie"] = draw(st.none() | st.binary(min_size=16, max_size=16))
        params["skew_s"] = draw(st.sampled_from([0.0, 0.0, -29.0, 31.0, -31.0, -3600.0]))
    if kind == "wrong_fields":
        params["peer_name"] = draw(_names)
        params["auth_name"] = draw(_names)
    if kind == "garbage":
        params["data"] = draw(st.binary(max_size=1100))
    if kind == "typed_garbage":
        params["data"] = bytes((draw(st.integers(0, 2)), draw(st.integers(0, 9)))) + draw(
            st.binary(max_size=900))
    return kind, params, draw(st.integers(0, 2**63 - 1))


def _base_message(world: _World, kind: str, params: dict[str, Any]) -> tuple[bytes, bool]:
    """The scenario's message and whether it is genuine (may legitimately be accepted once)."""
    if kind in ("garbage", "typed_garbage"):
        return params["data"], False
    if kind == "remsk":
        keys = world.session()
        return build_remsk(keys, Role.PEER, timestamp_us=world.next_ts(),
                           nonce=os.urandom(16)), True
    nonce = {"published": world.ar_key.nonce or bytes(16), "zero": bytes(16),
             "random": os.urandom(16)}[params["nonce"]]
    ts = world.next_ts() + int(params["skew_s"] * 1_000_000)
    if ts <= 0:
        ts = 1
    ks = world.peer_ks if kind == "genuine" else world.attacker_ks
    ar_key = world.ar_key
    if kind == "wrong_fields":
        # A key store for the drawn name signs a message to the drawn authenticator name.
        ks = KeyStore.from_private_bytes(params["peer_name"], Suite.P256, _secret("evil"))
        ar_key = PublishedKey(params["auth_name"], Suite.P256, world.ar_ks.spki,
                              world.ar_key.nonce)
    data, _, _ = build_auth(ks, ar_key, timestamp_us=ts, peer_nonce=os.urandom(16),
                            auth_nonce=nonce, addresses=params["addresses"],
                            mobility=params["mobility"], cookie=params["cookie"])
    return data, kind == "genuine"


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """The shared byte edits, and one time in three first an edit aimed at this format."""
    buf = bytearray(data)
    n = len(buf)
    aim = rng.randrange(9)
    if aim == 0 and n > 45:  # a length or count field
        buf[rng.choice([44, rng.randrange(44, n)])] = rng.choice(INTERESTING)
    elif aim == 1 and n >= 16:  # the tag
        buf[-16:] = rng.choice([bytes(16), rng.randbytes(16)])
    elif aim == 2 and n > 1:  # the type or version
        buf[rng.randrange(2)] = rng.randrange(10)
    return mutate(rng, bytes(buf))


def _check(world: _World, data: bytes, may_accept: bool) -> None:
    report = world.report
    try:
        msg = unpack_any(data)
    except AuthError:
        pass
    except Exception as exc:
        report.uncaught += 1
        report.note("parser crash", data, repr(exc))
    else:
        report.count("parsed")
        try:
            again = msg.pack()
        except Exception as exc:
            report.uncaught += 1
            report.note("re-pack crash", data, repr(exc))
        else:
            if again != data:
                report.count("noncanonical")
                report.forgeries += 1
                report.note("non-canonical", data, "re-encodes differently")
    internal = world.auth.stats["InternalError"]
    try:
        reply = world.handle(data)
    except Exception as exc:
        report.uncaught += 1
        report.note("service crash", data, repr(exc))
        return
    if world.auth.stats["InternalError"] != internal:
        report.uncaught += 1
        report.note("service internal error", data, "see log")
    if reply is not None and len(reply) > 1 and reply[1] in _ACCEPTING:
        if may_accept:
            report.accepted += 1
        else:
            report.forgery(data, f"reply type {reply[1]}")
    else:
        report.rejected += 1


def _timed_check(world: _World, data: bytes, may_accept: bool) -> None:
    world.report.run(data, lambda: _check(world, data, may_accept), ())


def run_campaign(count: int, *, seed: int | None = None,
                 progress: Callable[[str], None] | None = None,
                 report: Tally | None = None) -> Tally:
    """Feed at least ``count`` inputs (exactly ``count`` unless hypothesis stops early) into
    ``report`` (a fresh tally if None) and return it."""
    # Crashes are the tally's ``uncaught``, genuine messages let through its ``accepted``; a
    # non-canonical parse counts as a forgery too (two spellings of one message).
    report = report if report is not None else Tally("verifier")
    report.extra.setdefault("parsed", 0)
    report.extra.setdefault("noncanonical", 0)
    world = _World(report)
    auth_log = logging.getLogger("flatarch.auth")
    saved_level = auth_log.level
    auth_log.setLevel(logging.CRITICAL)  # every input is rejected with a log line otherwise
    started = time.perf_counter()
    next_progress = [started + 10.0]

    def one(scenario: tuple[str, dict[str, Any], int]) -> None:
        remaining = count - report.inputs
        if remaining <= 0:
            return
        kind, params, mseed = scenario
        try:
            base, genuine = _base_message(world, kind, params)
        except (ValueError, AuthError):
            return  # the drawn fields cannot be encoded: nothing to send
        budget = min(BATCH, remaining)
        _timed_check(world, base, genuine)
        if budget > 1:
            _timed_check(world, base, False)  # the same bytes again: a replay
        rng = random.Random(mseed)
        for _ in range(budget - 2):
            mutant = _mutate(rng, base)
            if mutant == base:
                continue
            # Forget replay marks so that the MAC, not the timestamp, must stop the mutant.
            world.auth.reset_replay_state()
            _timed_check(world, mutant, False)
        if progress is not None and time.perf_counter() > next_progress[0]:
            next_progress[0] += 10.0
            progress(f"{report.inputs} inputs, {report.uncaught} crashes, "
                     f"{report.forgeries} forgeries")

    try:
        rounds = 0
        while report.inputs < count and rounds < 100:
            rounds += 1
            examples = max(1, (count - report.inputs + BATCH - 1) // BATCH)
            test = settings(max_examples=examples, database=None, deadline=None,
                            phases=[Phase.generate], suppress_health_check=list(HealthCheck),
                            derandomize=False)(given(_scenarios())(one))
            if seed is not None:
                test = hypothesis_seed(seed + rounds)(test)
            test()
    finally:
        auth_log.setLevel(saved_level)
        world.close()
        report.seconds = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.auth.fuzz", description=__doc__)
    parser.add_argument("--count", type=int, default=10_000, help="inputs to try")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    args = parser.parse_args(argv)
    if args.count <= 0:
        parser.error("--count must be positive")
    report = run_campaign(args.count, seed=args.seed,
                          progress=lambda text: print(f"... {text}", file=sys.stderr))
    noncanonical = report.extra["noncanonical"]
    fields = {"inputs": report.inputs, "crashes": report.uncaught,
              "forgeries": report.forgeries - noncanonical, "noncanonical": noncanonical,
              "genuine_accepted": report.accepted, "rejected": report.rejected,
              "parsed": report.extra["parsed"], "seconds": report.seconds,
              "examples": report.examples}
    print(f"inputs tried: {fields['inputs']}")
    print(f"crashes: {fields['crashes']}")
    print(f"accepted forgeries: {fields['forgeries']}")
    print(f"non-canonical parses: {noncanonical}")
    print(f"(genuine accepted: {report.accepted}, rejected: {report.rejected}, "
          f"parsed: {fields['parsed']}, {report.seconds:.1f} s)")
    for line in report.examples:
        print(line)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(fields, out, indent=2)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
