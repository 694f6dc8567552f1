"""`flatarch scenario idle`: an idle MN moves two ARs away inside its Tracking Area List, the
CN sends to it, its last AR buffers and pages, the MN answers where it is, and the buffer
follows it. Then the same moves by an always-connected MN, for the signalling count.
With ``--family ipv6|both`` the burst goes to the MN's IPv6 prefix (its /64 parked and paged,
issue 18); each page's record names its family.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, Self

from agents import udpstream
from topologies.analysis import measure
from topologies.lab.daemons import DeadlineError, LabError, wait_until
from topologies.lab.lab import Lab
from topologies.model import Role, Topology
from topologies.render.configs import UPDATES_LOG
from topologies.scenarios import traffic
from topologies.scenarios.base import (
    FAMILIES,
    Progress,
    RunDir,
    Scenario,
    provisioned_address,
    read_events,
    read_jsonl,
    wait_for_clock,
    write_jsonl,
)
from topologies.scenarios.handoff import (
    add_family_argument,
    dual_stack_topology,
    mn_address6,
)
from topologies.scenarios.progress import Eta
from topologies.scenarios.registry import register

STREAM_PORT = 9000
PAGES = "pages.jsonl"  # per round: where the MN idled, where it went, its packets' numbers
Events = Callable[[str], list[dict[str, Any]]]


def two_away(tal: tuple[str, ...], here: str) -> list[str]:
    """Two ARs of the list other than ``here``, in list order: the idle MN's walk."""
    return [a for a in tal if a != here][:2]


def _send_file(first: int) -> str:
    return f"send-{first}.txt"


@register
class IdleScenario(Scenario):
    name = "idle"
    help = "an idle MN moves inside its Tracking Area List, is paged, and gets its buffer"

    def __init__(self, lab: Lab, *, mn: str | None = None, rounds: int = 5, burst: int = 50,
                 interval_s: float = 0.01, out_dir: Path | None = None,
                 progress: Progress | None = None, families: list[str] | None = None) -> None:
        super().__init__(lab, mn, progress, out_dir)
        self.families = families or ["ipv4"]
        self.address = provisioned_address(self.topo, self.mn)
        self.prefix = IPv4Network((self.address, 32))
        self.targets: dict[str, IPv4Address | IPv6Address] = {"ipv4": self.address}
        if "ipv6" in self.families:
            self.targets["ipv6"] = mn_address6(self.topo, self.mn)
        self.rounds = rounds
        self.burst = burst
        self.interval_s = interval_s

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rounds", type=int, default=5, help="pages to measure")
        parser.add_argument("--burst", type=int, default=50,
                            help="packets sent to the idle MN")
        add_family_argument(parser, "page")

    @classmethod
    def topology_for(cls, args: argparse.Namespace, out_dir: Path) -> Path:
        return dual_stack_topology(args, out_dir)

    @classmethod
    def from_args(cls, lab: Lab, args: argparse.Namespace, out_dir: Path) -> Self:
        return cls(lab, rounds=args.rounds, burst=args.burst, out_dir=out_dir,
                   families=FAMILIES[getattr(args, "family", "ipv4")])

    def params(self) -> dict[str, Any]:
        return {"mn": self.mn, "rounds": self.rounds, "burst": self.burst,
                "interval_s": self.interval_s, "families": self.families}

    def _events(self, node: str) -> list[dict[str, Any]]:
        return read_events(self.lab.rundir(node) / "events.jsonl")

    def _status(self) -> dict[str, Any]:
        return self.lab.control(self.mn).request({"cmd": "status"})

    def measure(self) -> None:
        lab = self.lab
        cn = self.topo.service("cn").name
        self.progress(f"idle scenario: {self.rounds} pages of {self.mn} per family "
                      f"({', '.join(self.families)}), bursts of {self.burst} packets every "
                      f"{self.interval_s * 1000:.0f} ms")
        self.note(buffer_bound=self._bound())
        pages: list[dict[str, Any]] = []
        moves: list[list[str]] = []
        recv_file = self.dir / "recv.txt"
        eta = Eta(self.rounds * len(self.families), self.progress)
        with contextlib.ExitStack() as stack:
            # Every AR's and the MN's event log and the routers' bgpd UPDATE logs.
            stack.callback(self.keep_files, [self.mn, *(r.name for r in self.topo.routers)],
                           ("events.jsonl", UPDATES_LOG))
            stack.enter_context(traffic.udp_receiver(lab, self.mn, STREAM_PORT, recv_file))
            t_idle_phase = time.time()
            self.note(t_idle_phase=t_idle_phase)
            for family in (f for _ in range(self.rounds) for f in self.families):
                st = self._status()
                here = str(st["ar"])
                answer = lab.control(self.mn).request({"cmd": "idle"})
                if not answer.get("ok"):
                    raise LabError(f"{self.mn} could not go idle: {answer.get('error')}")
                walk = two_away(tuple(answer.get("tal") or ()), here)
                if not walk:
                    raise LabError(f"{here}'s Tracking Area List holds no other AR")
                for ar in walk:
                    lab.handoff(self.mn, ar)
                moves.append([here, *walk])
                first = 1 + len(pages) * 10000
                sent_text = traffic.udp_send(lab, cn, self.targets[family], STREAM_PORT,
                                             self.burst, self.interval_s, first)
                (self.dir / _send_file(first)).write_text(sent_text)
                pages.append({"idle_at": here, "moved_to": walk, "first": first,
                              "family": family})
                write_jsonl(self.dir / PAGES, pages)
                with contextlib.suppress(DeadlineError):  # reported as never answered
                    wait_until(lambda: not self._status()["idle"], 10,
                               f"{self.mn} to answer the page", 0.05)

                def all_in(f: int = first) -> bool:
                    return received(recv_file.read_text(), f) >= self.burst

                with contextlib.suppress(DeadlineError):  # a drop shows in the record
                    wait_until(all_in, 3, "the buffered packets", 0.05)
                p = page_record(here, walk, udpstream.parse(sent_text), recv_file.read_text(),
                                first, self.burst, self._events, self.mn, family=family)
                eta.step(
                    f"page ({family}): idle at {here}, moved to {walk[-1]}; "
                    f"paging {p['paging_ms']} ms, first packet {p['first_packet_ms']} ms, "
                    f"{p['buffered_delivered']} buffered delivered, {p['dropped']} dropped")
            t_idle_end = time.time() + 0.5
            wait_for_clock(t_idle_end)
            self.note(t_idle_end=t_idle_end)
            # The same moves, always connected: every move authenticates.
            t_conn_phase = time.time()
            self.note(t_conn_phase=t_conn_phase)
            for walk_done in moves:
                for ar in walk_done[1:]:
                    lab.handoff(self.mn, ar)
                    wait_for_clock(time.time() + 0.4)
            t_conn_end = time.time() + 0.5
            wait_for_clock(t_conn_end)
            self.note(t_conn_end=t_conn_end)
        eta.done()

    def _bound(self) -> int:
        doc = json.loads((self.lab.rundir(self.topo.by_role(Role.AR)[0].name)
                          / "agent.json").read_text())
        return int(doc["paging"]["buffer"])

    @classmethod
    def analyse(cls, out_dir: Path) -> dict[str, Any]:
        run = RunDir.open(out_dir)
        p, m = run.params, run.measured
        missing = [k for k in ("t_idle_phase", "t_idle_end", "t_conn_phase", "t_conn_end",
                               "buffer_bound") if k not in m]
        if missing:
            raise measure.MeasureError(f"{out_dir}: the measurement did not finish "
                                       f"(no {', '.join(missing)})")
        return analyse_pages(run.topo, str(p["mn"]), int(p["burst"]), float(p["interval_s"]),
                             out_dir, m, list(p.get("families") or ["ipv4"]))

    @staticmethod
    def table(result: dict[str, Any]) -> str:
        return table(result)


def received(recv_text: str, first: int) -> int:
    return sum(1 for r in udpstream.parse(recv_text) if r.kind == "recv" and r.seq >= first)


def page_record(here: str, walk: list[str], sent: list[udpstream.Record], recv_text: str,
                first: int, burst: int, events: Events, mn: str,
                t_until: float = float("inf"), family: str = "ipv4") -> dict[str, Any]:
    """One page's record; ``t_until`` (the next round's first send) bounds the events
    that belong to it, when the logs run on past this round. The AR's events of the
    family's idle table only (an IPv4 event has no "family")."""
    got = [r for r in udpstream.parse(recv_text)
           if r.kind == "recv" and first <= r.seq < first + burst]
    t0 = sent[0].ts if sent else 0.0
    ar = [e for e in events(here) if e.get("family", "ipv4") == family]
    start = [e for e in ar if e["ev"] == "page_start" and e["t"] >= t0]
    t_page = start[0]["t"] if start else t0
    flushed = [e for e in ar if e["ev"] == "flushed" and e["t"] >= t_page]
    mn_auth = [e for e in events(mn)
               if e["ev"] == "attached" and float(e["t_auth_sent"]) >= t_page]
    timeout = [e for e in ar if e["ev"] == "page_timeout" and t0 <= e["t"] < t_until]
    f = flushed[0] if flushed else {}
    seqs = [r.seq for r in got]
    paging_ms = None
    if start and mn_auth:
        # From the page until the MN's AUTH reached the AR it is on.
        paging_ms = round((float(mn_auth[0]["t_auth_sent"]) - start[0]["t"]) * 1000, 3)
    return {
        "family": family,
        "idle_at": here, "moved_to": walk, "answered_at": mn_auth[0]["ar"] if mn_auth else None,
        "paging_ms": paging_ms,
        "first_packet_ms": round((got[0].ts - t0) * 1000, 3) if got else None,
        "buffered_delivered": int(f.get("sent", 0)),
        "dropped": int(f.get("dropped", 0)) + sum(int(e.get("freed", 0)) for e in timeout),
        "received": len(got), "sent": len(sent), "in_order": seqs == sorted(seqs),
        "flush_after_page_ms": f.get("paging_ms"),
        "timed_out": bool(timeout),
    }


def signalling(topo: Topology, mn: str, t0: float, t1: float, events: Events,
               bgp_logs: dict[str, str], families: list[str] | None = None) -> dict[str, Any]:
    """Control messages in a window: datagrams of the one-message protocol (a request
    and its reply each), page broadcasts, and BGP UPDATEs for the MN's /32 (and its /64
    when IPv6 is measured: one AUTH re-routes both)."""
    prefixes: list[IPv4Network | IPv6Network] = [
        IPv4Network((topo.mobile(mn).address, 32))]
    prefix6 = topo.mobile(mn).prefix6
    if "ipv6" in (families or ()) and prefix6 is not None:
        prefixes.append(prefix6)
    count: dict[str, int] = {"mn_auth": 0, "ar_to_ar": 0, "page_broadcast": 0}
    for e in events(mn):
        if t0 <= e["t"] <= t1 and e["ev"] in ("attached", "idle"):
            count["mn_auth"] += 2
    for ar in (a.name for a in topo.by_role(Role.AR)):
        for e in events(ar):
            if not t0 <= e["t"] <= t1:
                continue
            if e["ev"] == "redirect_received":
                count["ar_to_ar"] += 2  # the redirect and its reply
            if e["ev"] == "page_broadcast":
                count["page_broadcast"] += 1
                count["ar_to_ar"] += 2  # the PAGE request and its reply
            if e["ev"] == "page_start" and ar in e.get("tal", []):
                count["page_broadcast"] += 1  # our own link, no request needed
            if e["ev"] == "redirect6_received":
                count["ar_to_ar"] += 2  # the /64s' redirect: a message of its own
    bgp = 0
    for text in bgp_logs.values():
        lines = measure.parse_bgpd_log(text)
        bgp += sum(measure.count_updates(lines, p, t0, t1) for p in prefixes)
    count["bgp_updates"] = bgp
    count["total"] = sum(count.values())
    return count


def analyse_pages(topo: Topology, mn: str, burst: int, interval_s: float, out_dir: Path,
                  m: dict[str, Any], families: list[str] | None = None) -> dict[str, Any]:
    cache: dict[str, list[dict[str, Any]]] = {}

    def events(node: str) -> list[dict[str, Any]]:
        if node not in cache:
            cache[node] = read_events(out_dir / f"{node}.events.jsonl")
        return cache[node]

    recv_text = (out_dir / "recv.txt").read_text(errors="replace")
    rows = read_jsonl(out_dir / PAGES)
    sent = [udpstream.parse((out_dir / _send_file(int(row["first"]))).read_text(
        errors="replace")) for row in rows]
    starts = [s[0].ts if s else float("inf") for s in sent]
    pages = [page_record(str(row["idle_at"]), list(row["moved_to"]), sent[i], recv_text,
                         int(row["first"]), burst, events, mn,
                         min(starts[i + 1:], default=float("inf")),
                         str(row.get("family", "ipv4")))
             for i, row in enumerate(rows)]
    bgp_logs = {r.name: (out_dir / f"{r.name}.{UPDATES_LOG}").read_text(errors="replace")
                for r in topo.routers if (out_dir / f"{r.name}.{UPDATES_LOG}").exists()}
    sig = {
        "idle": signalling(topo, mn, float(m["t_idle_phase"]), float(m["t_idle_end"]), events,
                           bgp_logs, families),
        "connected": signalling(topo, mn, float(m["t_conn_phase"]), float(m["t_conn_end"]),
                                events, bgp_logs, families),
    }
    return {
        "scenario": "idle", "topology": topo.name, "mn": mn,
        "families": families or ["ipv4"],
        "burst": burst, "interval_ms": interval_s * 1000,
        "buffer_bound": int(m["buffer_bound"]), "pages": pages,
        "signalling": {k: v["total"] for k, v in sig.items()},
        "signalling_detail": sig,
    }


def table(result: dict[str, Any]) -> str:
    head = (f"{'page':>4s} {'family':6s} {'idle at':8s} {'moved to':10s} {'paging ms':>9s} "
            f"{'1st pkt ms':>10s} {'delivered':>9s} {'dropped':>7s} {'in order':>8s}")
    lines = [head, "-" * len(head)]
    for i, p in enumerate(result["pages"], 1):
        lines.append(
            f"{i:4d} {p.get('family', 'ipv4'):6s} {p['idle_at']:8s} {p['moved_to'][-1]:10s} "
            f"{p['paging_ms'] if p['paging_ms'] is not None else '-':>9} "
            f"{p['first_packet_ms'] if p['first_packet_ms'] is not None else '-':>10} "
            f"{p['buffered_delivered']:9d} {p['dropped']:7d} {str(p['in_order']):>8s}")
    s = result["signalling"]
    lines.append(f"signalling for the same moves: idle {s['idle']} messages, "
                 f"always connected {s['connected']} messages")
    return "\n".join(lines)
