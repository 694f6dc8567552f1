"""Fuzz target ``verifier``: the stateful Authenticator (agents/auth/fuzz.py's campaign of
genuine, attacker, wrong-field, REMSK and garbage scenarios and their mutants), as a Tally.
"""

from __future__ import annotations

from agents.auth import fuzz

from .common import Tally


def run(tally: Tally, count: int, seed: int) -> None:
    fuzz.run_campaign(count, seed=seed, report=tally)
