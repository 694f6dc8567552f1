"""The AR agent survives its own restart (issue 20): killed, or with its ExaBGP killed, a new
agent recovers the MN it served from the saved state, the MN's /32 stays announced, and the
CN's probe toward the MN goes on. One Figure-2 lab for the module."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from agents import arstate
from agents.contract import Layout
from agents.endofrib import EOR_WAIT_S
from tests.integration.labs import figure2_lab, mn_request, status
from topologies.analysis import measure
from topologies.lab import inject
from topologies.lab.daemons import wait_until
from topologies.lab.lab import Lab
from topologies.scenarios import traffic
from topologies.scenarios.base import address_owner

pytestmark = pytest.mark.root
MN1 = "10.64.0.10"  # mn1's address, from ar1's pool
AR = "ar2"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    for running in figure2_lab():
        rec = running.handoff("mn1", AR)
        assert rec["ok"] and rec["rerouted"] == [f"{MN1}/32"], rec
        wait_until(lambda lab=running: MN1 in status(lab, AR)["mobility"]["announced"], 10,
                   f"{AR} to announce {MN1}")
        yield running


def agg_route_via_ar(lab: Lab) -> bool:
    """agg1, ar2's reflector, routes the /32 toward ar2."""
    out = lab.execs["agg1"].check(["ip", "-j", "-4", "route", "show", "exact", f"{MN1}/32"])
    owner = address_owner(lab.topo)
    hops = [h for r in json.loads(out or "[]") for h in [r, *r.get("nexthops", [])]]
    return any(owner.get(IPv4Address(str(h["gateway"]))) == AR for h in hops if "gateway" in h)


def reaches(lab: Lab) -> bool:
    return lab.execs["cn"].run(["ping", "-c", "1", "-W", "1", MN1]).returncode == 0


def served_again(lab: Lab) -> bool:
    st = status(lab, AR)
    return (st.get("recovery", {}).get("state") == "recovered"
            and MN1 in st["mobility"]["attached"] and MN1 in st["mobility"]["announced"]
            and st["rib_prefixes"] > 0  # the Adj-RIB-In replayed into the new agent
            and agg_route_via_ar(lab) and reaches(lab))


@contextlib.contextmanager
def probing(lab: Lab, out: Path) -> Iterator[None]:
    with traffic.probe(lab, "cn", MN1, out):
        wait_until(lambda: bool(measure.parse_ping(out.read_text(errors="replace"))), 10,
                   "the first probe reply")
        yield


def rib_refresh(lab: Lab) -> str:
    """How the new agent's FIB sync knew the RIB was whole (agents/endofrib.py), once known."""
    wait_until(lambda: "rib_refresh" in status(lab, AR).get("recovery", {}), EOR_WAIT_S + 10,
               f"{AR}'s full FIB sync after its restart", 0.2)
    return str(status(lab, AR)["recovery"]["rib_refresh"])


def replies_after(out: Path, t: float) -> int:
    return sum(1 for r in measure.parse_ping(out.read_text(errors="replace")) if r.send_ts > t)


def test_killed_agent_is_respawned_and_recovers_the_mn(lab: Lab, tmp_path: Path) -> None:
    lp = status(lab, AR)["mobility"]["announced"][MN1]
    out = tmp_path / "probe.txt"
    with probing(lab, out):
        _, ready = inject.kill_agent(lab, AR)
        wait_until(lambda: served_again(lab), 30, f"{AR}'s new agent to serve {MN1}", 0.2)
        wait_until(lambda: replies_after(out, ready) >= 20, 15, "probe replies after restart")
    st = status(lab, AR)
    # The same LOCAL_PREF: a re-announcement, not a new handoff that could beat a newer one.
    assert st["mobility"]["announced"][MN1] == lp
    # mn1 visiting and mn2 at home; nothing the old agent left was stale.
    assert st["recovery"]["attached"] == 2 and st["recovery"]["removed_routes"] == 0
    assert rib_refresh(lab) == "listed"  # ExaBGP's sessions stayed up: its listing is whole


def test_killed_exabgp_is_restarted_and_its_new_agent_re_announces(
        lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "probe.txt"
    with probing(lab, out):
        inject.kill(lab, AR, "exabgp")
        ready = inject.restart_exabgp(lab, AR)
        wait_until(lambda: served_again(lab), 60, f"{AR} to announce {MN1} again", 0.2)
        wait_until(lambda: replies_after(out, ready) >= 20, 15, "probe replies after restart")
        # A new ExaBGP: the sync waited for both reflectors' End-of-RIB, not a deadline.
        assert rib_refresh(lab) == "end-of-rib"
    others = [a for a in ("ar1", "ar3", "ar4", "ar5", "ar6") if a in lab.topo.nodes]
    for other in others:  # no stale state anywhere else
        mob = status(lab, other)["mobility"]
        assert MN1 not in mob["attached"] and MN1 not in mob["announced"], other


def test_a_corrupt_state_file_is_refused_and_the_agent_starts_clean(lab: Lab) -> None:
    (lab.rundir(AR) / arstate.STATE_FILE).write_text('{"version": 1, "node": "ar2"')
    inject.kill_agent(lab, AR)
    wait_until(lambda: status(lab, AR).get("recovery", {}).get("state") == "refused", 30,
               "the refusal in the status", 0.2)
    assert "not JSON" in status(lab, AR)["recovery"]["reason"]
    # It re-learns: the MN authenticates again (still on the same radio) and is served.
    rec = mn_request(lab, "mn1", "attach", ar=AR)
    assert rec["rerouted"] == [f"{MN1}/32"], rec
    wait_until(lambda: MN1 in status(lab, AR)["mobility"]["announced"] and reaches(lab), 20,
               f"{MN1} served after re-learning", 0.2)
    saved = arstate.load(lab.rundir(AR) / arstate.STATE_FILE, AR)
    assert saved is not None and MN1 in {str(a) for a in saved.attached}
    assert (lab.rundir(AR) / Layout.AGENT_STATUS).exists()
