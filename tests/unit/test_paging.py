"""Idle mode's wire and device formats (agents/paging.py): the page an AR broadcasts, in
either family, parsed strictly; the packets of the paging device told apart by family and
matched to the /32 or the /64 they are for."""

from __future__ import annotations

import json
import re
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path

import pytest

from agents import paging

PREFIX = IPv6Network("2001:db8:4000:1::/64")
DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def page_vectors() -> dict[str, dict[str, str]]:
    blocks = re.findall(r"^```page-vector (\w+)\n(.*?)^```", DOC.read_text(), re.S | re.M)
    return {name: dict(line.split(" = ", 1) for line in body.splitlines() if " = " in line)
            for name, body in blocks}


def test_the_documents_page_vectors_are_what_the_code_builds_and_parses() -> None:
    vectors = page_vectors()
    assert set(vectors) == {"both", "refused_host"}
    for vec in vectors.values():
        page = paging.parse_page(vec["page"].encode())
        if vec["addrs"] == "-":
            assert page is None
            continue
        addrs = [ip_network(a) if "/" in a else ip_address(a) for a in vec["addrs"].split()]
        assert page == (addrs, vec["by"])
        assert paging.page_payload(addrs, vec["by"]).decode() == vec["page"]


def v4(dst: str) -> bytes:
    return bytes([0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 198, 51, 100, 2]) + \
        IPv4Address(dst).packed


def v6(dst: str) -> bytes:
    return bytes([0x60, 0, 0, 0, 0, 0, 17, 64]) + IPv6Address("2001:db8:1::2").packed + \
        IPv6Address(dst).packed


def test_a_page_names_addresses_and_prefixes_and_parses_back() -> None:
    wire = paging.page_payload([IPv4Address("10.64.0.10"), PREFIX], "ar1.isp.test")
    assert json.loads(wire) == {"m": paging.PAGE_MAGIC, "addrs": ["10.64.0.10", str(PREFIX)],
                                "by": "ar1.isp.test"}
    assert paging.parse_page(wire) == ([IPv4Address("10.64.0.10"), PREFIX], "ar1.isp.test")


@pytest.mark.parametrize("addrs", [
    ["2001:db8:4000:1::1"],  # an IPv6 address: a page names the prefix, never one host
    ["2001:db8:4000:1::1/64"],  # host bits set: no prefix
    ["10.64.0.0/24"],  # IPv4 pages name addresses
    [7], [None], "10.64.0.10", ["10.64.0.010"],
])
def test_a_page_with_any_bad_entry_is_refused_whole(addrs: object) -> None:
    wire = json.dumps({"m": paging.PAGE_MAGIC, "addrs": addrs, "by": "x"}).encode()
    assert paging.parse_page(wire) is None


def test_a_page_is_cut_to_its_limits_and_other_json_is_no_page() -> None:
    many = [f"10.64.0.{i}" for i in range(40)]
    page = paging.parse_page(json.dumps({"m": paging.PAGE_MAGIC, "addrs": many,
                                         "by": "y" * 999}).encode())
    assert page is not None and len(page[0]) == 16 and len(page[1]) == 255
    assert paging.parse_page(b'{"m": "other", "addrs": [], "by": ""}') is None
    assert paging.parse_page(b"\xff\x00") is None and paging.parse_page(b"[]") is None


def test_device_packets_are_told_apart_by_family_and_matched_to_their_key() -> None:
    assert paging.destination(v4("10.64.0.10")) == IPv4Address("10.64.0.10")
    assert paging.destination(v6("2001:db8:4000:1::9")) == IPv6Address("2001:db8:4000:1::9")
    assert paging.prefix_of(v6("2001:db8:4000:1::9"), 64) == PREFIX
    assert paging.prefix_of(v4("10.64.0.10"), 64) is None
    assert paging.is_for(v6("2001:db8:4000:1::9"), PREFIX)
    assert not paging.is_for(v6("2001:db8:4000:2::9"), PREFIX)
    assert not paging.is_for(v4("10.64.0.10"), PREFIX)
    assert paging.is_for(v4("10.64.0.10"), IPv4Address("10.64.0.10"))
    for short in (b"", v6("::1")[:39], v4("10.0.0.1")[:19]):
        assert paging.destination(short) is None
