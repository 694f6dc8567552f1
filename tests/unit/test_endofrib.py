"""A restarted AR agent's wait for whole BGP tables (agents/endofrib.py, issue 20): End-of-RIB
from every configured peer for every family, or a listing of a session older than the agent;
a deadline, never a fixed sleep, when a peer stays silent."""

from __future__ import annotations

import asyncio

from agents import exabgp_api as api
from agents.endofrib import EndOfRib
from tests.unit.test_hostile_exabgp import EOR_LINE

V4 = frozenset({"ipv4 unicast"})
RR1, RR2 = "10.255.0.1", "10.255.0.2"


def test_whole_once_every_configured_peer_sent_end_of_rib_for_every_family() -> None:
    eor = EndOfRib(V4 | {"ipv6 unicast"}, frozenset({RR1, RR2}))
    for p in (RR1, RR2):
        eor.session(p, True)
    assert not eor.whole(set(), {RR1, RR2})
    eor.end_of_rib(RR1, "ipv4 unicast")
    eor.end_of_rib(RR1, "ipv6 unicast")
    eor.end_of_rib(RR2, "ipv4 unicast")
    assert not eor.whole(set(), {RR1, RR2})  # RR2's IPv6 table is not in yet
    eor.end_of_rib(RR2, "ipv6 unicast")
    assert eor.whole(set(), {RR1, RR2})
    eor.session(RR2, False)  # a session lost: its next one sends its table again
    assert not eor.whole(set(), {RR1})


def test_a_listed_session_older_than_the_agent_is_whole_one_that_came_up_is_not() -> None:
    eor = EndOfRib(V4, frozenset({RR1, RR2}))
    assert eor.whole({RR1, RR2}, {RR1, RR2})
    eor.session(RR2, True)  # came up under us: its listing may be half a table
    assert not eor.whole({RR1, RR2}, {RR1, RR2})
    eor.end_of_rib(RR2, "ipv4 unicast")
    assert eor.whole({RR1, RR2}, {RR1, RR2})


def test_without_configured_peers_those_up_count_and_none_is_never_whole() -> None:
    eor = EndOfRib(V4, None)
    assert not eor.whole(set(), set())
    eor.session(RR1, True)
    eor.end_of_rib(RR1, "ipv4 unicast")
    assert eor.whole(set(), {RR1})
    assert not eor.whole(set(), {RR1, RR2})


def test_the_wait_ends_on_the_last_end_of_rib_and_otherwise_at_its_deadline() -> None:
    async def run() -> tuple[bool, bool]:
        eor = EndOfRib(V4, frozenset({RR1, RR2}))
        waiting = asyncio.create_task(eor.wait(set(), lambda: {RR1, RR2}, 30.0))
        for p in (RR1, RR2):
            await asyncio.sleep(0)
            event = api.parse_line(EOR_LINE.replace('"10.255.0.1"', f'"{p}"'))
            assert isinstance(event, api.Update) and event.eor
            eor.end_of_rib(event.peer, event.family)
        whole = await asyncio.wait_for(waiting, 5.0)
        silent = EndOfRib(V4, frozenset({RR1}))
        return whole, await silent.wait(set(), set, 0.05)

    assert asyncio.run(run()) == (True, False)
