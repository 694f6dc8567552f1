"""The delay line without root: its strict config, its schedule (FIFO per link, each packet
released at arrival + delay, jitter bounded and never reordering) and its netlink parser,
which must survive any datagram."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import delayline as dl

GOOD = {"name": "ar1-eth0", "netns": "/proc/1/ns/net", "queue": 3, "delay_ms": 10.0,
        "jitter_ms": 1.0}


def test_config_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"links": [GOOD]}))
    (link,) = dl.load_config(p)
    assert link == dl.LinkDelay("ar1-eth0", "/proc/1/ns/net", 3, 10.0, 1.0)


@pytest.mark.parametrize(("patch", "words"), [
    ({"delay_ms": -1}, "links[0].delay_ms"),
    ({"delay_ms": "10"}, "links[0].delay_ms"),
    ({"delay_ms": True}, "links[0].delay_ms"),
    ({"jitter_ms": 11}, "links[0].jitter_ms: 11 exceeds delay_ms 10"),
    ({"queue": 70000}, "links[0].queue"),
    ({"netns": "relative"}, "links[0].netns"),
    ({"name": ""}, "links[0].name"),
    ({"colour": "red"}, "unknown field 'colour'"),
])
def test_config_refuses_bad_values_by_name(patch: dict[str, object], words: str) -> None:
    with pytest.raises(dl.ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        dl.parse_config({"links": [{**GOOD, **patch}]})


def test_config_refuses_shape_and_duplicate_queue() -> None:
    for bad in (None, [], {"links": []}, {"links": [GOOD], "x": 1}, {"links": [1]}):
        with pytest.raises(dl.ConfigError):
            dl.parse_config(bad)
    with pytest.raises(dl.ConfigError, match="queue 3 used twice"):
        dl.parse_config({"links": [GOOD, {**GOOD, "name": "other"}]})


def _links(*delays: tuple[float, float]) -> list[dl.LinkDelay]:
    return [dl.LinkDelay(f"l{i}", "/x", i, d, j) for i, (d, j) in enumerate(delays)]


def test_schedule_releases_each_packet_at_its_delay() -> None:
    s = dl.Schedule(_links((10.0, 0.0), (2.0, 0.0)))
    s.hold(0, 1, 100.000)
    s.hold(0, 2, 100.001)
    s.hold(1, 7, 100.002)
    assert s.next_due() == pytest.approx(100.004)
    assert s.pop_due(100.0039) == []
    assert s.pop_due(100.004) == [(1, 7, 1)]
    assert s.pop_due(100.0105) == [(0, 1, 1)]
    assert s.pop_due(100.02) == [(0, 2, 1)]
    assert s.next_due() is None
    assert s.counts["held"] == s.counts["released"] == 3


def test_schedule_batches_what_is_due_together() -> None:
    s = dl.Schedule(_links((1.0, 0.0)))
    for pid in range(1, 6):
        s.hold(0, pid, 50.0 + pid * 1e-5)
    assert s.pop_due(51.0) == [(0, 5, 5)]


def test_jitter_is_bounded_and_never_reorders() -> None:
    values = iter([1.0, 0.0, 0.5, 1.0, 0.0] * 200)
    s = dl.Schedule(_links((10.0, 2.0)), rng=lambda: next(values))
    dues = []
    for pid in range(1000):
        arrived = pid * 1e-4
        s.hold(0, pid, arrived)
        due = s.held[0][-1][0]
        assert arrived + 0.008 - 1e-9 <= due
        dues.append(due)
    assert dues == sorted(dues)
    released = s.pop_due(1e9)
    assert released == [(0, 999, 1000)]


def _packet(queue: int, pid: int) -> bytes:
    hdr = struct.pack("=HH", 11, dl.NFQA_PACKET_HDR) + struct.pack("!IHB", pid, 0x800, 4)
    hdr += b"\0"
    body = struct.pack("=BBH", 2, 0, struct.unpack("=H", struct.pack("!H", queue))[0]) + hdr
    kind = (dl.NFNL_SUBSYS_QUEUE << 8) | dl.NFQNL_MSG_PACKET
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_parse_packets_and_errors() -> None:
    err = struct.pack("=IHHII", 36, dl.NLMSG_ERROR, 0, 9, 0) + struct.pack("=i", -16) + bytes(16)
    got = dl.parse_messages(_packet(5, 42) + _packet(5, 43) + err)
    assert got == [("packet", 5, 42), ("packet", 5, 43), ("error", 16, 9)]


def test_verdict_encoding() -> None:
    msg = dl.verdict(5, 42, batch=True)
    length, kind, flags, _, _ = struct.unpack_from("=IHHII", msg)
    assert length == len(msg) == 16 + 4 + 12
    assert kind == (3 << 8) | dl.NFQNL_MSG_VERDICT_BATCH and flags == dl.NLM_F_REQUEST
    assert msg[18:20] == b"\x00\x05"  # the queue number, big-endian
    assert struct.unpack_from("!II", msg, 24) == (dl.NF_ACCEPT, 42)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_parser_never_raises_on_garbage(data: bytes) -> None:
    for what, a, b in dl.parse_messages(data):
        assert what in ("packet", "error") and isinstance(a, int) and isinstance(b, int)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 64))
def test_parser_survives_truncated_and_corrupted_packets(junk: bytes, cut: int) -> None:
    good = _packet(1, 7)
    dl.parse_messages(good[:cut] + junk)
    dl.parse_messages(good + junk)
