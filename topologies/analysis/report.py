"""`flatarch report`: run the flat and anchored evaluation once and write `evaluation.md` with
its tables and PNG plots. Every number in the text is read from that run's result; the
writer itself (render_markdown) is pure, so it is tested on a canned result.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from topologies.analysis.stats import percentile


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "uname": subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip(),
        "kernel": platform.release(),
        "cpus": os.cpu_count() or 0,
        "cpu_model": cpu,
        "python": platform.python_version(),
    }


def _f(v: Any, nd: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:.{nd}f}"
    return str(v)


def _table(head: list[str], rows: list[list[Any]], nd: int = 1) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(_f(c, nd) for c in row) + " |" for row in rows]
    return "\n".join(out)


def write_plots(result: dict[str, Any], out: Path, raw: Path | None = None) -> dict[str, str]:
    """The PNGs beside evaluation.md: {role: file name}. matplotlib only draws."""
    from topologies.analysis import plots

    files: dict[str, str] = {}
    hs = result["handoffs"]
    anch = [{**h} for h in hs["anchored"]] + [{**h} for h in result["warmup"]["anchored"]]
    timeline = [(float(t), r) for t, r in result["timelines"]["anchored"]]
    if timeline:
        plots.handoff_timeline(timeline, sorted(anch, key=lambda h: float(h["t_attach"])),
                               out / "anchored-handoff-timeline.png")
        files["anchored_timeline"] = "anchored-handoff-timeline.png"
    if raw is not None and (raw / "flat-handoff-timeline.png").exists():
        shutil.copyfile(raw / "flat-handoff-timeline.png", out / "flat-handoff-timeline.png")
        files["flat_timeline"] = "flat-handoff-timeline.png"
    plots.interruption_cdf([*hs["flat"], *hs["anchored"]], out / "interruption-cdf.png")
    files["cdf"] = "interruption-cdf.png"
    if result["stretch"]:
        plots.path_stretch(result["stretch"], out / "path-stretch.png")
        files["stretch"] = "path-stretch.png"
    plots.messages_per_handoff(
        {k: float(v or 0.0) for k, v in result["flat"]["messages_per_handoff"].items()},
        {k: float(v or 0.0) for k, v in result["anchored"]["messages_per_handoff"].items()},
        out / "messages-per-handoff.png")
    files["messages"] = "messages-per-handoff.png"
    if result["failures"]:
        plots.failure_timeline(result["failures"], out / "failure-timeline.png")
        files["failures"] = "failure-timeline.png"
    if result["state"]:
        plots.state_growth(result["state"], out / "state.png")
        files["state"] = "state.png"
    return files


def _img(files: dict[str, str], key: str, alt: str, prefix: str) -> str:
    return f"![{alt}]({prefix}{files[key]})\n" if key in files else f"*({alt}: not drawn)*\n"


def losses(result: dict[str, Any]) -> list[str]:
    """Each measure on which the flat architecture did not do better in this run, and why."""
    f, a = result["flat"], result["anchored"]
    out: list[str] = []

    def worse(x: Any, y: Any) -> bool:
        return x is not None and y is not None and not math.isnan(float(x)) and \
            not math.isnan(float(y)) and float(x) >= float(y)

    for mode, p95 in f.get("interruption_ms_p95_by_mode", {}).items():
        if worse(p95, a["interruption_ms_p95"]):
            out.append(
                f"**Handoff interruption, {mode} mode**: p95 {_f(p95)} ms against the anchored "
                f"{_f(a['interruption_ms_p95'])} ms. Without the redirect, the new path exists "
                "only once BGP has carried the host route through the route reflectors "
                "(FRR holds each batch 50 ms); the anchor repairs the path with one local route "
                "change after a single round trip to the HSS. The anchored figure grows with "
                f"the home distance (here {_f(result['home_rtt_ms'], 0)} ms RTT).")
    if worse(f["rtt_ms_mean"], a["rtt_ms_mean"]):
        out.append(f"**RTT**: flat {_f(f['rtt_ms_mean'], 3)} ms, anchored "
                   f"{_f(a['rtt_ms_mean'], 3)} ms. Links here have no propagation delay, so the "
                   "anchored detour costs only forwarding time, within the noise.")
    if worse(f["path_stretch_mean"], a["path_stretch_mean"]):
        out.append("**Path stretch**: the anchor sits on the CN's own path to the access "
                   "network in this topology, so the detour adds little or nothing.")
    fm = sum(float(v or 0.0) for v in f["messages_per_handoff"].values())
    am = sum(float(v or 0.0) for v in a["messages_per_handoff"].values())
    if fm >= am:
        out.append(
            f"**Messages per handoff**: flat {_f(fm)} against anchored {_f(am)}. A flat "
            "handoff is cheap over the air (one round trip, no home network) but its BGP "
            "UPDATE reaches every router that must learn the new /32, and the AR's DNS "
            "checks are queries too; the anchored handoff touches the anchor alone.")
    if worse(f["state_max_per_node"], a["state_max_per_node"]):
        out.append(
            f"**State per node**: the busiest flat router holds {f['state_max_per_node']} host "
            f"routes against {a['state_max_per_node']} bearers at the anchor. Every MN away "
            "from home costs a /32 at each router of its cluster (and at the cores once it "
            "leaves the cluster), where the anchor holds one entry per MN wherever it is; "
            "the draft's answer is address rotation (draft 2.3), which bounds how long a "
            "host route lives, not how many routers carry it.")
    hf = f.get("home_round_trips_per_handoff")
    if hf is not None and hf > 0:
        out.append(
            f"**Home round trips**: the resolver missed its cache {_f(hf, 2)} times per flat "
            "handoff (Unbound's counter over the walk, first contacts and every agent's "
            "lookups included, so an upper bound). The draft's handoff itself looks up the "
            "MN's forward name, which lives in its home zone, and short TTLs defeat the cache; "
            "the lab's name servers are local, so those misses were not delayed by the home "
            "distance the HSS emulates, which flatters the flat interruption figures.")
    return out


def render_markdown(result: dict[str, Any], machine: dict[str, Any], files: dict[str, str],
                    prefix: str = "") -> str:
    f, a = result["flat"], result["anchored"]
    lines: list[str] = []
    add = lines.append
    add("# Evaluation: the flat architecture against the anchored baseline\n")
    add(f"Generated by `flatarch report` on **{machine['date']}**, on `{machine['uname']}` "
        f"({machine['cpus']} CPUs, {machine.get('cpu_model') or 'unknown CPU'}, kernel "
        f"{machine['kernel']}, Python {machine['python']}). One lab, one run, "
        f"{_f(result['elapsed_s'], 0)} s of measurement; every number below comes from that "
        "run's JSON (`evaluation.json` beside this file).\n")
    add(f"Topology `{result['topology']}`; the walking MN is `{result['mn']}`; the anchor "
        f"(P-GW role, draft Figure 1) is `{result['anchor']}`, with an MME beside it and an "
        f"HSS at an emulated home-network distance of {_f(result['home_rtt_ms'], 0)} ms RTT "
        "(application-level delay: this kernel has no netem). Both architectures are measured "
        "in the same lab on the same walk with the same traffic: a paced ICMP probe every "
        f"10 ms from the CN and a {result.get('iperf_rate', '20M')}bit/s iperf3 TCP stream, "
        f"one handoff every {_f(result['period_s'])} s. The baseline's design is in "
        "docs/baseline.md.\n")
    add("## Summary\n")
    by_mode = f.get("interruption_ms_p95_by_mode", {})
    rows: list[list[Any]] = [
        ["handoffs measured", f["handoffs"], a["handoffs"]],
        ["interruption p50 (ms)", f["interruption_ms_p50"], a["interruption_ms_p50"]],
        ["interruption p95 (ms), all flat modes", f["interruption_ms_p95"],
         a["interruption_ms_p95"]],
        *[[f"interruption p95 (ms), flat {m} only", v, ""] for m, v in by_mode.items()],
        ["path stretch, mean over ARs", f["path_stretch_mean"], a["path_stretch_mean"]],
        ["CN→MN RTT, mean over ARs (ms)", f["rtt_ms_mean"], a["rtt_ms_mean"]],
        ["home round trips per handoff", f["home_round_trips_per_handoff"],
         a["home_round_trips_per_handoff"]],
        ["control messages per handoff",
         sum(float(v or 0) for v in f["messages_per_handoff"].values()),
         sum(float(v or 0) for v in a["messages_per_handoff"].values())],
        ["sessions surviving the failures",
         f"{f['sessions_survived_failure']}/{f['sessions_total']}",
         f"{a['sessions_survived_failure']}/{a['sessions_total']}"],
        ["worst recovery of a surviving session (ms)", f["recovery_ms_max"],
         a["recovery_ms_max"]],
        ["most per-MN state on one node", f["state_max_per_node"], a["state_max_per_node"]],
        ["iperf3 TCP survived the walk", f["iperf"].get("survived"),
         a["iperf"].get("survived")],
        ["iperf3 longest stall (ms)", f["iperf"].get("max_stall_ms"),
         a["iperf"].get("max_stall_ms")],
    ]
    add(_table(["measure", "flat", "anchored"], rows, 2) + "\n")

    add("## 1. Path stretch\n")
    add("The MN is attached at every AR in turn (flat handoff, then the anchored attach at "
        "the same AR). Hops are counted on the CN→MN path with ICMP traceroute; for the "
        "anchored address the routers inside the tunnel, invisible to its traceroute, are "
        "counted from a traceroute from the anchor to the AR's loopback. Stretch is hops over "
        "the shortest CN→MN path in the topology graph. `d` is the AR's distance from the "
        "anchor in hops.\n")
    add(_table(["AR", "d", "shortest", "flat hops", "anchored hops", "flat stretch",
                "anchored stretch", "flat RTT (ms)", "anchored RTT (ms)"],
               [[r["ar"], r["anchor_distance"], r["shortest_hops"], r["flat_hops"],
                 r["anchored_hops"], r["flat_stretch"], r["anchored_stretch"], r["flat_rtt_ms"],
                 r["anchored_rtt_ms"]] for r in result["stretch"]], 3) + "\n")
    add(_img(files, "stretch", "path length and RTT per AR", prefix))

    add("## 2. Handoff interruption\n")
    add("Interruption is the longest gap in the CN→MN probe stream around a handoff. The flat "
        "rows come from the handoff scenario run inside this report (both modes: `redirect`, "
        "the previous AR tunnels in-flight packets while BGP converges; `draft`, BGP alone); "
        "the anchored rows from the same walk on the anchored address.\n")
    mode_rows = [[r["mode"], r["kind"], r["n"], r["interruption_ms_p50"],
                  r["interruption_ms_p95"], r["ping_lost"]] for r in result["flat_summary"]]
    akinds = sorted({h["kind"] for h in result["handoffs"]["anchored"]})
    for kind in [*akinds, "all"]:
        hs = [h for h in result["handoffs"]["anchored"] if kind == "all" or h["kind"] == kind]
        vals = [float(h["interruption_ms"]) for h in hs]
        mode_rows.append(["anchored", kind, len(hs), percentile(vals, 0.5),
                          percentile(vals, 0.95),
                          sum(int(h["ping_lost"]) for h in hs)])
    add(_table(["mode", "kind", "n", "p50 (ms)", "p95 (ms)", "probes lost"], mode_rows) + "\n")
    add(_img(files, "cdf", "interruption CDF, flat modes and anchored", prefix))
    add(_img(files, "flat_timeline", "flat handoff timeline", prefix))
    add(_img(files, "anchored_timeline", "anchored handoff timeline", prefix))
    add(f"Anchored attach (UE's ATTACH to ACCEPT) p50 {_f(a.get('attach_ms_p50'))} ms, of which "
        f"the HSS round trip p50 {_f(a.get('hss_ms_p50'))} ms.\n")

    add("## 3. Control messages and round trips to the home network\n")
    add("Per handoff, mean over the measured handoffs. Flat: the one-round-trip AUTH over the "
        "air (2), queries to the ISP resolver (Unbound's counters over the whole flat walk "
        "divided by its handoffs, first contacts included: an upper bound, since every "
        "agent's lookups in that window are counted), the BGP UPDATEs the FRR routers "
        "received for the MN's /32 (the ARs' ExaBGP is not logged), and the AR-to-AR redirect "
        "exchange in redirect mode. Anchored: NAS over the air, S1 between the eNB relay and "
        "the MME, S6a to the HSS; the bearer switch itself is a local route change at the "
        "co-located anchor (a split S-GW/P-GW would add S11/S5 messages).\n")
    add(_table(["architecture", "messages per handoff, by interface", "total",
                "home round trips"],
               [["flat", ", ".join(f"{k} {_f(v, 2)}" for k, v in
                                   f["messages_per_handoff"].items()),
                 sum(float(v or 0) for v in f["messages_per_handoff"].values()),
                 f["home_round_trips_per_handoff"]],
                ["anchored", ", ".join(f"{k} {_f(v, 2)}" for k, v in
                                       a["messages_per_handoff"].items()),
                 sum(float(v or 0) for v in a["messages_per_handoff"].values()),
                 a["home_round_trips_per_handoff"]]], 2) + "\n")
    add(_img(files, "messages", "messages per handoff", prefix))

    add("## 4. Failures\n")
    add("One probe stream per MN (10 ms). A session survives when its stream is answering "
        "again before the end of the observation window; recovery is the longest gap. The "
        "anchored failure takes the anchor node down (processes killed, link down): no standby "
        "anchor exists, as in Figure 1. The flat failures are cumulative: a route reflector "
        "goes down (all its links), then, without repair, the AR serving the most MNs; its "
        "MNs re-attach at a sibling AR at once (radio-loss detection is not modelled).\n")
    add(_table(["architecture", "failure", "sessions survived", "recovery per session (ms)"],
               [[ev["arch"], ev["event"], f"{ev['survived']}/{ev['total']}",
                 ", ".join(f"{s['mn']} {_f(s['recovery_ms'], 0)}" if s["survived"]
                           else f"{s['mn']} lost" for s in ev["sessions"])]
                for ev in result["failures"]]) + "\n")
    add(_img(files, "failures", "failure timeline", prefix))

    add("## 5. State per node\n")
    add("MNs are moved one at a time into another cluster (flat handoff and anchored attach). "
        "Flat: /32 host routes in each router's kernel table inside the managed range (the "
        "serving AR's access-link route included). Anchored: bearers (per-MN routes) at the "
        "anchor and neighbour entries for anchored addresses at the ARs.\n")
    add(_table(["MNs away", "flat total", "flat busiest node", "anchored total",
                "anchored busiest node"],
               [[r["mns_away"], r["flat_total"], f"{r['flat_max']} ({r['flat_max_node']})",
                 r["anchored_total"], f"{r['anchored_max']} ({r['anchored_max_node']})"]
                for r in result["state"]]) + "\n")
    add(_img(files, "state", "state as MNs move", prefix))

    add("## Where the flat architecture does not win\n")
    lost = losses(result)
    if lost:
        lines.extend(f"- {x}" for x in lost)
        add("")
    else:
        add("In this run the flat architecture did at least as well on every measure above.\n")
    add("Limits of this comparison, whichever way the numbers fall:\n")
    add("- The lab's links have no propagation delay; RTT differences are forwarding and "
        "scheduling time on a 2-core VM, not distance. Path stretch in hops is the transferable "
        "figure.\n"
        "- The anchored baseline re-authenticates with the HSS on every handoff, as the draft "
        "describes for a new MME; LTE's intra-MME X2 handover would skip that round trip.\n"
        "- Only three MNs exist, so the failure and state figures are small counts; the trend "
        "(per-MN state on every router of a cluster versus one bearer per MN at the anchor) is "
        "what they show.\n"
        "- Nothing was tuned for either side: both use the same walk, traffic, period and "
        "netlink client for route changes.\n")
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], out: Path, machine: dict[str, Any] | None = None,
                 raw: Path | None = None, prefix: str = "",
                 markdown: Path | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    machine = machine or machine_info()
    files = write_plots(result, out, raw)
    doc = {**result, "machine": machine, "plots": files}
    (out / "evaluation.json").write_text(json.dumps(doc, indent=1, sort_keys=True,
                                                    default=str) + "\n")
    path = markdown or out / "evaluation.md"
    path.write_text(render_markdown(result, machine, files, prefix))
    return path
