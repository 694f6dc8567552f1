"""The declared experiment (`flatarch run FILE`, docs/experiments.md) as a scenario: its
traffic and timeline run in the lab and are recorded raw, and its analysis, metrics and
checks come from the run directory alone, so `flatarch analyse DIR` gives the same result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, Self

import yaml

from agents import udpstream
from agents.contract import REDIRECT_METRIC
from topologies.analysis import measure, plots
from topologies.analysis.stats import percentile_or_none
from topologies.lab.daemons import LabError, wait_until
from topologies.lab.lab import Background, Lab
from topologies.model import Role, Topology, fqdn
from topologies.render.configs import UPDATES_LOG
from topologies.scenarios import experiment, traffic
from topologies.scenarios.addresses import counted, counted6
from topologies.scenarios.base import (
    FAMILIES,
    ROUTES,
    Progress,
    RunDir,
    Scenario,
    address_owner,
    read_events,
    read_jsonl,
    wait_for_clock,
    write_jsonl,
)
from topologies.scenarios.experiment import Check, Experiment, Firing, Traffic
from topologies.scenarios.faults import managed6
from topologies.scenarios.handoff import is_dual_stack, mn_address6
from topologies.scenarios.progress import Eta
from topologies.scenarios.registry import register

EXPERIMENT_FILE = "experiment.yaml"  # the experiment as written, for the offline analysis
ACTIONS = "actions.jsonl"  # every action of the timeline: when, what it answered
PROBES = "probes.jsonl"  # the end-of-run pings and traceroutes of `reachable` and `path`
FINAL = "final.json"  # every MN's status at the end
LEAD_S = 1.5  # traffic runs this long before the timeline's zero
UDP_PORT = 9100  # the i-th UDP stream's receiver listens on UDP_PORT + i
HANDOFF_VERBS = ("handoff", "leave")


def stream_file(i: int, t: Traffic) -> str:
    six = "-ipv6" if t.family == "ipv6" else ""
    return f"{t.kind}-{i}-{t.src}-{t.dst}{six}.{'json' if t.kind == 'iperf3' else 'txt'}"


def add_family_override(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", choices=sorted(FAMILIES),
                        help="the family of every stream and check that names none, in place "
                        "of the file's `family:` (the MNs IPv6 goes to are made dual-stack)")


@register
class DeclaredExperiment(Scenario):
    """An experiment file's run: see docs/experiments.md for the format."""

    name = "experiment"
    help = "a declarative experiment file (better: `flatarch run FILE`, which builds its topology)"

    def __init__(self, lab: Lab, exp: Experiment, source: str, *, out_dir: Path | None = None,
                 progress: Progress | None = None, family: str | None = None) -> None:
        super().__init__(lab, None, progress, out_dir)
        if (exp.topology.name, exp.topology.link_profile()) != (
                lab.topo.name, lab.topo.link_profile()):
            raise LabError(f"the experiment {exp.name!r} runs on {exp.topology.name} with its "
                           f"link profile, not on this lab's {lab.topo.name} "
                           "(`flatarch run` builds its topology)")
        if single := [mn for mn in exp.mobiles6 if mn not in lab.topo.dhcp6_mobiles
                      and not is_dual_stack(lab.topo, mn)]:
            raise LabError(f"the experiment {exp.name!r} sends IPv6 to {', '.join(single)}, "
                           f"not dual-stack in this lab's {lab.topo.name} "
                           "(`flatarch run` builds its topology)")
        self.exp = exp
        self.source = source
        self.family = family  # --family, which replaced the file's `family:`
        self._owner = address_owner(self.topo)
        six = self.topo.backbone6
        self._owner6 = six.owners() if six is not None else {}
        self._mode = "redirect"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("experiment", metavar="EXPERIMENT.yaml")
        add_family_override(parser)

    @classmethod
    def topology_for(cls, args: argparse.Namespace, out_dir: Path) -> Path:
        """--topology, with the MNs the experiment sends IPv6 to made dual-stack."""
        exp = experiment.load(args.experiment, getattr(args, "family", None))
        doc = yaml.safe_load(Path(args.topology).read_text())
        plan = (doc.get("addressing") or {}).get("ipv6")
        held = set(plan.get("mobiles") or ()) if isinstance(plan, dict) else set()
        wanted = [mn for mn in exp.mobiles6 if mn not in exp.topology.dhcp_mobiles
                  and mn not in held]
        if not wanted or not isinstance(plan, dict):
            return Path(args.topology)
        plan["mobiles"] = sorted({*(plan.get("mobiles") or ()), *wanted})
        path = out_dir / "dualstack.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    @classmethod
    def from_args(cls, lab: Lab, args: argparse.Namespace, out_dir: Path) -> Self:
        path = Path(args.experiment)
        family = getattr(args, "family", None)
        return cls(lab, experiment.load(path, family), path.read_text(), out_dir=out_dir,
                   family=family)

    def params(self) -> dict[str, Any]:
        return {"experiment": self.exp.name, "file": EXPERIMENT_FILE,
                "duration_s": self.exp.duration_s, "family": self.family,
                "families": list(self.exp.families)}

    # --- the run -------------------------------------------------------------------------

    def address(self, node: str, family: str = "ipv4") -> str:
        """Where traffic to ``node`` goes: an MN's (provisioned, or leased) address, else
        the node's loopback or first interface; in IPv6, the first address of the MN's
        newest /64, else the node's IPv6 loopback or first link end."""
        if family == "ipv6":
            return self._address6(node)
        if node in self.topo.mobiles:
            if node in self.topo.dhcp_mobiles:
                st = self.lab.control(node).request({"cmd": "status"})
                if not st.get("address"):
                    raise LabError(f"{node} holds no address to send to")
                return str(st["address"])
            return str(self.topo.mobile(node).address)
        n = self.topo.nodes[node]
        return str(n.loopback if n.loopback is not None else n.interfaces[0].address)

    def _address6(self, node: str) -> str:
        six = self.topo.backbone6
        assert six is not None  # the experiment's parser refused IPv6 without it
        if node in self.topo.dhcp6_mobiles:
            held = self.lab.control(node).request({"cmd": "status"}).get("prefixes6") or []
            if not held:
                raise LabError(f"{node} holds no IPv6 prefix to send to")
            return str(IPv6Network(held[0]).network_address + 1)
        if node in self.topo.mobiles:
            return str(mn_address6(self.topo, node))
        if node in six.loopbacks:
            return str(six.loopbacks[node])
        return str(next(i.ip for (n, _), i in six.ends.items() if n == node))

    def measure(self) -> None:
        exp = self.exp
        (self.dir / EXPERIMENT_FILE).write_text(self.source)
        self.lab.set_mode(self._mode)  # every run starts from the same mode, whatever ran before
        self.progress(f"experiment {exp.name}: {len(exp.traffic)} streams, "
                      f"{len(exp.timeline)} actions over {exp.duration_s:g}s, "
                      f"{len(exp.checks)} checks")
        records: list[dict[str, Any]] = []
        eta = Eta(max(1, len(exp.timeline)), self.progress)
        with contextlib.ExitStack() as stack:
            self.watch_routes(stack, [str(self.topo.managed),
                                      *managed6(self.topo, list(exp.families))])
            nodes = [*(r.name for r in self.topo.routers), *self.topo.mobiles]
            stack.callback(self.keep_files, nodes, ("events.jsonl", UPDATES_LOG))
            pings, finite, udp_due = self._start_traffic(stack)
            t0 = time.time() + LEAD_S
            self.note(t_zero=t0)
            schedule: list[tuple[float, Firing | tuple[int, Traffic]]] = [
                *((f.t_s, f) for f in exp.timeline), *((t.start_s, (i, t)) for i, t in udp_due)]
            for t_s, what in sorted(schedule, key=lambda e: e[0]):
                wait_for_clock(t0 + t_s)
                if isinstance(what, Firing):
                    rec = self.fire(what, t0)
                    records.append(rec)
                    write_jsonl(self.dir / ACTIONS, records)
                    eta.step(f"{rec['t'] - t0:6.2f}s {what.action.text}"
                             f"{' -> ' + what.target if what.target else ''}: "
                             f"{'ok' if rec['ok'] else 'FAILED ' + str(rec.get('error'))}")
                else:
                    finite.append(stack.enter_context(self._udp_sender(*what)))
            write_jsonl(self.dir / ACTIONS, records)
            t_end = t0 + exp.duration_s
            wait_for_clock(t_end)
            for p in pings:
                p.interrupt()
            for bg in finite:
                bg.wait(15)
            self.note(t_end=t_end)
            self._end_probes()
        eta.done()

    def _start_traffic(self, stack: contextlib.ExitStack[Any]) -> tuple[
            list[Background], list[Background], list[tuple[int, Traffic]]]:
        """The pings and iperf3 pairs now, the UDP receivers now and their senders later:
        (what to interrupt at the end, what ends by itself, the senders to start)."""
        lab, length = self.lab, self.exp.duration_s + LEAD_S
        pings: list[Background] = []
        finite: list[Background] = []
        udp: list[tuple[int, Traffic]] = []
        for i, t in enumerate(self.exp.traffic):
            out = self.dir / stream_file(i, t)
            if t.kind == "ping":
                pings.append(stack.enter_context(traffic.probe(
                    lab, t.src, self.address(t.dst, t.family), out, t.interval_s)))
            elif t.kind == "iperf3":
                port = traffic.IPERF_PORT + i
                stack.enter_context(traffic.iperf_server(
                    lab, t.dst, out.with_suffix(".server.json"), port))
                finite.append(stack.enter_context(traffic.iperf_client(
                    lab, t.src, self.address(t.dst, t.family), out, length, t.rate, port,
                    udp=t.proto == "udp")))
            else:
                stack.enter_context(traffic.udp_receiver(
                    lab, t.dst, UDP_PORT + i, out.with_suffix(".recv.txt")))
                udp.append((i, t))
        return pings, finite, udp

    def _udp_sender(self, i: int, t: Traffic) -> contextlib.AbstractContextManager[Background]:
        count = t.count or max(1, int((self.exp.duration_s - t.start_s) / t.interval_s))
        cmd = [sys.executable, "-m", "agents.udpstream", "send", self.address(t.dst, t.family),
               "--port", str(UDP_PORT + i), "--count", str(count),
               "--interval", str(t.interval_s), "--first", "1"]
        return self.lab.background(t.src, cmd, self.dir / stream_file(i, t))

    def fire(self, f: Firing, t0: float) -> dict[str, Any]:
        """Do one action; a failure is recorded (and checked), never raised: the timeline
        goes on, as it would in the field."""
        a = f.action
        rec: dict[str, Any] = {"t_planned": t0 + f.t_s, "t": time.time(), "action": a.text,
                               "line": a.line, "verb": a.verb, "mode": self._mode}
        try:
            rec.update(self._do(a, f.target))
        except (LabError, OSError, subprocess.SubprocessError) as exc:
            rec.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        rec.setdefault("ok", True)
        return rec

    def _do(self, a: experiment.Action, target: str) -> dict[str, Any]:
        lab, args = self.lab, a.args
        if a.verb in ("handoff", "leave"):
            if a.verb == "leave":
                assert self.topo.outside_cell is not None  # the parser checked
                target = self.topo.outside_cell
                if lab.control(args[0]).request({"cmd": "status"}).get("ha") is None:
                    lab.control(args[0]).request({"cmd": "prepare_ha"}, timeout=30)
            rec = lab.handoff(args[0], target)
            ok = bool(rec.get("ok")) and not rec.get("not_rerouted")
            keep = ("mn", "from", "to", "t_attach", "t_auth_sent", "auth_ms", "idle", "error",
                    "not_rerouted")
            return {**{k: rec[k] for k in keep if k in rec}, "ok": ok}
        if a.verb in ("idle", "rotate"):
            answer = lab.control(args[0]).request({"cmd": a.verb}, timeout=30)
            return {"ok": bool(answer.get("ok")), "error": answer.get("error"),
                    "answer": answer}
        if a.verb == "mode":
            lab.set_mode(args[0])
            self._mode = args[0]
            return {"ok": True}
        if a.verb == "link":
            return self._link(*args)
        return self._fault(*args)

    def _link(self, a: str, b: str, state: str) -> dict[str, Any]:
        """Both ends, as a cut cable looks to both routers."""
        for here, there in ((a, b), (b, a)):
            iface = next(i.name for i in self.topo.nodes[here].interfaces if i.peer == there)
            res = self.lab.execs[here].run(["ip", "link", "set", iface, state])
            if res.returncode != 0:
                return {"ok": False, "error": f"{here}: {res.stderr.strip()[:200]}"}
        return {"ok": True}

    def _fault(self, how: str, kind: str, node: str) -> dict[str, Any]:
        """`kill`: SIGKILL, a crash; `restart`: stop if alive, start again, until ready."""
        d = next((d for d in self.lab.daemons.get(node, []) if d.kind == kind), None)
        if d is None:
            return {"ok": False, "error": f"{node} runs no {kind}"}
        if how == "kill":
            pid = d.pid()
            if pid is None:
                return {"ok": False, "error": f"{node}/{kind} is not running"}
            os.kill(pid, signal.SIGKILL)
            return {"ok": True, "pid": pid}
        d.stop()
        ex = self.lab.execs[node]
        d.start(ex)
        wait_until(lambda: d.ready(ex), d.ready_timeout, f"{node}/{kind} to be ready again")
        return {"ok": True, "pid": d.pid()}

    def _end_probes(self) -> None:
        """What the `reachable` and `path` checks need from the lab, and where each MN is."""
        rows: list[dict[str, Any]] = []
        for c in self.exp.checks:
            if c.kind == "reachable":
                src = c.nodes[0]
                for dst in c.nodes[1:]:
                    res = self.lab.execs[src].run(
                        ["ping", "-n", "-c", "5", "-i", "0.2", "-W", "1",
                         self.address(dst, c.family)], timeout=15)
                    rows.append({"line": c.line, "family": c.family, "src": src, "dst": dst,
                                 "ok": res.returncode == 0})
            elif c.kind == "path":
                hops = self._path(c.nodes[0], c.nodes[-1], c.family)
                rows.append({"line": c.line, "family": c.family, "src": c.nodes[0],
                             "dst": c.nodes[-1], "hops": hops})
        write_jsonl(self.dir / PROBES, rows)
        final = {mn: self.lab.control(mn).request({"cmd": "status"})
                 for mn in self.topo.mobiles}
        (self.dir / FINAL).write_text(json.dumps(final, indent=1, sort_keys=True) + "\n")

    def _path(self, src: str, dst: str, family: str) -> list[str | None]:
        """A traceroute that reached ``dst``; one probe a hop is lost now and then on a busy
        machine, so up to three tries, the last one counting."""
        owner = self._owner6 if family == "ipv6" else self._owner
        for _ in range(3):
            hops = traffic.trace(self.lab.execs[src], self.address(dst, family), owner,
                                 target=dst, icmp=True)
            if hops and hops[-1] == dst and None not in hops:
                break
        return hops

    # --- the analysis ----------------------------------------------------------------------

    @classmethod
    def analyse(cls, out_dir: Path) -> dict[str, Any]:
        run = RunDir.open(out_dir)
        src = out_dir / EXPERIMENT_FILE
        t_zero, t_end = (run.measured.get(k) for k in ("t_zero", "t_end"))
        if t_zero is None or t_end is None or not src.exists():
            raise measure.MeasureError(f"{out_dir}: the experiment did not finish")
        exp = experiment.parse(src.read_text(), str(src), topo=run.topo,
                               family=run.params.get("family"))
        return analyse_run(exp, out_dir, float(t_zero), float(t_end))

    @staticmethod
    def table(result: dict[str, Any]) -> str:
        return table(result)


def _ping_streams(exp: Experiment, out_dir: Path) -> list[tuple[Traffic, list[Any]]]:
    return [(t, measure.parse_ping((out_dir / stream_file(i, t)).read_text(errors="replace")))
            for i, t in enumerate(exp.traffic) if t.kind == "ping"]


def _handoffs(actions: list[dict[str, Any]], pings: list[tuple[Traffic, list[Any]]],
              t_end: float, families: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every handoff that moved the MN, once per family, with the worst interruption of
    that family's pings toward it from its radio's move until the same MN's next one."""
    moves = [a for a in actions if a["verb"] in HANDOFF_VERBS and a["ok"] and "t_attach" in a]
    out: list[dict[str, Any]] = []
    for k, a in enumerate(moves):
        nxt = next((b for b in moves[k + 1:] if b["mn"] == a["mn"]), None)
        w0 = float(a["t_attach"]) - 0.3
        w1 = float(nxt["t_attach"]) - 0.3 if nxt else t_end
        for family in families:
            worst: float | None = None
            for t, replies in pings:
                if t.dst == a["mn"] and t.family == family and w1 > w0:
                    with contextlib.suppress(measure.MeasureError):
                        gap, _ = measure.ping_window(replies, w0, w1, t.interval_s)
                        worst = max(worst or 0.0, gap)
            out.append({**a, "family": family,
                        "interruption_ms": None if worst is None else round(worst, 3)})
    return out


def _udp_lost(exp: Experiment, out_dir: Path) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(exp.traffic):
        if t.kind != "udp":
            continue
        name = stream_file(i, t)
        sent = [r for r in _records(out_dir / name) if r.kind == "sent"]
        got = {r.seq for r in _records((out_dir / name).with_suffix(".recv.txt"))
               if r.kind == "recv"}
        out.append({"src": t.src, "dst": t.dst, "family": t.family, "sent": len(sent),
                    "received": sum(1 for r in sent if r.seq in got),
                    "lost": sum(1 for r in sent if r.seq not in got)})
    return out


def _records(path: Path) -> list[udpstream.Record]:
    return udpstream.parse(path.read_text(errors="replace")) if path.exists() else []


def _iperf(exp: Experiment, out_dir: Path) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(exp.traffic):
        if t.kind == "iperf3":
            try:
                doc = json.loads((out_dir / stream_file(i, t)).read_text())
                summary = measure.iperf_summary(doc)
            except (OSError, ValueError, measure.MeasureError) as exc:
                summary = {"survived": False, "error": f"no iperf3 result: {exc}"}
            if t.proto == "udp" and "error" not in summary:
                summary.update(udp_loss(doc))
            out.append({"src": t.src, "dst": t.dst, "family": t.family, "proto": t.proto,
                        **summary})
    return out


def pages(topo: Topology, out_dir: Path, t0: float, t1: float) -> list[dict[str, Any]]:
    """Every page an AR started in [t0, t1]: which MN, and how long until that MN's AUTH
    answered it (its first AUTH sent after the page; None if it never answered)."""
    names = {fqdn("mn", mn): mn for mn in topo.mobiles}
    mn_events = {mn: read_events(out_dir / f"{mn}.events.jsonl") for mn in topo.mobiles}
    out = []
    for ar in topo.by_role(Role.AR):
        for e in read_events(out_dir / f"{ar.name}.events.jsonl"):
            if e.get("ev") != "page_start" or not t0 <= float(e["t"]) <= t1:
                continue
            mn = names.get(str(e.get("mn")))
            sent = [float(a["t_auth_sent"]) for a in mn_events.get(mn or "", [])
                    if a.get("ev") == "attached" and float(a["t_auth_sent"]) >= e["t"]]
            out.append({"ar": ar.name, "mn": mn, "t": e["t"],
                        "paging_ms": round((min(sent) - e["t"]) * 1000, 3) if sent else None})
    return sorted(out, key=lambda p: float(p["t"]))


def udp_loss(doc: dict[str, Any]) -> dict[str, Any]:
    """An iperf3 UDP test's loss and jitter as the receiver reported them back (`end.sum`),
    and its rate where the TCP summary found no received total."""
    s = (doc.get("end") or {}).get("sum") or {}
    return {"lost_packets": int(s.get("lost_packets", 0)), "packets": int(s.get("packets", 0)),
            "lost_percent": float(s.get("lost_percent", 0.0)),
            "jitter_ms": float(s.get("jitter_ms", 0.0)),
            "mean_mbps": float(s.get("bits_per_second", 0.0)) / 1e6}


def _held(topo: Topology, mn: str, st: dict[str, Any],
          family: str) -> tuple[IPv4Network | IPv6Network, bool] | None:
    """The MN's host route in ``family`` at the end (its address's /32, or its newest /64)
    and whether it is home (an aggregate covers it there); None if it holds none."""
    m = topo.mobile(mn)
    if family == "ipv4":
        address = st.get("address") or (str(m.address) if m.address else None)
        return (IPv4Network((address, 32)), m.home == st.get("ar")) if address else None
    held = st.get("prefixes6") or ([str(m.prefix6)] if m.prefix6 is not None else [])
    if not held:
        return None
    prefix = ip_network(held[0])
    pool = topo.nodes[st["ar"]].pool6 if st.get("ar") in topo.nodes else None
    return prefix, pool is not None and prefix.subnet_of(pool)  # type: ignore[arg-type]


def stale_routes(topo: Topology, events: list[measure.RouteEvent],
                 final: dict[str, Any], t_end: float, family: str = "ipv4",
                 mobiles: list[str] | None = None) -> list[str]:
    """Host routes left behind at the end, as "router: mn (why)": a redirect route, an
    access-link route on an AR the MN has left, or any mobility /32 (in IPv6, /64) for an
    MN back at its home AR (its pool's aggregate covers it there); over ``mobiles``
    (default every MN)."""
    out: list[str] = []
    count = counted6 if family == "ipv6" else counted
    for mn in topo.mobiles if mobiles is None else mobiles:
        st = final.get(mn) or {}
        held = _held(topo, mn, st, family)
        if held is None or st.get("idle"):
            continue
        prefix, home = held
        present: dict[tuple[str, int], measure.RouteEvent] = {}
        for ev in sorted(events, key=lambda e: e.ts):
            if ev.dst == prefix and ev.ts <= t_end:
                if ev.kind == "add":
                    present[(ev.node, ev.metric)] = ev
                else:
                    present.pop((ev.node, ev.metric), None)
        for (node, metric), ev in sorted(present.items()):
            if metric == REDIRECT_METRIC:
                out.append(f"{node}: {mn} (a redirect route)")
            elif not count(ev) and node != st.get("ar"):
                out.append(f"{node}: {mn} (an access-link route, {mn} is on {st.get('ar')})")
            elif count(ev) and home:
                out.append(f"{node}: {mn} (a host route, {mn} is home)")
    return out


def handoff_metrics(handoffs: list[dict[str, Any]], suffix: str) -> dict[str, float | None]:
    """The per-handoff metrics (experiment.PER_MODE) of these handoffs, named with
    ``suffix`` ("", "[mode]" or "[family]")."""
    out: dict[str, float | None] = {}
    for key in ("interruption_ms", "auth_ms"):
        # A move has a record per family but one AUTH: each move's AUTH counts once.
        by = [h for h in handoffs if h.get(key) is not None]
        vals = [float(h[key]) for h in by] if key == "interruption_ms" else [
            float(a) for a in {h["t"]: h[key] for h in by}.values()]
        out[f"{key}_p95{suffix}"] = percentile_or_none(vals, 0.95)
        out[f"{key}_max{suffix}"] = max(vals) if vals else None
    return out


def analyse_run(exp: Experiment, out_dir: Path, t0: float, t_end: float) -> dict[str, Any]:
    actions = read_jsonl(out_dir / ACTIONS) if (out_dir / ACTIONS).exists() else []
    pings = _ping_streams(exp, out_dir)
    handoffs = _handoffs(actions, pings, t_end, exp.families)
    first = exp.families[0]  # a move's record in the first family counts the move
    streams: list[dict[str, Any]] = []
    lost: list[int | None] = []
    for t, replies in pings:
        lost.append(sum(1 for _, rtt in measure.ping_timeline(replies, t.interval_s)
                        if rtt is None) if replies else None)
        streams.append({"src": t.src, "dst": t.dst, "family": t.family,
                        "received": len(replies), "lost": lost[-1]})
    udp = _udp_lost(exp, out_dir)
    iperf = _iperf(exp, out_dir)
    paging = pages(exp.topology, out_dir, t0 - LEAD_S, t_end)
    metrics: dict[str, float | None] = {
        **handoff_metrics(handoffs, ""),
        **{k: v for mode in experiment.MODES
           for k, v in handoff_metrics([h for h in handoffs if h["mode"] == mode],
                                       f"[{mode}]").items()},
        **{k: v for family in exp.families
           for k, v in handoff_metrics([h for h in handoffs if h["family"] == family],
                                       f"[{family}]").items()},
        "ping_lost": None if not lost or None in lost else sum(n or 0 for n in lost),
        "udp_lost": sum(u["lost"] for u in udp) if udp else None,
        "iperf_max_stall_ms": max((float(i["max_stall_ms"]) for i in iperf
                                   if "max_stall_ms" in i), default=None),
        "iperf_mean_mbps": min((float(i["mean_mbps"]) for i in iperf if "mean_mbps" in i),
                               default=None),
        "pages": len(paging),
        "paging_ms_max": max((p["paging_ms"] for p in paging if p["paging_ms"] is not None),
                             default=None),
        "handoffs": sum(1 for h in handoffs if h["family"] == first),
        "actions_failed": sum(1 for a in actions if not a["ok"]),
    }
    probes = read_jsonl(out_dir / PROBES) if (out_dir / PROBES).exists() else []
    final = json.loads((out_dir / FINAL).read_text()) if (out_dir / FINAL).exists() else {}
    try:
        events = measure.parse_route_events((out_dir / ROUTES).read_text())
    except OSError:
        events = []
    checks = [evaluate(c, metrics, actions, len(exp.timeline), probes,
                       lambda c=c: stale_routes(
                           exp.topology, events, final, t_end, c.family,
                           None if c.family == "ipv4" else exp.mobiles6))
              for c in exp.checks]
    plot_files: list[str] = []
    if pings and pings[0][1]:
        shown = pings[0]
        marks = [h for h in handoffs if h["mn"] == shown[0].dst and h["family"] == first]
        plot_files.append(str(plots.handoff_timeline(
            measure.ping_timeline(shown[1], shown[0].interval_s), marks,
            out_dir / "timeline.png")))
    return {"scenario": "experiment", "experiment": exp.name, "topology": exp.topology.name,
            "families": list(exp.families),
            "duration_s": exp.duration_s, "t_zero": t0, "actions": actions, "handoffs": handoffs,
            "pings": streams, "udp": udp, "pages": paging, "iperf": iperf, "metrics": metrics,
            "checks": checks, "failed": [c["check"] for c in checks if not c["ok"]],
            "plots": plot_files}


def evaluate(c: Check, metrics: dict[str, float | None], actions: list[dict[str, Any]],
             planned: int, probes: list[dict[str, Any]],
             stale: Any) -> dict[str, Any]:
    """One check's verdict, with what it saw (``stale``: computes the stale routes)."""
    out: dict[str, Any] = {"check": c.text, "line": c.line, "family": c.family}
    if c.kind == "metric":
        value = metrics.get(c.metric)
        ok = value is not None and experiment.OPS[c.op](float(value), c.bound)
        return {**out, "ok": ok, "value": value,
                "detail": "not measured in this run" if value is None else f"{value:g}"}
    if c.kind == "auth_ok":
        bad = [f"line {a['line']} {a['action']}: {a.get('error') or 'refused'}"
               for a in actions if not a["ok"]]
        if len(actions) < planned:
            bad.append(f"only {len(actions)} of {planned} actions ran")
        return {**out, "ok": not bad, "detail": "; ".join(bad) or "every action succeeded"}
    if c.kind == "no_stale_routes":
        left = stale()
        return {**out, "ok": not left, "detail": "; ".join(left) or "none"}
    rows = [p for p in probes if p["line"] == c.line
            and p.get("family", "ipv4") == c.family]
    if c.kind == "reachable":
        bad = [f"{p['src']} -> {p['dst']}" for p in rows if not p["ok"]]
        ok = bool(rows) and not bad
        return {**out, "ok": ok, "detail": ("unreachable: " + ", ".join(bad)) if bad
                else ("reachable" if rows else "not probed")}
    hops = rows[0]["hops"] if rows else None
    ok = hops is not None and len(hops) == len(c.nodes) - 1 and all(
        want in (experiment.ANY_HOP, got) for want, got in zip(c.nodes[1:], hops, strict=False))
    seen = " ".join(h or "*" for h in hops) if hops is not None else "not traced"
    return {**out, "ok": ok, "detail": f"{c.nodes[0]} {seen}"}


def table(result: dict[str, Any]) -> str:
    lines = [f"experiment {result['experiment']} on {result['topology']} "
             f"({result['duration_s']:g}s)", "",
             f"{'t (s)':>7} {'line':>4}  {'action':32s} {'ok':3s} {'auth ms':>8} "
             f"{'interr ms':>9}" + ("  (" + " / ".join(result["families"]) + ")"
                                    if len(result.get("families") or ()) > 1 else "")]
    by_t: dict[float, list[dict[str, Any]]] = {}
    for h in result["handoffs"]:
        by_t.setdefault(h["t"], []).append(h)
    t0 = float(result.get("t_zero", 0.0))  # the times are the timeline's
    for a in result["actions"]:
        hs = by_t.get(a["t"], [])
        # A cycling handoff shows where this firing went.
        text = f"handoff {a['mn']} {a['to']}" if a["verb"] == "handoff" and a.get("to") \
            else a["action"]
        auth = f"{float(a['auth_ms']):.1f}" if a.get("auth_ms") is not None else "-"
        gap = " / ".join(f"{h['interruption_ms']:.1f}" if h.get("interruption_ms") is not None
                         else "-" for h in hs) or "-"
        lines.append(f"{a['t'] - t0:7.2f} {a['line']:4d}  {text:32s} "
                     f"{'yes' if a['ok'] else 'NO':3s} {auth:>8} {gap:>9}")
    lines.append("")
    lines += textwrap.wrap("metrics: " + ", ".join(
        f"{k}={round(v, 3)}" for k, v in result["metrics"].items() if v is not None), 100,
        subsequent_indent="  ")
    lines.append("")
    for c in result["checks"]:
        lines.append(f"{'PASS' if c['ok'] else 'FAIL'}  line {c['line']:3d}  {c['check']}: "
                     f"{c['detail']}")
    return "\n".join(lines)
