"""Fuzz target ``verifier``: the stateful Authenticator (agents/auth/fuzz.py's campaign of
genuine, attacker, wrong-field, REMSK and garbage scenarios and their mutants), as a Tally.
"""

from __future__ import annotations

from agents.auth import fuzz

from .common import Tally


def run(tally: Tally, count: int, seed: int) -> None:
    report = fuzz.run_campaign(count, seed=seed)
    tally.inputs = report.inputs
    tally.uncaught = report.crashes
    tally.forgeries = report.forgeries + report.noncanonical
    tally.accepted = report.genuine_accepted
    tally.rejected = report.rejected
    tally.costs_ns = report.costs_ns
    tally.examples = report.examples
    tally.count("parsed", report.parsed)
    tally.count("noncanonical", report.noncanonical)
