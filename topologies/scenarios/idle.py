"""`flatarch scenario idle`: an idle MN moves two ARs away inside its Tracking Area List, the
CN sends to it, its last AR buffers and pages, the MN answers where it is, and the buffer
follows it. Then the same moves by an always-connected MN, for the signalling count.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from agents import udpstream
from topologies.analysis import measure
from topologies.lab.daemons import DeadlineError, LabError, wait_until
from topologies.lab.lab import Lab
from topologies.model import Role
from topologies.render.configs import UPDATES_LOG
from topologies.scenarios.handoff import Scenario, read_events, wait_for_clock

STREAM_PORT = 9000
Progress = Callable[[str], None]


def two_away(tal: tuple[str, ...], here: str) -> list[str]:
    """Two ARs of the list other than ``here``, in list order: the idle MN's walk."""
    return [a for a in tal if a != here][:2]


class IdleScenario(Scenario):
    name = "idle"

    def __init__(self, lab: Lab, *, mn: str | None = None, rounds: int = 5, burst: int = 50,
                 interval_s: float = 0.01, out_dir: Path | None = None,
                 progress: Progress | None = None) -> None:
        super().__init__(lab, mn, progress, out_dir)
        self.address = self.topo.mobile(self.mn).address
        self.prefix = IPv4Network((self.address, 32))
        self.rounds = rounds
        self.burst = burst
        self.interval_s = interval_s

    def _events(self, node: str) -> list[dict[str, Any]]:
        return read_events(self.lab.rundir(node) / "events.jsonl")

    def _status(self) -> dict[str, Any]:
        return self.lab.control(self.mn).request({"cmd": "status"})

    def _send(self, first: int) -> list[udpstream.Record]:
        res = self.lab.execs[self.topo.service("cn").name].run(
            [sys.executable, "-m", "agents.udpstream", "send", str(self.address),
             "--port", str(STREAM_PORT), "--count", str(self.burst),
             "--interval", str(self.interval_s), "--first", str(first)],
            timeout=60)
        if res.returncode != 0:
            raise LabError(f"udpstream send failed: {res.stderr.strip()[:300]}")
        return udpstream.parse(res.stdout)

    def run(self) -> dict[str, Any]:
        lab = self.lab
        ars = [a.name for a in self.topo.by_role(Role.AR)]
        self.progress(f"idle scenario: {self.rounds} pages of {self.mn}, bursts of "
                      f"{self.burst} packets every {self.interval_s * 1000:.0f} ms")
        pages: list[dict[str, Any]] = []
        moves: list[list[str]] = []
        recv_file = self.dir / "recv.txt"
        with lab.background(self.mn, [sys.executable, "-m", "agents.udpstream", "recv",
                                              "--port", str(STREAM_PORT)], recv_file):
            wait_until(lambda: recv_file.exists() and "listening" in recv_file.read_text(),
                       10, "the MN's receiver")
            t_idle_phase = time.time()
            for r in range(self.rounds):
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
                first = 1 + r * 10000
                sent = self._send(first)
                with contextlib.suppress(DeadlineError):  # reported as never answered
                    wait_until(lambda: not self._status()["idle"], 10,
                               f"{self.mn} to answer the page", 0.05)
                def all_in(f: int = first) -> bool:
                    return self._received(recv_file, f) >= self.burst

                with contextlib.suppress(DeadlineError):  # a drop shows in the record
                    wait_until(all_in, 3, "the buffered packets", 0.05)
                pages.append(self._page_record(here, walk, sent, recv_file, first))
                p = pages[-1]
                self.progress(
                    f"  page {r + 1}/{self.rounds}: idle at {here}, moved to {walk[-1]}; "
                    f"paging {p['paging_ms']} ms, first packet {p['first_packet_ms']} ms, "
                    f"{p['buffered_delivered']} buffered delivered, {p['dropped']} dropped")
            t_idle_end = time.time() + 0.5
            wait_for_clock(t_idle_end)
            # The same moves, always connected: every move authenticates.
            t_conn_phase = time.time()
            for walk_done in moves:
                for ar in walk_done[1:]:
                    lab.handoff(self.mn, ar)
                    wait_for_clock(time.time() + 0.4)
            t_conn_end = time.time() + 0.5
            wait_for_clock(t_conn_end)
        signalling = {
            "idle": self._signalling(t_idle_phase, t_idle_end, ars),
            "connected": self._signalling(t_conn_phase, t_conn_end, ars),
        }
        return {
            "scenario": "idle", "topology": self.topo.name, "mn": self.mn,
            "burst": self.burst, "interval_ms": self.interval_s * 1000,
            "buffer_bound": self._bound(), "pages": pages,
            "signalling": {k: v["total"] for k, v in signalling.items()},
            "signalling_detail": signalling,
        }

    def _bound(self) -> int:
        doc = json.loads((self.lab.rundir(self.topo.by_role(Role.AR)[0].name)
                          / "agent.json").read_text())
        return int(doc["paging"]["buffer"])

    @staticmethod
    def _received(recv_file: Path, first: int) -> int:
        return sum(1 for r in udpstream.parse(recv_file.read_text())
                   if r.kind == "recv" and r.seq >= first)

    def _page_record(self, here: str, walk: list[str], sent: list[udpstream.Record],
                     recv_file: Path, first: int) -> dict[str, Any]:
        got = [r for r in udpstream.parse(recv_file.read_text())
               if r.kind == "recv" and first <= r.seq < first + self.burst]
        t0 = sent[0].ts if sent else 0.0
        start = [e for e in self._events(here) if e["ev"] == "page_start" and e["t"] >= t0]
        t_page = start[0]["t"] if start else t0
        flushed = [e for e in self._events(here) if e["ev"] == "flushed" and e["t"] >= t_page]
        mn_auth = [e for e in self._events(self.mn)
                   if e["ev"] == "attached" and float(e["t_auth_sent"]) >= t_page]
        timeout = [e for e in self._events(here) if e["ev"] == "page_timeout" and e["t"] >= t0]
        f = flushed[0] if flushed else {}
        seqs = [r.seq for r in got]
        paging_ms = None
        if start and mn_auth:
            # From the page until the MN's AUTH reached the AR it is on.
            paging_ms = round((float(mn_auth[0]["t_auth_sent"]) - start[0]["t"]) * 1000, 3)
        return {
            "idle_at": here, "moved_to": walk, "answered_at": mn_auth[0]["ar"] if mn_auth else None,
            "paging_ms": paging_ms,
            "first_packet_ms": round((got[0].ts - t0) * 1000, 3) if got else None,
            "buffered_delivered": int(f.get("sent", 0)),
            "dropped": int(f.get("dropped", 0)) + sum(int(e.get("freed", 0)) for e in timeout),
            "received": len(got), "sent": len(sent), "in_order": seqs == sorted(seqs),
            "flush_after_page_ms": f.get("paging_ms"),
            "timed_out": bool(timeout),
        }

    def _signalling(self, t0: float, t1: float, ars: list[str]) -> dict[str, Any]:
        """Control messages in a window: datagrams of the one-message protocol (a request
        and its reply each), page broadcasts, and BGP UPDATEs for the MN's /32."""
        count: dict[str, int] = {"mn_auth": 0, "ar_to_ar": 0, "page_broadcast": 0}
        for e in self._events(self.mn):
            if t0 <= e["t"] <= t1 and e["ev"] in ("attached", "idle"):
                count["mn_auth"] += 2
        for ar in ars:
            for e in self._events(ar):
                if not t0 <= e["t"] <= t1:
                    continue
                if e["ev"] == "redirect_received":
                    count["ar_to_ar"] += 2  # the redirect and its reply
                if e["ev"] == "page_broadcast":
                    count["page_broadcast"] += 1
                    count["ar_to_ar"] += 2  # the PAGE request and its reply
                if e["ev"] == "page_start" and ar in e.get("tal", []):
                    count["page_broadcast"] += 1  # our own link, no request needed
        bgp = 0
        for r in self.topo.routers:
            path = self.lab.rundir(r.name) / UPDATES_LOG
            if path.exists():
                rx = measure.parse_bgpd_log(path.read_text(errors="replace"))
                bgp += measure.count_updates(rx, self.prefix, t0, t1)
        count["bgp_updates"] = bgp
        count["total"] = sum(count.values())
        return count


def table(result: dict[str, Any]) -> str:
    head = (f"{'page':>4s} {'idle at':8s} {'moved to':10s} {'paging ms':>9s} "
            f"{'1st pkt ms':>10s} {'delivered':>9s} {'dropped':>7s} {'in order':>8s}")
    lines = [head, "-" * len(head)]
    for i, p in enumerate(result["pages"], 1):
        lines.append(
            f"{i:4d} {p['idle_at']:8s} {p['moved_to'][-1]:10s} "
            f"{p['paging_ms'] if p['paging_ms'] is not None else '-':>9} "
            f"{p['first_packet_ms'] if p['first_packet_ms'] is not None else '-':>10} "
            f"{p['buffered_delivered']:9d} {p['dropped']:7d} {str(p['in_order']):>8s}")
    s = result["signalling"]
    lines.append(f"signalling for the same moves: idle {s['idle']} messages, "
                 f"always connected {s['connected']} messages")
    return "\n".join(lines)
