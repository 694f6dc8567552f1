"""The ExaBGP reader on well-formed JSON of the wrong shape (issue 19, defect 2): only ApiError,
never AttributeError, TypeError or RecursionError, and valid lines still parse as before.
"""

from __future__ import annotations

import contextlib
import json
from ipaddress import IPv4Network

import pytest

from agents import exabgp_api as api
from tests.unit.test_ar_rib import update_line


def _update(upd: object, peer: object = "10.255.0.3") -> str:
    return json.dumps({"type": "update", "neighbor": {"address": {"peer": peer},
                                                      "message": {"update": upd}}})


WRONG_SHAPES = [
    '{"type": "update", "neighbor": 1}',
    '{"type": "state", "neighbor": [1]}',
    '{"type": "update", "neighbor": {"address": "10.0.0.1"}}',
    '{"type": "update", "neighbor": {"address": {"peer": 7}}}',
    '{"type": "update", "neighbor": {"address": {}, "message": 5}}',
    '{"type": "update", "neighbor": {"message": {"update": [1, 2]}}}',
    _update({"attribute": 3, "announce": {}}),
    _update({"attribute": {"local-preference": "x"}, "announce": {}}),
    _update({"attribute": {"local-preference": 1e400}, "announce": {}}),
    _update({"attribute": {"local-preference": [1]}, "announce": {}}),
    _update({"attribute": {"local-preference": 1 << 40}, "announce": {}}),
    _update({"attribute": {"local-preference": True}, "announce": {}}),
    _update({"announce": []}),
    _update({"announce": {"ipv4 unicast": []}}),
    _update({"announce": {"ipv4 unicast": {"not-an-ip": [{"nlri": "10.0.0.0/8"}]}}}),
    _update({"announce": {"ipv4 unicast": {"10.0.0.1": {"nlri": "10.0.0.0/8"}}}}),
    _update({"announce": {"ipv4 unicast": {"10.0.0.1": [{"nlri": 5}]}}}),
    _update({"announce": {"ipv4 unicast": {"10.0.0.1": [{"nlri": "10.0.0.1/8"}]}}}),
    _update({"announce": {"ipv4 unicast": {"10.0.0.1": [{"nlri": "2001:db8::/32"}]}}}),
    _update({"announce": {"ipv4 unicast": {"10.0.0.1": [
        {"nlri": "10.0.0.0/8", "path-information": {"a": 1}}]}}}),
    _update({"withdraw": {"ipv4 unicast": {"10.0.0.0/8": 1}}}),
    _update({"withdraw": {"ipv4 unicast": ["10.0.0.0/8"]}}),
    _update({"withdraw": "all"}),
    '{"type": "update", "neighbor": ' + "[" * 100_000 + "]" * 100_000 + "}",
    '{"a": ' + '{"a": ' * 50_000 + "1" + "}" * 50_001,
    '{"type": "update", "x": ' + "9" * 10_000 + "}",
    '{"type": "update", "neighbor": NaN}',
    '{"type": "update"',
    "[1, 2]",
    "{\"type\": \"update\", \"neighbor\": {\"address\": {\"peer\": \"\\ud800\"}}}",
]


@pytest.mark.parametrize("line", WRONG_SHAPES, ids=range(len(WRONG_SHAPES)))
def test_wrong_shapes_raise_only_api_error(line: str) -> None:
    with contextlib.suppress(api.ApiError):
        api.parse_line(line)


@pytest.mark.parametrize("line", WRONG_SHAPES[:23], ids=range(23))
def test_wrong_field_types_are_rejected(line: str) -> None:
    with pytest.raises(api.ApiError):
        api.parse_line(line)


def test_deep_nesting_is_an_api_error() -> None:
    with pytest.raises(api.ApiError, match="bad JSON"):
        api.parse_line('{"a": ' + "[" * 200_000 + "]" * 200_000 + "}")


def test_unknown_kinds_and_missing_parts_are_ignored_not_errors() -> None:
    assert api.parse_line('{"neighbor": 1}') is None  # no type: nothing we act on
    assert api.parse_line('{"type": "keepalive", "neighbor": {"x": [1]}}') is None
    # An empty update is no End-of-RIB: only ExaBGP's explicit eor message is (below).
    assert api.parse_line(_update({})) == api.Update("10.255.0.3")
    ev = api.parse_line(_update({"announce": {"ipv4 unicast": {"10.0.0.1": [
        {"nlri": "10.0.0.0/8", "path-information": 4}]}}}))
    assert isinstance(ev, api.Update) and ev.announced[0].path_id == "4"
    assert ev.announced[0].local_pref == 100


def test_valid_update_still_parses() -> None:
    ev = api.parse_line(update_line("10.255.0.3", {"10.255.0.8": ["10.64.1.0/24"]},
                                    ["10.64.9.9/32"], lp=7))
    assert isinstance(ev, api.Update)
    assert ev.announced[0].prefix == IPv4Network("10.64.1.0/24") and ev.announced[0].local_pref == 7
    assert ev.withdrawn == [IPv4Network("10.64.9.9/32")]


# ExaBGP 5.0's line for FRR's IPv4 End-of-RIB, as its JSON encoder writes it.
EOR_LINE = ('{ "exabgp": "5.0.0", "time": 1796175680.8, "host" : "vm", "pid" : 17638, "ppid" : '
            '17636, "counter": 1, "type": "update", "neighbor": { "address": { "local": '
            '"10.255.0.7", "peer": "10.255.0.1" }, "asn": { "local": 65000, "peer": 65000 }, '
            '"router-id": "10.255.0.7" , "direction": "receive", "message": { "eor": { '
            '"afi" : "ipv4", "safi" : "unicast" } } } }')


def _eor(eor: object, **message: object) -> str:
    return json.dumps({"type": "update", "neighbor": {
        "address": {"peer": "10.255.0.1"}, "direction": "receive",
        "message": {"eor": eor, **message}}})


def test_end_of_rib_parses_with_its_family() -> None:
    assert api.parse_line(EOR_LINE) == api.Update("10.255.0.1", eor=True, family="ipv4 unicast")
    six = api.parse_line(EOR_LINE.replace('"ipv4"', '"ipv6"'))
    assert six == api.Update("10.255.0.1", eor=True, family="ipv6 unicast")


@pytest.mark.parametrize("line", [
    _eor({}), _eor(None), _eor("ipv4 unicast"), _eor([1]), _eor({"afi": "ipv4"}),
    _eor({"afi": "ipv4", "safi": 1}), _eor({"afi": "l2vpn", "safi": "evpn"}),
    _eor({"afi": "ipv4 unicast", "safi": ""}), _eor({"afi": "ipv4", "safi": "unicast"}, update={}),
    json.dumps({"type": "update", "neighbor": {"address": {"peer": "10.255.0.1"}}}),
    json.dumps({"type": "update", "neighbor": {"address": {"peer": "10.255.0.1"},
                                               "message": {}}}),
    json.dumps({"type": "update", "neighbor": {"address": {"peer": "10.255.0.1"},
                                               "direction": 3, "message": {}}}),
])
def test_a_malformed_end_of_rib_is_an_api_error_never_an_eor(line: str) -> None:
    with pytest.raises(api.ApiError):
        api.parse_line(line)


def test_our_own_echoed_updates_are_not_a_peers_end_of_rib() -> None:
    assert api.parse_line(EOR_LINE.replace('"receive"', '"send"')) is None
