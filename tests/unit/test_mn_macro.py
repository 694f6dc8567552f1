"""The MN's macro-mobility choices (draft 4): which addresses go to the Home Agent, from
which care-of address, and when the tunnel goes; the AUTH itself is faked here."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from agents.contract import MnMacro
from agents.macro import HaTunnel
from agents.mn import MnAgent

A1, A2 = ipaddress.IPv4Address("10.65.0.100"), ipaddress.IPv4Address("10.66.0.101")
SETTINGS = MnMacro(vni=4343, port=4790, mtu=1450, ha_mac="02:fa:03:00:00:01",
                   mn_mac="02:fa:03:00:00:02", ha_inner="169.254.3.1", outside="inet")


class Session:
    def __init__(self, rerouted: list[ipaddress.IPv4Network]) -> None:
        self.rerouted = rerouted
        self.not_rerouted: list[ipaddress.IPv4Network] = []


def agent() -> tuple[MnAgent, list[tuple[list[ipaddress.IPv4Address], Any]], list[list[str]]]:
    mn = object.__new__(MnAgent)  # no keys, sockets or files: only the decision is tested
    binds: list[tuple[list[ipaddress.IPv4Address], Any]] = []
    ip_calls: list[list[str]] = []

    async def ip(cmds: list[list[str]]) -> None:
        ip_calls.extend(cmds)

    async def bind(homes: list[ipaddress.IPv4Address], care_of: Any,
                   prefixes6: list[ipaddress.IPv6Network] | None = None) -> Session:
        if prefixes6:
            binds.append(([*homes, *prefixes6], care_of))  # type: ignore[list-item]
            return Session([*(ipaddress.IPv4Network((a, 32)) for a in homes),
                            *prefixes6])  # type: ignore[list-item]
        binds.append((homes, care_of))
        return Session([ipaddress.IPv4Network((a, 32)) for a in homes])

    mn.tunnel = HaTunnel(SETTINGS, "vxlan", ip, ip)
    mn.ha = ("ha.isp.test", ipaddress.IPv4Address("10.253.0.6"), None)  # type: ignore[assignment]
    mn._lock = asyncio.Lock()
    mn.events = lambda *a, **k: None  # type: ignore[assignment,method-assign]
    mn._bind = bind  # type: ignore[method-assign]
    return mn, binds, ip_calls


def test_addresses_an_ar_did_not_reroute_are_bound_from_a_rerouted_one() -> None:
    mn, binds, _ = agent()
    record = {"ok": True, "rerouted": [f"{A2}/32"], "not_rerouted": [f"{A1}/32"]}
    out = asyncio.run(mn.bind_not_rerouted(record))
    assert binds == [([A1], A2)]
    assert out["ha_bound"] == [f"{A1}/32"] and out["care_of"] == str(A2)


def test_nothing_is_bound_when_the_ar_rerouted_everything_and_the_tunnel_goes() -> None:
    mn, binds, ip_calls = agent()
    mn.tunnel.up = True
    record = {"ok": True, "rerouted": [f"{A1}/32"], "not_rerouted": []}
    assert asyncio.run(mn.bind_not_rerouted(record)) == record
    assert binds == [] and not mn.tunnel.up
    assert ["link", "del", "faha0"] in ip_calls


def test_with_no_rerouted_address_there_is_no_care_of_address() -> None:
    mn, binds, _ = agent()
    record = {"ok": True, "rerouted": [], "not_rerouted": [f"{A1}/32"]}
    out = asyncio.run(mn.bind_not_rerouted(record))
    assert binds == [] and out["ha_bound"] == [] and "no re-routed" in out["ha_error"]


def test_the_tunnel_routes_only_the_bound_home_addresses() -> None:
    calls: list[list[str]] = []

    async def ip(cmds: list[list[str]]) -> None:
        calls.extend(cmds)

    t = HaTunnel(SETTINGS, "vxlan", ip)
    asyncio.run(t.open(A2, ipaddress.IPv4Address("10.253.0.6"), [A1]))
    assert ["link", "add", "faha0", "type", "vxlan", "id", "4343", "local", str(A2), "remote",
            "10.253.0.6", "dstport", "4790", "nolearning"] in calls
    assert ["rule", "add", "from", str(A1), "lookup", "200", "pref", "200"] in calls
    assert not any(c[:3] == ["rule", "add", "from"] and c[3] == str(A2) for c in calls)
    asyncio.run(t.close())
    assert calls[-1] == ["link", "del", "faha0"] and not t.up


def test_a_dual_stack_record_binds_only_its_ipv4_addresses_at_the_home_agent() -> None:
    """Issue 18: IPv6 prefixes in the reply's lists are the RA's business, not _bind's."""
    mn, binds, _ = agent()
    p6 = "2001:db8:4000:100::/64"
    record = {"ok": True, "rerouted": [p6, f"{A2}/32"], "not_rerouted": [f"{A1}/32"]}
    out = asyncio.run(mn.bind_not_rerouted(record))
    assert binds == [([A1], A2)] and out["care_of"] == str(A2)
    refused_v6_only = {"ok": True, "rerouted": [f"{A1}/32"], "not_rerouted": [p6]}
    assert asyncio.run(mn.bind_not_rerouted(refused_v6_only)) == refused_v6_only
    assert binds == [([A1], A2)]


P6 = ipaddress.IPv6Network("2001:db8:4000:100::/64")


def logged_agent() -> tuple[MnAgent, list[Any], list[tuple[str, dict[str, Any]]]]:
    mn, binds, _ = agent()
    logged: list[tuple[str, dict[str, Any]]] = []
    mn.events = lambda ev, **kw: logged.append((ev, kw))  # type: ignore[assignment,method-assign]
    mn.session = Session([ipaddress.IPv4Network((A2, 32))])  # type: ignore[assignment]
    mn.away = None
    mn.refused6 = []
    mn._tasks = set()
    return mn, binds, logged


def test_a_prefix_the_ra_left_out_is_bound_at_the_home_agent_from_a_rerouted_address() -> None:
    """Issue 18: like bind_not_rerouted for IPv4, the care-of address one the AR re-routed."""
    mn, binds, logged = logged_agent()

    async def go() -> None:
        mn._refused6([P6], "ra")
        await asyncio.gather(*mn._tasks)

    asyncio.run(go())
    assert mn.refused6 == [P6] and binds == [([P6], A2)]
    assert logged == [("prefix_bound", {"prefixes": [str(P6)], "by": "ra", "ha": "ha.isp.test",
                                        "care_of": A2, "tunnel": "vxlan"})]
    mn._refused6([], "ra")
    assert mn.refused6 == [] and len(logged) == 1


def test_a_refused_prefix_without_a_home_agent_is_recorded_as_unbound_with_the_reason() -> None:
    mn, binds, logged = logged_agent()
    mn.ha = None
    mn._refused6([P6], "ra")
    assert binds == [] and not mn._tasks
    assert logged == [("prefix_unbound", {"prefixes": [str(P6)], "by": "ra", "ha": None,
                                          "reason": "no Home Agent named for this MN"})]


def test_an_ipip_tunnel_binds_no_prefix() -> None:
    mn, binds, logged = logged_agent()
    assert mn.tunnel is not None
    mn.tunnel.kind = "ipip"
    mn._refused6([P6], "ra")
    assert binds == [] and logged[0][1]["reason"] == "a ipip tunnel carries no IPv6"


def test_the_tunnel_routes_a_bound_prefix_through_the_home_agents_link_local() -> None:
    calls: list[list[str]] = []

    async def ip(cmds: list[list[str]]) -> None:
        calls.extend(cmds)

    rules6: list[list[str]] = []

    async def ip6(cmds: list[list[str]]) -> None:
        rules6.extend(cmds)

    t = HaTunnel(SETTINGS, "vxlan", ip, ip6)
    asyncio.run(t.open(A2, ipaddress.IPv4Address("10.253.0.6"), [], [P6]))
    ha6 = "fe80::fa:3ff:fe00:1"  # EUI-64 of ha_mac 02:fa:03:00:00:01
    assert ["neigh", "replace", ha6, "lladdr", SETTINGS.ha_mac, "dev", "faha0", "nud",
            "permanent"] in calls
    assert ["route", "replace", "::/0", "via", ha6, "dev", "faha0", "table", "200"] in calls
    assert ["rule", "add", "from", str(P6), "lookup", "200", "pref", "200"] in rules6
    assert not any(c[0] == "rule" for c in calls)  # ip rule: the family on the command line
    asyncio.run(t.close())
    assert ["rule", "del", "from", str(P6), "lookup", "200", "pref", "200"] in rules6
    assert t.prefixes6 == [] and not t.up


def test_rerouted_again_the_prefix_is_debound_with_the_tunnel() -> None:
    mn, _, logged = logged_agent()
    assert mn.tunnel is not None
    mn.tunnel.up, mn.tunnel.prefixes6 = True, [P6]
    record = {"ok": True, "ar": "ar1", "rerouted": [f"{A1}/32", str(P6)], "not_rerouted": []}
    assert asyncio.run(mn.bind_not_rerouted(record)) == record
    assert logged == [("prefix_debound", {"prefixes": [str(P6)], "ar": "ar1"})]
    assert not mn.tunnel.up and mn.tunnel.prefixes6 == []
