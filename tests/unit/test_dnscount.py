"""Home round trips from BIND's query log (topologies/analysis/dnscount.py): attribution to
zones (a DS query belongs to the parent), the handoff window, junk lines skipped."""

from __future__ import annotations

from datetime import datetime

from topologies.analysis.dnscount import (
    home_round_trips,
    parse_query_log,
    parse_update_log,
    queries_by_zone,
)


def _line(t: str, qname: str, qtype: str) -> str:
    """A query line as BIND 9.18 writes it with print-time iso8601-utc."""
    return (f"2026-12-01T20:00:{t}Z client @0x7f0155 127.0.0.1#40001 ({qname}): "
            f"query: {qname} IN {qtype} -E(0)DC (127.0.0.1)")


LOG = "\n".join([
    _line("00.100", "_flatarch.mn1.example", "TLSA"),
    _line("00.105", "mn1.example", "A"),
    _line("00.106", "mn1.example", "DS"),
    _line("00.107", "_addrs.MN1.Example.", "TXT"),
    _line("00.108", "mn10.example", "A"),
    _line("00.109", "30.1.64.10.in-addr.arpa", "PTR"),
    _line("05.000", "mn1.example", "A"),
    "torn line 2026-12-01T20:00:0",
    "2026-12-01T20:00:00.110Z general: info: zone mn1.example/IN: sending notifies",
])


def _t(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_counts_only_the_home_zone_within_the_window() -> None:
    t0, t1 = _t("2026-12-01T20:00:00.000Z"), _t("2026-12-01T20:00:01.000Z")
    # TLSA, A and the order TXT (case folded); not the DS (example.'s), not mn10, not the PTR.
    assert home_round_trips(LOG, "mn1.example", t0, t1) == 3
    assert home_round_trips(LOG, "mn1.example.", t0, _t("2026-12-01T20:00:06.000Z")) == 4
    assert home_round_trips(LOG, "mn1.example", t1, t1 + 1) == 0
    assert home_round_trips("", "mn1.example", t0, t1) == 0


def test_queries_by_zone_attributes_to_the_closest_enclosing_zone() -> None:
    zones = [".", "example.", "mn1.example.", "mn10.example.", "10.in-addr.arpa.",
             "1.64.10.in-addr.arpa."]
    t0, t1 = _t("2026-12-01T20:00:00.000Z"), _t("2026-12-01T20:00:01.000Z")
    assert queries_by_zone(LOG, zones, t0, t1) == {
        "mn1.example": 3, "example": 1, "mn10.example": 1, "1.64.10.in-addr.arpa": 1}


def test_parse_keeps_millisecond_stamps() -> None:
    qs = list(parse_query_log(LOG))
    assert len(qs) == 7
    assert round(qs[1].t - qs[0].t, 3) == 0.005


# BIND's own log: two UPDATE messages of three and two lines, one torn line, one other line.
_AR3 = "update: info: client @0x7f66 10.254.0.31#42698/key ar3.isp.test: updating zone "
_MN3 = "update: info: client @0x7f66 10.65.0.100#34717/key mn3.example: updating zone "
UPDATE_LOG = "".join(line + "\n" for line in (
    f"07-Dec-2026 08:34:00.934 {_AR3}'0.65.10.in-addr.arpa/IN': deleting rrset at '100' PTR",
    f"07-Dec-2026 08:34:00.934 {_AR3}'0.65.10.in-addr.arpa/IN': adding an RR at '100' PTR m.",
    f"07-Dec-2026 08:34:00.934 {_AR3}'0.65.10.in-addr.arpa/IN': adding an RR at '100' TXT x",
    f"07-Dec-2026 08:34:01.066 {_MN3}'mn3.example/IN': deleting rrset at 'mn3.example' A",
    f"07-Dec-2026 08:34:01.066 {_MN3}'mn3.example/IN': adding an RR at 'mn3.example' A 10.6",
    "07-Dec-2026 08:34:01.070 update: info: client @0x7f66 10.65.0.100#34717/key mn3.exa",
    "07-Dec-2026 08:34:01.071 general: info: zone mn3.example/IN (signed): sending notifies"))


def test_an_update_of_several_records_counts_once_by_its_time_client_and_zone() -> None:
    got = parse_update_log(UPDATE_LOG)
    assert [z for _, z in got] == ["0.65.10.in-addr.arpa", "mn3.example"]
    assert round(got[1][0] - got[0][0], 3) == 0.132
    assert parse_update_log("") == []
