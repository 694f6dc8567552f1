"""The AR agent's saved state (agents/arstate.py): what is written reads back the same, and a
file that is corrupt, truncated, of another node or of another shape is refused with a
StateError that names the field, never another exception; and the Adj-RIB-In lines from
which a restarted agent learns its routes are parsed as strictly."""

from __future__ import annotations

import contextlib
import json
import random
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from agents import arstate
from agents.arstate import Announced, ArState, Attached, LeaseRecord, Redirected, StateError
from agents.exabgp_api import ApiError, Route, parse_rib_line

MN = IPv4Address("10.64.0.10")


def sample() -> ArState:
    return ArState(
        node="ar2", saved_at=1700000000.5,
        attached={MN: Attached("mn1.example", 7, 1700000000)},
        announced={IPv4Network("10.64.0.10/32"): Announced(1700000000, escape=True)},
        redirects={IPv4Address("10.64.1.10"): Redirected("ar5", 1700000003.0)},
        leases=(LeaseRecord(IPv4Address("10.64.1.50"), b"\x01cid", "mn9.example",
                            bytes(6), 1700000600.0, True, 1),),
        sources={MN: ("ar2-acc",)},
    )


def test_saved_state_reads_back_equal_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / arstate.STATE_FILE
    arstate.save(path, sample())
    assert arstate.load(path, "ar2") == sample()
    assert [p.name for p in tmp_path.iterdir()] == [arstate.STATE_FILE]


def test_no_file_is_no_state(tmp_path: Path) -> None:
    assert arstate.load(tmp_path / arstate.STATE_FILE, "ar2") is None


def test_same_as_ignores_only_the_save_time() -> None:
    a = sample()
    assert a.same_as(ArState(**{**a.__dict__, "saved_at": 5.0}))
    assert not a.same_as(ArState(**{**a.__dict__, "announced": {}}))
    assert not a.same_as(None)


@pytest.mark.parametrize("text, words", [
    ("", "not JSON"),
    ("{\"version\": 1", "not JSON"),
    ("[]", "expected an object"),
    ("[" * 100000, "not JSON"),
])
def test_garbage_is_refused(text: str, words: str) -> None:
    with pytest.raises(StateError, match=words):
        arstate.parse(text)


def _doc() -> dict[str, object]:
    return sample().to_json()


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d.update(version=2), "version"),
    (lambda d: d.pop("leases"), "missing"),
    (lambda d: d.update(extra=1), "unexpected"),
    (lambda d: d["attached"].update({"10.64.0.300": d["attached"]["10.64.0.10"]}),
     "not an IPv4 address"),
    (lambda d: d["attached"]["10.64.0.10"].update(ifindex=0), "ifindex"),
    (lambda d: d["attached"]["10.64.0.10"].update(stamp=True), "stamp"),
    (lambda d: d["announced"]["10.64.0.10/32"].update(local_pref=1 << 32), "local_pref"),
    (lambda d: d["announced"].update({"10.64.0.10/33": {"local_pref": 1, "escape": False}}),
     "not an IPv4 prefix"),
    (lambda d: d["redirects"]["10.64.1.10"].update(deadline="soon"), "deadline"),
    (lambda d: d["leases"][0].update(client_id="zz"), "client_id"),
    (lambda d: d["leases"][0].update(mn="bad\nname"), "mn"),
    (lambda d: d["sources"].update({"10.64.0.10": "ar2-acc"}), "interface names"),
])
def test_every_field_is_checked(mutate: object, words: str) -> None:
    d = _doc()
    mutate(d)  # type: ignore[operator]
    with pytest.raises(StateError, match=words):
        arstate.parse(json.dumps(d))


def test_a_corrupt_or_foreign_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / arstate.STATE_FILE
    arstate.save(path, sample())
    with pytest.raises(StateError, match="the state of 'ar2', not of 'ar3'"):
        arstate.load(path, "ar3")
    path.write_bytes(path.read_bytes()[:40])  # torn, as by a crash mid-write of another tool
    with pytest.raises(StateError, match=str(path)):
        arstate.load(path, "ar2")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(StateError):
        arstate.load(path, "ar2")


def test_mutated_files_never_raise_anything_but_state_error() -> None:
    """A small fuzz: random byte flips, truncations and splices of a valid file."""
    good = json.dumps(_doc(), sort_keys=True).encode()
    rng = random.Random(20)
    for _ in range(3000):
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(3)
            i = rng.randrange(len(b))
            if op == 0:
                b[i] = rng.randrange(256)
            elif op == 1:
                del b[i:i + rng.randint(1, 20)]
            else:
                b[i:i] = good[rng.randrange(len(good)):][:rng.randint(1, 20)]
        with contextlib.suppress(StateError):
            arstate.parse(b.decode(errors="replace"))


RIB_LINE = ("neighbor 10.255.0.3 local-ip 10.255.0.8 local-as 65000 peer-as 65000 router-id "
            "10.255.0.8 family-allowed in-open ipv4 unicast 10.64.0.10/32 path-information "
            "0.0.0.1 next-hop 10.255.0.8 origin igp local-preference 1796167040 originator-id "
            "10.255.0.8 cluster-list [ 10.255.0.3 ]")


def test_an_adj_rib_line_gives_the_peer_and_the_route() -> None:
    peer, route = parse_rib_line(RIB_LINE)  # type: ignore[misc]
    assert peer == "10.255.0.3"
    assert route == Route(IPv4Network("10.64.0.10/32"), IPv4Address("10.255.0.8"),
                          1796167040, "0.0.0.1")
    # No LOCAL_PREF attribute: BGP's default; another family: skipped.
    _, pool = parse_rib_line("neighbor 10.255.0.3 ipv4 unicast 10.66.0.0/16 next-hop "  # type: ignore[misc]
                             "10.255.0.5 origin igp atomic-aggregate")
    assert pool.local_pref == 100 and pool.path_id == ""
    assert parse_rib_line("neighbor 10.255.0.3 ipv6 unicast ::/0 next-hop ::1") is None


@pytest.mark.parametrize("line", [
    "", "done", "neighbor x ipv4 unicast 10.0.0.0/8 next-hop 1.2.3.4",
    RIB_LINE.replace("10.64.0.10/32", "10.64.0.10/33"),
    RIB_LINE.replace("next-hop 10.255.0.8", "next-hop 10.255.0.800"),
    RIB_LINE.replace("1796167040", "99999999999"),
    RIB_LINE + " \n extra", RIB_LINE + " " + "x" * 5000,
])
def test_anything_else_is_an_api_error(line: str) -> None:
    with pytest.raises(ApiError):
        parse_rib_line(line)


def test_mutated_adj_rib_lines_never_raise_anything_but_api_error() -> None:
    rng = random.Random(21)
    for _ in range(3000):
        b = bytearray(RIB_LINE.encode())
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(b))
            b[i:i + rng.randint(0, 3)] = bytes(rng.randrange(32, 127)
                                               for _ in range(rng.randint(0, 3)))
        with contextlib.suppress(ApiError):
            parse_rib_line(b.decode())
