"""Issue 15: the AR agent saves its state as a journal of changes, not a snapshot per event.
A change costs one line whatever the number of MNs, what a restarted agent reads is always
what was last changed, compaction folds the journal into the snapshot, and the DHCP link
check finds an MN's attachments through an index, not a scan."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from agents import ar, arstate
from agents.ar import ArAgent
from agents.arbench import ars, make_agent
from agents.handoff import Attachment, Redirect


def agent(tmp_path: Path, mobiles: int = 0) -> ArAgent:
    a = make_agent(tmp_path, ars(4))
    assert a.mobility is not None
    a._track(a.mobility)
    for i in range(mobiles):
        a.mobility.attached[IPv4Address(f"10.64.{i // 250}.{i % 250 + 2}")] = Attachment(
            f"mn{i}.example", 7, 0.0, 1000 + i)
    a._persisting = True
    a.persist()  # the first save: a snapshot
    return a


def journal_lines(a: ArAgent) -> list[bytes]:
    return arstate.journal_path(a._state_path).read_bytes().splitlines()


def test_a_change_is_one_journal_line_whatever_the_population(tmp_path: Path) -> None:
    a = agent(tmp_path, mobiles=1000)
    assert a.mobility is not None
    snapshot = a._state_path.read_bytes()
    mn = IPv4Address("10.64.9.9")
    a.mobility.attached[mn] = Attachment("new.example", 7, 0.0, 5)
    a._bgp_out[IPv4Network((mn, 32))] = arstate.Announced(5)
    a.persist()
    a.persist()  # nothing changed since: nothing written
    assert a._state_path.read_bytes() == snapshot  # the snapshot was not rewritten
    assert len(journal_lines(a)) == 3  # the header and two changes
    saved = arstate.load(a._state_path, a.node)
    assert saved is not None and len(saved.attached) == 1001
    assert saved.attached[mn] == arstate.Attached("new.example", 7, 5)
    assert saved.announced[IPv4Network((mn, 32))] == arstate.Announced(5)


def test_what_is_read_back_is_the_live_state_then_compaction_empties_the_journal(
        tmp_path: Path) -> None:
    a = agent(tmp_path, mobiles=3)
    m = a.mobility
    assert m is not None
    gone = IPv4Address("10.64.0.2")
    m.attached.pop(gone)
    m.redirects[gone] = Redirect(a.ars["ar3"], 1e9)
    a.persist()
    saved = arstate.load(a._state_path, a.node)
    assert saved is not None and saved.same_as(a.snapshot())
    assert gone not in saved.attached and saved.redirects[gone].target == "ar3"
    a._maybe_compact()  # young and small: kept
    assert len(journal_lines(a)) == 3
    a._compacted_at -= ar.COMPACT_S
    a._maybe_compact()
    assert journal_lines(a) == [arstate.header_line(a.node).strip()]
    snap = arstate.load_snapshot(a._state_path, a.node)
    assert snap is not None and snap.same_as(a.snapshot())


def test_a_long_journal_is_compacted_at_once(tmp_path: Path) -> None:
    a = agent(tmp_path)
    m = a.mobility
    assert m is not None
    for i in range(ar.JOURNAL_MAX_RECORDS):
        m.attached[IPv4Address("10.64.0.5")] = Attachment("mn.example", 7, 0.0, i)
        a.persist()
    a._maybe_compact()
    assert len(journal_lines(a)) == 1
    saved = arstate.load(a._state_path, a.node)
    assert saved is not None and saved.attached[IPv4Address("10.64.0.5")].stamp == (
        ar.JOURNAL_MAX_RECORDS - 1)


def test_nothing_is_saved_before_recovery_read_the_old_state(tmp_path: Path) -> None:
    a = make_agent(tmp_path, ars(4))
    a.persist()
    assert not a._state_path.exists()
    assert not arstate.journal_path(a._state_path).exists()


def test_the_link_check_finds_an_mn_by_name_and_interface(tmp_path: Path) -> None:
    a = agent(tmp_path, mobiles=500)
    m = a.mobility
    assert m is not None
    assert a._attached_on("mn7.example", 7) and not a._attached_on("mn7.example", 8)
    assert not a._attached_on("nobody.example", 7)
    addr = next(x for x, att in m.attached.items() if att.mn == "mn7.example")
    m.attached[addr] = Attachment("mn8.example", 7, 0.0, 1)  # the address changed hands
    assert not a._attached_on("mn7.example", 7) and a._attached_on("mn8.example", 7)
    del m.attached[addr]
    m.attached.pop(next(x for x, att in m.attached.items() if att.mn == "mn8.example"))
    assert not a._attached_on("mn8.example", 7)
    assert "mn8.example" not in a._by_mn
