"""The AR agent's view of ExaBGP: strict parsing of its API lines, and best-path choice."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest

from agents import exabgp_api as api
from agents.fib import Rib


def update_line(peer: str, announce: dict[str, list[str]], withdraw: list[str],
                lp: int = 100) -> str:
    upd: dict[str, object] = {"attribute": {"origin": "igp", "local-preference": lp}}
    if announce:
        upd["announce"] = {"ipv4 unicast": {nh: [{"nlri": p} for p in ps]
                                            for nh, ps in announce.items()}}
    if withdraw:
        upd["withdraw"] = {"ipv4 unicast": [{"nlri": p} for p in withdraw]}
    return json.dumps({"exabgp": "5.0.0", "type": "update", "neighbor": {
        "address": {"local": "10.255.0.7", "peer": peer}, "direction": "receive",
        "message": {"update": upd}}})


def test_parses_announce_withdraw_state_and_acks() -> None:
    ev = api.parse_line(update_line("10.255.0.3", {"10.255.0.8": ["10.64.1.0/24"]},
                                    ["10.64.9.9/32"], lp=1795812671))
    assert isinstance(ev, api.Update) and ev.peer == "10.255.0.3"
    assert ev.announced == [api.Route(IPv4Network("10.64.1.0/24"),
                                      IPv4Address("10.255.0.8"), 1795812671)]
    assert ev.withdrawn == [IPv4Network("10.64.9.9/32")]
    assert api.parse_line("done\n") == api.Ack(True, "done")
    assert api.parse_line("error") == api.Ack(False, "error")
    state = json.dumps({"type": "state", "neighbor": {"address": {"peer": "10.255.0.4"},
                                                      "state": "down", "reason": "x"}})
    assert api.parse_line(state) == api.PeerState("10.255.0.4", False, "x")
    assert api.parse_line("") is None


@pytest.mark.parametrize("line", ["garbage", "{not json", '{"type": "update", "neighbor": '
                                  '{"message": {"update": {"announce": {"ipv4 unicast": '
                                  '{"10.0.0.1": [{"x": 1}]}}}}}}'])
def test_bad_lines_raise_typed_errors(line: str) -> None:
    with pytest.raises(ValueError):
        api.parse_line(line)


def test_commands_are_exabgp_syntax() -> None:
    p = IPv4Network("10.64.0.5/32")
    assert api.announce(p, 7) == "announce route 10.64.0.5/32 next-hop self local-preference 7"
    assert api.withdraw(p) == "withdraw route 10.64.0.5/32 next-hop self"


def test_highest_local_pref_wins_and_withdraw_falls_back() -> None:
    rib = Rib()
    p = IPv4Network("10.64.0.5/32")
    old = api.Route(p, IPv4Address("10.255.0.7"), 100)
    new = api.Route(p, IPv4Address("10.255.0.9"), 200)
    assert rib.update("agg1", [old], []) == {p}
    rib.update("agg2", [new], [])
    assert rib.best(p) == new
    assert rib.drop_peer("agg2") == {p}
    assert rib.best(p) == old
    rib.update("agg1", [], [p])
    assert rib.best(p) is None and rib.prefixes() == []
