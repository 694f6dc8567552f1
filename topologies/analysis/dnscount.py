"""Home round trips counted exactly (issue 17): the queries that reached the authoritative
server for an MN's home zone, from BIND's query log (configs/bind/named.conf.j2, ``category
queries``, ISO 8601 UTC stamps to the millisecond); and the UPDATEs BIND applied, from its own
log (issue 15). Pure functions: no root, no lab.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

# <ISO time>Z client @0x7f.. 127.0.0.1#53212 (mn1.example): query: mn1.example IN A -E(0)DC (..)
_LINE = re.compile(
    r"^(?P<t>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)\s.*?\bquery: (?P<qname>\S+) "
    r"(?P<qclass>\S+) (?P<qtype>\S+) ")


@dataclass(frozen=True)
class Query:
    t: float  # Unix seconds
    qname: str  # lowercase, no trailing dot ("" for the root)
    qtype: str


def _zone(name: str) -> str:
    return name.strip().lower().rstrip(".")


def parse_query_log(text: str) -> Iterator[Query]:
    """Every query line of a BIND query log; other lines (and torn ones) are skipped."""
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        try:
            t = datetime.fromisoformat(m["t"].replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        yield Query(t, _zone(m["qname"]), m["qtype"].upper())


def zone_of_query(q: Query, zones: Iterable[str]) -> str | None:
    """The zone whose server answers ``q``: the closest enclosing zone, except that a DS
    query at a zone's apex is answered by the parent (RFC 4035 3.1.4.1)."""
    best: str | None = None
    for raw in zones:
        z = _zone(raw)
        inside = z == "" or q.qname == z or q.qname.endswith("." + z)
        if not inside or (q.qtype == "DS" and q.qname == z and z != ""):
            continue
        if best is None or len(z) > len(best):
            best = z
    return best


LOG_SLACK_S = 0.05  # handoffs are seconds apart: 50 ms cannot reach into the previous one


def home_round_trips(query_log_text: str, zone_of_mn: str, t0: float, t1: float,
                     zones: Iterable[str] | None = None) -> int:
    """How many queries for ``zone_of_mn`` reached the home server within [t0, t1].

    ``zones``: every zone the server holds, so that a name in a child zone delegated below
    the MN's (none in the lab) is not counted; by default only the MN's zone is known and
    every name at or under it, bar its DS, counts."""
    home = _zone(zone_of_mn)
    known = list(zones) if zones is not None else [home]
    if home not in (_zone(z) for z in known):
        known.append(home)
    # BIND stamps a query with its event loop's cached time, truncated to the millisecond:
    # it can read a few milliseconds early, so the window opens LOG_SLACK_S sooner.
    return sum(1 for q in parse_query_log(query_log_text)
               if t0 - LOG_SLACK_S <= q.t <= t1 and zone_of_query(q, known) == home)


def queries_by_zone(query_log_text: str, zones: Iterable[str], t0: float, t1: float
                    ) -> dict[str, int]:
    """Every query in [t0, t1] attributed to its zone ("." for the root)."""
    known = list(zones)
    out: dict[str, int] = {}
    for q in parse_query_log(query_log_text):
        if t0 <= q.t <= t1:
            z = zone_of_query(q, known)
            if z is not None:
                key = z or "."
                out[key] = out.get(key, 0) + 1
    return out


# BIND's own log (print-time: local time to the millisecond), category update, one line per
# change an UPDATE makes: <time> update: info: client @0x.. 10.0.0.1#4242/key k: updating
# zone 'z/IN': adding an RR at ...
_UPDATE = re.compile(
    r"^(?P<t>\d\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d\.\d+) update: info: "
    r"client (?P<client>@.+?): updating zone '(?P<zone>[^']*)': ")


def parse_update_log(text: str) -> list[tuple[float, str]]:
    """(time, zone) of every UPDATE message BIND applied, from its log: the lines one
    message writes (one per record changed) share its time, client and zone, and count
    once. Other lines, and torn ones, are skipped."""
    out: list[tuple[float, str]] = []
    last: tuple[str, str, str] | None = None
    for line in text.splitlines():
        m = _UPDATE.match(line)
        if m is None:
            continue
        key = (m["t"], m["client"], m["zone"])
        if key == last:
            continue
        last = key
        try:
            t = datetime.strptime(m["t"], "%d-%b-%Y %H:%M:%S.%f").timestamp()
        except ValueError:
            continue
        out.append((t, _zone(m["zone"].removesuffix("/IN"))))
    return out


__all__ = ["Query", "home_round_trips", "parse_query_log", "parse_update_log",
           "queries_by_zone", "zone_of_query"]
