"""measure.py against literal tool output: ping, iperf3 JSON, bgpd log, traceroute, routes.

Sample text follows what iputils ping, iperf3 3.12, FRR 8.4 and traceroute print.
"""

from __future__ import annotations

import copy
import json
import random
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from topologies.analysis.measure import (
    BgpRx,
    MeasureError,
    PingReply,
    RouteEvent,
    bfs_distance,
    count_updates,
    effective,
    final_state,
    iperf_summary,
    is_shortest_path,
    parse_bgpd_log,
    parse_ping,
    parse_traceroute,
    ping_timeline,
    ping_window,
    settled_at,
    settled_series,
)

T0 = 1764280000.0

PING_SAMPLE = """\
PING 10.64.0.10 (10.64.0.10) 56(84) bytes of data.
[1764280000.010345] 64 bytes from 10.64.0.10: icmp_seq=1 ttl=60 time=0.345 ms
[1764280000.020401] 64 bytes from 10.64.0.10: icmp_seq=2 ttl=60 time=0.401 ms
[1764280000.020502] 64 bytes from 10.64.0.10: icmp_seq=2 ttl=60 time=0.502 ms (DUP!)
[1764280000.031000] no answer yet for icmp_seq=3
[1764280000.040390] 64 bytes from 10.64.0.10: icmp_seq=4 ttl=60 time=0.390 ms
[1764280000.041000] From 10.254.0.1 icmp_seq=5 Destination Host Unreachable
[1764280000.070300] 64 bytes from 10.64.0.10: icmp_seq=7 ttl=60 time=0.300 ms

--- 10.64.0.10 ping statistics ---
7 packets transmitted, 4 received, +1 duplicates, +1 errors, 42.8571% packet loss, time 61ms
rtt min/avg/max/mdev = 0.300/0.359/0.401/0.039 ms
"""


def ping_text(seqs: list[int], jitter: dict[int, float] | None = None) -> str:
    """ping -D lines for the given received seqs, sent every 10 ms with a 0.5 ms rtt."""
    lines = ["PING 10.64.0.10 (10.64.0.10) 56(84) bytes of data."]
    for s in seqs:
        recv = T0 + s * 0.01 + 0.0005 + (jitter or {}).get(s, 0.0)
        lines.append(f"[{recv:.6f}] 64 bytes from 10.64.0.10: icmp_seq={s} ttl=60 time=0.500 ms")
    return "\n".join(lines) + "\n"


def sent(seq: float) -> float:
    return T0 + seq * 0.01


# --------------------------------------------------------------------------- ping


def test_parse_ping_sample_drops_dups_and_noise() -> None:
    replies = parse_ping(PING_SAMPLE)
    assert [r.seq for r in replies] == [1, 2, 4, 7]
    # The first copy of seq 2 is kept, not the duplicate.
    assert replies[1] == PingReply(2, 1764280000.020401, 0.401)
    assert replies[0].send_ts == pytest.approx(1764280000.010000)


def test_parse_ping_sorts_and_unwraps_seq() -> None:
    text = ping_text([65534, 65535]) + "[1764280656.000500] 64 bytes from 10.64.0.10: " \
        "icmp_seq=0 ttl=60 time=0.500 ms\n"
    assert [r.seq for r in parse_ping(text)] == [65534, 65535, 65536]
    shuffled = ping_text([3]) + ping_text([1, 2])
    assert [r.seq for r in parse_ping(shuffled)] == [1, 2, 3]


def test_window_without_loss_is_one_interval() -> None:
    replies = parse_ping(ping_text(list(range(1, 201))))
    interruption, lost = ping_window(replies, sent(50), sent(150))
    assert (interruption, lost) == (10.0, 0)


def test_window_one_loss() -> None:
    replies = parse_ping(ping_text([s for s in range(1, 201) if s != 100]))
    interruption, lost = ping_window(replies, sent(50), sent(150))
    assert interruption == pytest.approx(20.0)
    assert lost == 1


def test_window_three_consecutive_losses() -> None:
    replies = parse_ping(ping_text([s for s in range(1, 201) if s not in (100, 101, 102)]))
    interruption, lost = ping_window(replies, sent(50), sent(150))
    assert interruption == pytest.approx(40.0)
    assert lost == 3
    # A window that ends before the outage does not see it.
    interruption, lost = ping_window(replies, sent(50), sent(90))
    assert (interruption, lost) == (10.0, 0)
    # A window inside the outage still sees all of the gap, and the loss inside it.
    interruption, lost = ping_window(replies, sent(100.5), sent(101.5))
    assert interruption == pytest.approx(40.0)
    assert lost == 1


def test_window_ignores_receive_time_jitter() -> None:
    # Seq 100's reply was stamped 30 ms late (ping descheduled): not a loss.
    replies = parse_ping(ping_text(list(range(1, 201)), jitter={100: 0.030}))
    interruption, lost = ping_window(replies, sent(50), sent(150))
    assert (interruption, lost) == (10.0, 0)


def test_window_counts_open_trailing_outage() -> None:
    replies = parse_ping(ping_text(list(range(1, 101))))
    interruption, lost = ping_window(replies, sent(90), sent(120.5))
    assert lost == 20
    assert interruption == pytest.approx(210.0)


def test_window_without_replies_raises() -> None:
    with pytest.raises(MeasureError):
        ping_window([], T0, T0 + 1)
    replies = parse_ping(ping_text(list(range(1, 101))))
    with pytest.raises(MeasureError):
        ping_window(replies, sent(200), sent(300))


def test_ping_timeline_marks_lost_seqs() -> None:
    timeline = ping_timeline(parse_ping(ping_text([1, 2, 5])))
    assert [rtt for _, rtt in timeline] == [0.5, 0.5, None, None, 0.5]
    assert [ts for ts, _ in timeline] == pytest.approx([sent(s) for s in range(1, 6)])


# --------------------------------------------------------------------------- iperf3


def iperf_doc(byte_runs: list[int], step: float = 0.1) -> dict[str, Any]:
    """An iperf3 -J client document with one 100 ms interval per entry of byte_runs."""
    intervals = []
    for i, b in enumerate(byte_runs):
        start, end = round(i * step, 6), round((i + 1) * step, 6)
        intervals.append({"streams": [], "sum": {
            "start": start, "end": end, "seconds": step, "bytes": b,
            "bits_per_second": b * 8 / step, "retransmits": 0, "omitted": False,
            "sender": True,
        }})
    total = len(byte_runs) * step
    return {
        "start": {"test_start": {"protocol": "TCP", "duration": int(total)}},
        "intervals": intervals,
        "end": {
            "sum_sent": {"start": 0, "end": total, "seconds": total, "bytes": sum(byte_runs),
                         "bits_per_second": sum(byte_runs) * 8 / total, "sender": True},
            "sum_received": {"start": 0, "end": total, "seconds": total,
                             "bytes": sum(byte_runs),
                             "bits_per_second": sum(byte_runs) * 8 / total, "sender": True},
        },
    }


def test_iperf_clean_run() -> None:
    s = iperf_summary(iperf_doc([262144] * 20))
    assert s == {"survived": True, "max_stall_ms": 0.0, "mean_mbps": pytest.approx(20.97152),
                 "seconds": pytest.approx(2.0), "source": "client"}


def test_iperf_300ms_zero_run() -> None:
    runs = [262144] * 10 + [0, 0, 0] + [262144] * 7 + [0] + [262144] * 5
    s = iperf_summary(iperf_doc(runs))
    assert s["survived"] is True
    assert s["max_stall_ms"] == pytest.approx(300.0)


def test_iperf_stream_dead_in_last_second() -> None:
    s = iperf_summary(iperf_doc([262144] * 10 + [0] * 11))
    assert s["survived"] is False
    assert s["max_stall_ms"] == pytest.approx(1100.0)


def test_iperf_error_key() -> None:
    doc = iperf_doc([262144] * 20)
    doc["error"] = "error - control socket has closed unexpectedly"
    assert iperf_summary(doc)["survived"] is False
    failed = {"start": {}, "intervals": [], "end": {},
              "error": "error - unable to connect to server: Connection refused"}
    s = iperf_summary(failed)
    assert (s["survived"], s["mean_mbps"], s["max_stall_ms"]) == (False, 0.0, 0.0)


def test_iperf_prefers_receiver_view() -> None:
    doc = iperf_doc([262144] * 20)
    server = iperf_doc([262144] * 5 + [0, 0] + [262144] * 13)
    server["end"]["sum_received"]["bits_per_second"] = 18e6
    doc["server_output_json"] = server
    s = iperf_summary(doc)
    assert (s["source"], s["max_stall_ms"], s["mean_mbps"]) == (
        "server", pytest.approx(200.0), pytest.approx(18.0))


def test_iperf_ignores_coarse_server_intervals() -> None:
    # A server started without -i 0.1 reports per second and would hide a 200 ms stall.
    doc = iperf_doc([262144] * 5 + [0, 0] + [262144] * 13)
    doc["server_output_json"] = iperf_doc([2097152, 2621440], step=1.0)
    assert iperf_summary(doc)["source"] == "client"
    assert iperf_summary(doc)["max_stall_ms"] == pytest.approx(200.0)


def test_iperf_without_intervals_raises() -> None:
    with pytest.raises(MeasureError):
        iperf_summary({"start": {}, "end": {}})
    doc = iperf_doc([1])
    del doc["intervals"]
    with pytest.raises(MeasureError):
        iperf_summary(copy.deepcopy(doc))


# --------------------------------------------------------------------------- bgpd log

P = "2026/11/27 21:42:"
BGPD_LOG = "\n".join([
    P + "23.100 BGP: [ZP3RE-J8N9Y] 10.255.0.5(agg1) rcvd UPDATE w/ attr: nexthop 10.255.0.9, "
        "localpref 1764280000, metric 0, path",
    P + "23.123 BGP: [XPXHJ-ZG0PX] 10.255.0.5(agg1) rcvd 10.64.0.10/32 IPv4 unicast",
    P + "23.200 BGP: [XPXHJ-ZG0PX] 10.255.0.6(agg2) rcvd 10.64.0.10/32 IPv4 unicast"
        "...duplicate ignored",
    P + "23.300 BGP: [ZZZZZ-AAAAA] 10.255.0.6(agg2) rcvd UPDATE about 10.64.0.10/32 IPv4 unicast"
        " -- DENIED due to: as-path contains our own AS;",
    P + "23.456 BGP: [XXXXX-XXXXX] 10.255.0.5(agg1) rcvd UPDATE about 10.64.0.10/32 IPv4 unicast"
        " -- withdrawn",
    P + "24 BGP: [XPXHJ-ZG0PX] 10.255.0.5 rcvd 10.64.0.100/32 IPv4 unicast",
    P + "25.000 BGP: [AAAAA-BBBBB] u1:s1 send UPDATE 10.64.0.10/32 IPv4 unicast",
    "garbage line rcvd 10.64.0.10/32",
]) + "\n"
LOG_T = 1795815743.0  # 2026-11-27T21:42:23Z


def test_parse_bgpd_log() -> None:
    rx = parse_bgpd_log(BGPD_LOG)
    host = IPv4Network("10.64.0.10/32")
    assert rx[0] == BgpRx(rx[0].ts, "10.255.0.5(agg1)", host, False)
    assert rx[0].ts == pytest.approx(LOG_T + 0.123)
    assert [(r.peer, r.withdrawn) for r in rx] == [
        ("10.255.0.5(agg1)", False), ("10.255.0.6(agg2)", False), ("10.255.0.6(agg2)", False),
        ("10.255.0.5(agg1)", True), ("10.255.0.5", False),
    ]
    assert rx[4].prefix == IPv4Network("10.64.0.100/32")
    assert rx[4].ts == pytest.approx(LOG_T + 1.0)


def test_bgpd_stamps_are_utc() -> None:
    (rx,) = parse_bgpd_log("1970/01/01 00:00:01.500 BGP: [X] p rcvd 10.0.0.0/8 IPv4 unicast\n")
    assert rx.ts == pytest.approx(1.5)


def test_count_updates() -> None:
    rx = parse_bgpd_log(BGPD_LOG)[:5]
    assert count_updates(rx, "10.64.0.10/32", LOG_T, LOG_T + 1) == 4
    assert count_updates(rx, IPv4Network("10.64.0.10/32"), LOG_T + 0.2, LOG_T + 0.3) == 2
    assert count_updates(rx, "10.64.0.0/24", LOG_T, LOG_T + 2) == 0
    assert count_updates(rx, "10.64.0.100/32", LOG_T, LOG_T + 2) == 1


# --------------------------------------------------------------------------- traceroute

TRACEROUTE = """\
traceroute to 10.64.0.10 (10.64.0.10), 16 hops max, 60 byte packets
 1  198.51.100.1  0.050 ms
 2  10.254.0.1  0.061 ms
 3  *
 4  10.64.0.10  0.101 ms
"""

#    cn - gw - core1 - agg1 - ar1
#           \ core2 /     \
#                  agg2 - ar2 ... a ring with equal-cost branches through core1 or core2.
ADJ_EDGES = [("cn", "gw"), ("gw", "core1"), ("gw", "core2"), ("core1", "agg1"),
             ("core2", "agg1"), ("agg1", "ar1"), ("core1", "agg2"), ("agg2", "ar2"),
             ("ar2", "ar1")]


def adjacency() -> dict[str, set[str]]:
    adj: dict[str, set[str]] = {}
    for a, b in ADJ_EDGES:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    return adj


def test_parse_traceroute() -> None:
    assert parse_traceroute(TRACEROUTE) == [
        IPv4Address("198.51.100.1"), IPv4Address("10.254.0.1"), None, IPv4Address("10.64.0.10"),
    ]
    with pytest.raises(MeasureError):
        parse_traceroute(" 1  not-an-address  0.1 ms\n")


def test_bfs_distance() -> None:
    adj = adjacency()
    assert bfs_distance(adj, "cn", "ar1") == 4
    assert bfs_distance(adj, "cn", "cn") == 0
    assert bfs_distance(adj, "cn", "nowhere") is None


def test_shortest_path_either_ecmp_branch() -> None:
    adj = adjacency()
    assert is_shortest_path(["gw", "core1", "agg1", "ar1"], adj, "cn", "ar1")
    assert is_shortest_path(["gw", "core2", "agg1", "ar1"], adj, "cn", "ar1")
    assert is_shortest_path(["cn", "gw", "core2", "agg1", "ar1"], adj, "cn", "ar1")


def test_shortest_path_rejects_detours_and_broken_walks() -> None:
    adj = adjacency()
    assert not is_shortest_path(["gw", "core1", "agg2", "ar2", "ar1"], adj, "cn", "ar1")
    assert not is_shortest_path(["gw", "core1", "ar1"], adj, "cn", "ar1")  # no such link
    assert not is_shortest_path(["core1", "agg1", "ar1"], adj, "cn", "ar1")  # not from cn
    assert not is_shortest_path(["gw", "core1", "agg1"], adj, "cn", "ar1")  # wrong end
    assert not is_shortest_path([], adj, "cn", "ar1")


# --------------------------------------------------------------------------- route events

DST = IPv4Network("10.64.0.10/32")
VIA_A = frozenset({"10.254.0.1"})
VIA_B = frozenset({"10.254.0.2"})
DEV = frozenset({"dev:ar1-eth2"})


def ev(ts: float, kind: str, metric: int, hops: frozenset[str], node: str = "ar1",
       dst: IPv4Network = DST) -> RouteEvent:
    assert kind in ("add", "del")
    return RouteEvent(ts, node, "add" if kind == "add" else "del", dst, metric, 186, hops)


def test_effective_lowest_metric_not_ignored() -> None:
    assert effective({20: VIA_A, 200: VIA_B}, frozenset()) == VIA_A
    assert effective({20: VIA_A, 200: VIA_B}, frozenset({20})) == VIA_B
    assert effective({20: VIA_A}, frozenset({20})) is None
    assert effective({}, frozenset()) is None


def test_settled_no_change() -> None:
    events = [ev(1.0, "add", 20, VIA_A),
              ev(5.0, "add", 20, VIA_A, node="ar2"),
              ev(5.0, "add", 20, VIA_B, dst=IPv4Network("10.64.0.11/32"))]
    assert settled_at(events, "ar1", DST, 2.0, 10.0) == 2.0
    assert final_state(events, "ar1", DST, 10.0, frozenset()) == VIA_A


def test_settled_add_then_replace() -> None:
    events = [ev(3.0, "add", 20, VIA_A), ev(3.4, "add", 20, VIA_B)]
    assert settled_at(events, "ar1", "10.64.0.10/32", 2.0, 10.0) == 3.4
    assert final_state(events, "ar1", DST, 10.0, frozenset()) == VIA_B
    # Events after t_end do not count.
    assert settled_at(events, "ar1", DST, 2.0, 3.2) == 3.0


def test_settled_ignores_temporary_metric() -> None:
    # The agent's metric-150 stopgap comes and goes; what counts is the metric-200 route.
    events = [ev(3.0, "add", 200, DEV), ev(3.1, "add", 150, VIA_A), ev(3.5, "del", 150, VIA_A)]
    assert settled_at(events, "ar1", DST, 2.0, 10.0, frozenset({150})) == 3.0
    assert settled_at(events, "ar1", DST, 2.0, 10.0) == 3.5
    assert final_state(events, "ar1", DST, 10.0, frozenset({150})) == DEV


def test_settled_after_transient_flip_back() -> None:
    events = [ev(1.0, "add", 20, VIA_A), ev(3.0, "add", 20, VIA_B), ev(3.3, "add", 20, VIA_A)]
    assert settled_at(events, "ar1", DST, 2.0, 10.0) == 3.3
    assert final_state(events, "ar1", DST, 10.0, frozenset()) == VIA_A


def test_settled_on_delete() -> None:
    events = [ev(1.0, "add", 20, VIA_A), ev(4.0, "del", 20, VIA_A)]
    assert settled_at(events, "ar1", DST, 2.0, 10.0) == 4.0
    assert final_state(events, "ar1", DST, 10.0, frozenset()) is None


def test_settled_series_is_settled_at_for_every_window_in_one_pass() -> None:
    # An hour of handoffs in miniature: one route flipping between next hops, a stopgap
    # metric coming and going, windows that overlap and come unsorted.
    rng = random.Random(7)
    events = [ev(1.0 + k * 0.25, rng.choice(["add", "add", "del"]), rng.choice([20, 150]),
                 rng.choice([VIA_A, VIA_B, DEV])) for k in range(400)]
    starts = [rng.uniform(0.0, 100.0) for _ in range(60)]
    windows = [(t0, t0 + rng.uniform(0.0, 3.0)) for t0 in starts]
    for ignore in (frozenset(), frozenset({150})):
        want = [settled_at(events, "ar1", DST, t0, t1, ignore) for t0, t1 in windows]
        assert settled_series(events, windows, ignore) == want
    assert settled_series([], [(2.0, 3.0)]) == [2.0]


def test_a_walks_stream_file_is_summarised_and_a_missing_one_did_not_survive(
        tmp_path: Path) -> None:
    from topologies.scenarios.traffic import iperf_line, iperf_result

    good = tmp_path / "iperf6.json"
    good.write_text(json.dumps(iperf_doc([262144] * 10 + [0, 0] + [262144] * 8)))
    s = iperf_result(good)
    assert s["survived"] is True and s["max_stall_ms"] == pytest.approx(200.0)
    assert "survived=True max_stall=200 ms" in iperf_line(s, "CN->MN's /64")
    # No file, a truncated one, no intervals: each a stream that did not survive, with why.
    (tmp_path / "cut.json").write_text('{"start": {')
    (tmp_path / "empty.json").write_text('{"start": {}, "end": {}}')
    for name in ("absent.json", "cut.json", "empty.json"):
        bad = iperf_result(tmp_path / name)
        assert bad["survived"] is False and bad["error"], name
        assert "max_stall=None" in iperf_line(bad, "CN->MN")
