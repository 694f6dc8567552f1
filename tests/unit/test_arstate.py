"""The AR agent's saved state (agents/arstate.py): what is written reads back the same, and a
file that is corrupt, truncated, of another node or of another shape is refused with a
StateError that names the field, never another exception; the journal of changes replays
over the snapshot, skips a torn last line and is left out whole when corrupt; and the
Adj-RIB-In lines from which a restarted agent learns its routes are parsed as strictly."""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest

from agents import arstate
from agents.arstate import (
    Announced,
    ArState,
    Attached,
    Binding6Record,
    LeaseRecord,
    Redirected,
    StateError,
)
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


@pytest.mark.parametrize("dual_stack", [False, True])
def test_mutated_files_never_raise_anything_but_state_error(dual_stack: bool) -> None:
    """A small fuzz: random byte flips, truncations and splices of a valid file (with the
    IPv6 maps too: the /64s and DHCPv6 bindings of issue 18)."""
    doc = _doc() if not dual_stack else ArState(**{
        **sample().__dict__, "attached6": {P1: Attached("mn1.example", 7, 1700000001)},
        "announced6": {P1: Announced(1700000001)},
        "bindings6": {"mn3.example#1": BINDING}}).to_json()
    good = json.dumps(doc, sort_keys=True).encode()
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


# --- the journal: the changes since the snapshot ------------------------------------------


def _journal(tmp_path: Path, *records: tuple[str, object, object]) -> Path:
    path = arstate.journal_path(tmp_path / arstate.STATE_FILE)
    j = arstate.Journal(path, "ar2")
    j.reset()
    j.append([arstate.record_line(m, k, v, 1700000010.0 + i)
              for i, (m, k, v) in enumerate(records)])
    j.close()
    return path


OTHER = IPv4Address("10.64.0.11")
CHANGES: tuple[tuple[str, object, object], ...] = (
    ("attached", OTHER, Attached("mn2.example", 7, 1700000005)),
    ("attached", MN, None),
    ("announced", IPv4Network("10.64.0.11/32"), Announced(1700000005)),
    ("announced", IPv4Network("10.64.0.10/32"), None),
    ("redirects", MN, Redirected("ar4", 1700000009.0)),
    ("leases", b"\x01cid", None),
    ("leases", b"\x02c", LeaseRecord(IPv4Address("10.64.1.51"), b"\x02c", "mn2.example",
                                     bytes(6), 1700000700.0, False, 0)),
    ("sources", OTHER, ("ar2-acc",)),
    ("sources", MN, None),
)


def expected_after_changes() -> ArState:
    return ArState(
        node="ar2", saved_at=1700000010.0 + len(CHANGES) - 1,
        attached={OTHER: Attached("mn2.example", 7, 1700000005)},
        announced={IPv4Network("10.64.0.11/32"): Announced(1700000005)},
        redirects={IPv4Address("10.64.1.10"): Redirected("ar5", 1700000003.0),
                   MN: Redirected("ar4", 1700000009.0)},
        leases=(LeaseRecord(IPv4Address("10.64.1.51"), b"\x02c", "mn2.example", bytes(6),
                            1700000700.0, False, 0),),
        sources={OTHER: ("ar2-acc",)},
    )


def test_journal_replays_over_the_snapshot(tmp_path: Path) -> None:
    path = tmp_path / arstate.STATE_FILE
    arstate.save(path, sample())
    _journal(tmp_path, *CHANGES)
    state, report = arstate.load_report(path, "ar2")
    assert report.error is None and not report.torn and len(report.records) == len(CHANGES)
    assert state == expected_after_changes()
    assert arstate.load_snapshot(path, "ar2") == sample()


def test_journal_alone_without_snapshot(tmp_path: Path) -> None:
    _journal(tmp_path, CHANGES[0])
    state = arstate.load(tmp_path / arstate.STATE_FILE, "ar2")
    assert state is not None and state.attached == {OTHER: Attached("mn2.example", 7, 1700000005)}


def test_replaying_twice_or_over_a_later_snapshot_changes_nothing(tmp_path: Path) -> None:
    """Compaction killed between the snapshot and emptying the journal: the old journal is
    replayed over the snapshot that already holds it."""
    path = tmp_path / arstate.STATE_FILE
    arstate.save(path, expected_after_changes())
    _journal(tmp_path, *CHANGES)
    assert arstate.load(path, "ar2") == expected_after_changes()


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / arstate.STATE_FILE
    arstate.save(path, sample())
    jpath = _journal(tmp_path, *CHANGES[:2])
    kept = jpath.read_bytes()
    whole = arstate.record_line(*CHANGES[2], 1700000020.0)
    for cut in range(1, len(whole)):  # every prefix of the next line, newline excluded
        jpath.write_bytes(kept + whole[:cut])
        state, report = arstate.load_report(path, "ar2")
        assert report.torn and report.error is None and len(report.records) == 2, cut
        assert state is not None and OTHER in state.attached and MN not in state.attached
        assert IPv4Network("10.64.0.11/32") not in state.announced


def test_an_empty_or_header_only_journal_is_the_snapshot(tmp_path: Path) -> None:
    path = tmp_path / arstate.STATE_FILE
    arstate.save(path, sample())
    jpath = arstate.journal_path(path)
    for text in (b"", arstate.header_line("ar2"), arstate.header_line("ar2")[:7]):
        jpath.write_bytes(text)
        assert arstate.load(path, "ar2") == sample()


@pytest.mark.parametrize("text, words", [
    (b'{"journal": 1, "node": "ar3"}\n', "not of 'ar2'"),
    (b'{"journal": 2, "node": "ar2"}\n', "journal version"),
    (b'not json\n{"m": "attached"}\n', "header: not JSON"),
    (b'{"journal": 1, "node": "ar2"}\ngarbage\n', "line 2: not JSON"),
    (b'{"journal": 1, "node": "ar2"}\n{"m": "nope", "k": "1.2.3.4", "v": null, "t": 0}\n',
     "no map"),
    (b'{"journal": 1, "node": "ar2"}\n{"m": "attached", "k": "1.2.3.4", "v": {}, "t": 0}\n',
     "missing"),
    (b'{"journal": 1, "node": "ar2"}\n{"m": "attached", "k": "x", "v": null, "t": 0}\n',
     "not an IPv4 address"),
    (b'{"journal": 1, "node": "ar2"}\n{"m": "leases", "k": "02", "v": null, "t": 0, "x": 1}\n',
     "unexpected"),
    (b'\xff\xfe\n', "codec"),
])
def test_a_corrupt_journal_is_left_out_and_the_snapshot_stands(
        tmp_path: Path, text: bytes, words: str) -> None:
    path = tmp_path / arstate.STATE_FILE
    arstate.save(path, sample())
    # Corrupt lines are refused even before valid ones.
    arstate.journal_path(path).write_bytes(text + arstate.record_line(*CHANGES[1], 0.0))
    state, report = arstate.load_report(path, "ar2")
    assert report.error is not None and words in report.error, report.error
    assert state == sample() and report.records == ()


def test_a_corrupt_snapshot_is_refused_whatever_the_journal(tmp_path: Path) -> None:
    path = tmp_path / arstate.STATE_FILE
    path.write_text('{"version": 1')
    _journal(tmp_path, *CHANGES)
    with pytest.raises(StateError, match="not JSON"):
        arstate.load(path, "ar2")


def test_reset_empties_the_journal_and_counts_from_zero(tmp_path: Path) -> None:
    path = arstate.journal_path(tmp_path / arstate.STATE_FILE)
    j = arstate.Journal(path, "ar2")
    j.reset()
    j.append([arstate.record_line(*CHANGES[0], 1.0), arstate.record_line(*CHANGES[1], 2.0)])
    assert j.records == 2
    j.reset()
    j.append([arstate.record_line(*CHANGES[2], 3.0)])
    j.close()
    assert j.records == 1
    report = arstate.read_journal(path, "ar2")
    assert [r.map for r in report.records] == ["announced"]


def test_mutated_journals_never_raise_anything_but_a_report() -> None:
    good = arstate.header_line("ar2") + b"".join(
        arstate.record_line(m, k, v, 1700000000.0) for m, k, v in CHANGES)
    rng = random.Random(21)
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
            report = arstate.parse_journal(b.decode(errors="replace"), "ar2")
            arstate.replay(ArState("ar2"), report.records)


def test_tracked_names_every_changed_key() -> None:
    seen: list[str] = []
    d = arstate.Tracked({"a": 1}, seen.append)
    d["b"] = 2
    del d["a"]
    d.pop("b")
    d.pop("zz", None)  # absent: no change
    d.setdefault("c", 3)
    d.setdefault("c", 4)  # present: no change
    d.update({"d": 5}, e=6)
    d.popitem()
    d.clear()
    assert seen == ["b", "a", "b", "c", "d", "e", "e", "c", "d"]
    assert d == {}


# --- the /64s of dual-stack MNs (issue 18) ----------------------------------------------------

P1, P2 = IPv6Network("2001:db8:4000:101::/64"), IPv6Network("2001:db8:4000:1c0::/64")
BINDING = Binding6Record(P2, b"\x00\x02\x00\x00~\xd9mn3.example#1", "mn3.example", 3,
                         IPv6Address("fe80::fa:ff:fe00:3"), 1700000600.0, True, 1)


def test_the_64s_are_saved_read_back_and_journalled(tmp_path: Path) -> None:
    """A /64 attached here and announced, escaped or not, comes back as it went; an IPv4-only
    state writes no IPv6 maps, so its file is what it was before they existed."""
    six = ArState(**{**sample().__dict__,
                     "attached6": {P1: Attached("mn1.example", 7, 1700000001)},
                     "announced6": {P1: Announced(1700000001, escape=True)},
                     "bindings6": {"mn3.example#1": BINDING}})
    path = tmp_path / arstate.STATE_FILE
    arstate.save(path, six)
    assert arstate.load(path, "ar2") == six
    assert "attached6" not in sample().to_json()
    _journal(tmp_path, ("attached6", P2, Attached("mn3.example", 7, 1700000006)),
             ("announced6", P2, Announced(1700000006)), ("attached6", P1, None),
             ("announced6", P1, None), ("bindings6", "mn3.example#2",
                                        replace(BINDING, remote_renewals=2)),
             ("bindings6", "mn3.example#1", None))
    state = arstate.load(path, "ar2")
    assert state is not None
    assert state.bindings6 == {"mn3.example#2": replace(BINDING, remote_renewals=2)}
    assert state.attached6 == {P2: Attached("mn3.example", 7, 1700000006)}
    assert state.announced6 == {P2: Announced(1700000006)}


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d.__setitem__("attached6", {"10.64.0.10/32": {
        "mn": "m", "ifindex": 7, "stamp": 1}}), "not an IPv6 prefix"),
    (lambda d: d.__setitem__("announced6", {str(P1): {"local_pref": "x", "escape": False}}),
     "announced6"),
    (lambda d: d.__setitem__("attached6", []), "expected an object"),
    (lambda d: d.__setitem__("routes6", {}), "routes6"),
    (lambda d: d.__setitem__("bindings6", {"mn3.example": arstate.value_json(
        "bindings6", BINDING)}), "not a lease"),
    (lambda d: d.__setitem__("bindings6", {"mn3.example#1": {
        **arstate.value_json("bindings6", BINDING), "peer": "10.0.0.1"}}), "not an IPv6 address"),
])
def test_the_ipv6_maps_are_parsed_as_strictly(mutate: Any, words: str) -> None:
    d = _doc()
    mutate(d)
    with pytest.raises(StateError, match=words):
        arstate.parse(json.dumps(d))
