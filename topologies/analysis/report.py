"""`flatarch report`: the flat and anchored evaluation (one baseline run per distance: zero
delay and each of the topology's distance sets) written as one `evaluation.md`, the distances
side by side, with PNG plots. Every number in the text is read from those runs' results; the
writer itself (render_markdown) is pure, so it is tested on canned results.
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


COLUMNS = ("flat", "flat_draft", "anchored")


def write_plots(result: dict[str, Any], out: Path, raw: Path | None = None,
                tag: str = "") -> dict[str, str]:
    """One run's PNGs beside evaluation.md, named after its distance: {role: file name}.
    matplotlib only draws."""
    from topologies.analysis import plots

    files: dict[str, str] = {}
    pre = f"{tag}-" if tag else ""
    hs = result["handoffs"]
    anch = [{**h} for h in hs["anchored"]] + [{**h} for h in result["warmup"]["anchored"]]
    timeline = [(float(t), r) for t, r in result["timelines"]["anchored"]]
    if timeline:
        plots.handoff_timeline(timeline, sorted(anch, key=lambda h: float(h["t_attach"])),
                               out / f"{pre}anchored-handoff-timeline.png")
        files["anchored_timeline"] = f"{pre}anchored-handoff-timeline.png"
    for key in COLUMNS[:2]:
        src = raw / f"{key}-handoff-timeline.png" if raw is not None else None
        if src is not None and src.exists():
            shutil.copyfile(src, out / f"{pre}{key}-handoff-timeline.png")
            files[f"{key}_timeline"] = f"{pre}{key}-handoff-timeline.png"
    plots.interruption_cdf([h for c in COLUMNS for h in hs.get(c, [])],
                           out / f"{pre}interruption-cdf.png")
    files["cdf"] = f"{pre}interruption-cdf.png"
    if result["stretch"]:
        plots.path_stretch(result["stretch"], out / f"{pre}path-stretch.png")
        files["stretch"] = f"{pre}path-stretch.png"
    plots.messages_per_handoff(
        {k: float(v or 0.0) for k, v in result["flat"]["messages_per_handoff"].items()},
        {k: float(v or 0.0) for k, v in result["anchored"]["messages_per_handoff"].items()},
        out / f"{pre}messages-per-handoff.png")
    files["messages"] = f"{pre}messages-per-handoff.png"
    if result["failures"]:
        plots.failure_timeline(result["failures"], out / f"{pre}failure-timeline.png")
        files["failures"] = f"{pre}failure-timeline.png"
    if result["state"]:
        plots.state_growth(result["state"], out / f"{pre}state.png")
        files["state"] = f"{pre}state.png"
    return files


def _img(files: dict[str, str], key: str, alt: str, prefix: str) -> str:
    return f"![{alt}]({prefix}{files[key]})\n" if key in files else f"*({alt}: not drawn)*\n"


def _total(messages: dict[str, Any]) -> float:
    return sum(float(v or 0.0) for v in messages.values())


def _fails(b: dict[str, Any]) -> str | None:
    if b.get("sessions_survived_failure") is None:
        return None
    return f"{b['sessions_survived_failure']}/{b['sessions_total']}"


def _size(b: dict[str, Any]) -> str | None:
    sz = b.get("auth_size")
    return None if not sz else f"{_f(sz['min'], 0)} / {_f(sz['p50'], 0)} / {_f(sz['max'], 0)}"


SUMMARY_ROWS: list[tuple[str, Any]] = [
    ("handoffs measured", lambda b: b["handoffs"]),
    ("interruption p50 (ms)", lambda b: b["interruption_ms_p50"]),
    ("interruption p95 (ms)", lambda b: b["interruption_ms_p95"]),
    ("reroute p50 (ms)", lambda b: b.get("reroute_ms_p50")),
    ("reroute p95 (ms)", lambda b: b.get("reroute_ms_p95")),
    ("auth / attach p50 (ms)", lambda b: b.get("auth_ms_p50", b.get("attach_ms_p50"))),
    ("auth / attach p95 (ms)", lambda b: b.get("auth_ms_p95", b.get("attach_ms_p95"))),
    ("home round trips per handoff", lambda b: b["home_round_trips_per_handoff"]),
    ("AUTH size min / p50 / max (octets)", _size),
    ("control messages per handoff", lambda b: _total(b["messages_per_handoff"])),
    ("path stretch, mean over ARs", lambda b: b["path_stretch_mean"]),
    ("CN→MN RTT, mean over ARs (ms)", lambda b: b["rtt_ms_mean"]),
    ("sessions surviving the failures", _fails),
    ("worst recovery of a surviving session (ms)", lambda b: b["recovery_ms_max"]),
    ("most per-MN state on one node", lambda b: b["state_max_per_node"]),
    ("iperf3 TCP survived the walk", lambda b: b["iperf"].get("survived")),
    ("iperf3 longest stall (ms)", lambda b: b["iperf"].get("max_stall_ms")),
]


def _config(result: dict[str, Any], col: str) -> str:
    c = result.get("configs", {}).get(col)
    return f"{col} ({c['mode']}, {c['dns_mode']})" if c else col


def losses(result: dict[str, Any]) -> list[str]:
    """Each measure on which a flat configuration did not do better than the anchored
    baseline in this run, and why."""
    a = result["anchored"]
    out: list[str] = []

    def worse(x: Any, y: Any) -> bool:
        return x is not None and y is not None and not math.isnan(float(x)) and \
            not math.isnan(float(y)) and float(x) >= float(y)

    for col in COLUMNS[:2]:
        b = result.get(col)
        if b is None:
            continue
        name = _config(result, col)
        if worse(b["interruption_ms_p95"], a["interruption_ms_p95"]):
            why = ("Without the redirect, the new path exists only once BGP has carried the "
                   "host route through the route reflectors (FRR holds each batch 50 ms). "
                   if b.get("mode") == "draft" else
                   "The redirect covers the wait for BGP, but its detour through the previous "
                   "AR and the AUTH's own round trip remain. ")
            out.append(
                f"**Handoff interruption, {name}**: p95 {_f(b['interruption_ms_p95'])} ms "
                f"against the anchored {_f(a['interruption_ms_p95'])} ms. {why}"
                "The anchor repairs the path with one local route change after a single "
                "round trip to the HSS, which grows with the home distance (here "
                f"{_f(result['home_rtt_ms'], 0)} ms RTT).")
        if worse(b["home_round_trips_per_handoff"], a["home_round_trips_per_handoff"]):
            out.append(
                f"**Home round trips, {name}**: {_f(b['home_round_trips_per_handoff'], 2)} "
                "queries reached the MN's home zones per handoff (BIND's query log, exact), "
                f"against the anchored {_f(a['home_round_trips_per_handoff'], 2)}: the AR "
                "looks up the MN's forward name, which lives in its home zone, and short TTLs "
                "defeat the cache. The stapled mode carries those answers in the AUTH.")
        if worse(_total(b["messages_per_handoff"]), _total(a["messages_per_handoff"])):
            out.append(
                f"**Messages per handoff, {name}**: {_f(_total(b['messages_per_handoff']))} "
                f"against anchored {_f(_total(a['messages_per_handoff']))}. A flat handoff "
                "is cheap over the air (one round trip) but its BGP UPDATE reaches every "
                "router that must learn the new /32, and the AR's DNS checks are queries "
                "too; the anchored handoff touches the anchor alone.")
    f = result["flat"]
    if worse(f["rtt_ms_mean"], a["rtt_ms_mean"]):
        out.append(f"**RTT**: flat {_f(f['rtt_ms_mean'], 3)} ms, anchored "
                   f"{_f(a['rtt_ms_mean'], 3)} ms. The anchor sits on the CN's own path "
                   "(beside core1) in this topology, so its detour adds little distance.")
    if worse(f["path_stretch_mean"], a["path_stretch_mean"]):
        out.append("**Path stretch**: the anchor sits on the CN's own path to the access "
                   "network in this topology, so the detour adds little or nothing.")
    if worse(f["state_max_per_node"], a["state_max_per_node"]):
        out.append(
            f"**State per node**: the busiest flat router holds {f['state_max_per_node']} host "
            f"routes against {a['state_max_per_node']} bearers at the anchor. Every MN away "
            "from home costs a /32 at each router of its cluster (and at the cores once it "
            "leaves the cluster), where the anchor holds one entry per MN wherever it is; "
            "the draft's answer is address rotation (draft 2.3), which bounds how long a "
            "host route lives, not how many routers carry it.")
    return out


def _distance_text(result: dict[str, Any]) -> str:
    links = {k: v for k, v in result.get("link_profile", {}).items() if k != "home"}
    if not links and not result["home_rtt_ms"]:
        return "no link attribute: no delay anywhere, the home network on the same nodes"
    delays = sorted({float(v.get("delay_ms", 0.0)) for v in links.values()})
    return (f"{len(links)} links delayed ({', '.join(_f(d, 1) for d in delays)} ms one-way), "
            f"the home network {_f(result['home_rtt_ms'], 0)} ms RTT away")


def render_markdown(results: dict[str, dict[str, Any]], machine: dict[str, Any],
                    files: dict[str, dict[str, str]], prefix: str = "") -> str:
    """evaluation.md for the runs, one per distance ({distance: baseline result})."""
    names = list(results)
    first = results[names[0]]
    lines: list[str] = []
    add = lines.append
    add("# Evaluation: the flat architecture against the anchored baseline, at two distances\n")
    add(f"Generated by `flatarch report` on **{machine['date']}**, on `{machine['uname']}` "
        f"({machine['cpus']} CPUs, {machine.get('cpu_model') or 'unknown CPU'}, kernel "
        f"{machine['kernel']}, Python {machine['python']}). One lab and one run per distance; "
        "every number below comes from those runs' JSON (`evaluation.json` beside this "
        "file).\n")
    add(f"Topology `{first['topology']}`; the walking MN is `{first['mn']}`; the anchor (P-GW "
        f"role, draft Figure 1) is `{first['anchor']}`, with an MME beside it and the HSS in "
        "the home network. Three designs on the same walk with the same traffic (a paced ICMP "
        f"probe from the CN every {_f(first.get('probe_interval_ms'), 0)} ms and a "
        f"{first.get('iperf_rate', '20M')}bit/s iperf3 TCP stream, one handoff every "
        f"{_f(first['period_s'])} s): **flat** is the flat design at its best (the previous AR "
        "redirects in-flight packets; the MN staples its DNSSEC proof into the AUTH), "
        "**flat_draft** is exactly the draft's (BGP alone; the AR looks the MN up in its home "
        "zone), **anchored** is Figure 1. No figure mixes them: each flat configuration is its "
        "own walk. The baseline's design is in docs/baseline.md, the links' in docs/links.md.\n")
    add("| distance | links | elapsed (s) | shaping |")
    add("|---|---|---|---|")
    for n in names:
        r = results[n]
        add(f"| {n} | {_distance_text(r)} | {_f(r['elapsed_s'], 0)} | "
            f"{_f((r.get('shaping') or {}).get('mechanism'))} |")
    add("")
    add("## Summary\n")
    head = ["measure", *[f"{c} @ {n}" for n in names for c in COLUMNS]]
    rows = [[label, *[get(results[n][c]) for n in names for c in COLUMNS]]
            for label, get in SUMMARY_ROWS]
    add(_table(head, rows, 2) + "\n")
    add("Auth / attach is the MN's AUTH to its answer for the flat designs and the UE's "
        "ATTACH to ACCEPT for the anchored one. Home round trips: for flat, the queries that "
        "reached the server of the MN's home zones between the radio's attach and the AR's "
        "answer (BIND's query log); for the anchored design, the MME's S6a exchange with the "
        "HSS. The path, state and failure phases ran in each flat configuration (the "
        "failures once more after a repair), so no column borrows another's; a run kept "
        "without them shows —.\n")

    add("## 1. Distance: CN→MN round trip per AR\n")
    add("The MN is attached at every AR in turn (flat handoff, then the anchored attach at "
        "the same AR). RTT is the median of 20 pings from the CN; *expected* is twice the sum "
        "of the configured one-way delays along the traced path (for the anchored address: "
        "to the anchor, then the tunnel's underlay path to the AR). Hops are counted with "
        "ICMP traceroute; stretch is hops over the shortest CN→MN path; `d` is the AR's "
        "distance from the anchor in hops.\n")
    for n in names:
        add(f"**{n}**: RTT above the links' own, largest over the ARs: "
            + ", ".join(f"{arch} {_f(_excess(results[n]['stretch'], arch), 3)} ms"
                        for arch in ("flat", "anchored")) + "\n")
        add(_table(["AR", "d", "flat hops", "anchored hops", "flat RTT (ms)",
                    "flat expected (ms)", "anchored RTT (ms)", "anchored expected (ms)"],
                   [[r["ar"], r["anchor_distance"], r["flat_hops"], r["anchored_hops"],
                     r["flat_rtt_ms"], r.get("flat_expected_rtt_ms"), r["anchored_rtt_ms"],
                     r.get("anchored_expected_rtt_ms")] for r in results[n]["stretch"]], 3)
            + "\n")
    add(_img(files[names[-1]], "stretch", f"path length and RTT per AR ({names[-1]})", prefix))

    add("## 2. Handoff interruption and reroute\n")
    add("Interruption is the longest gap in the CN→MN probe stream around a handoff, "
        "resolved to the probe interval; reroute runs from the MN's AUTH until every router "
        "on the CN→MN path, and the previous AR, forwards by the new BGP route (a temporary "
        "redirect does not count). The anchored design has no reroute in that sense: its "
        "path changes with the bearer switch at the anchor.\n")
    for n in names:
        r = results[n]
        add(f"**{n}**\n")
        mode_rows = [[row["mode"], row["dns_mode"], row["kind"], row["n"],
                      row["interruption_ms_p50"], row["interruption_ms_p95"],
                      row["reroute_ms_p50"], row["reroute_ms_p95"], row["auth_ms_p50"],
                      row["auth_ms_p95"], row.get("home_round_trips_mean"), row["ping_lost"]]
                     for row in r["flat_summary"]]
        akinds = sorted({h["kind"] for h in r["handoffs"]["anchored"]})
        for kind in [*akinds, "all"]:
            hs = [h for h in r["handoffs"]["anchored"] if kind == "all" or h["kind"] == kind]
            vals = [float(h["interruption_ms"]) for h in hs]
            att = [float(h["attach_ms"]) for h in hs]
            mode_rows.append(["anchored", "—", kind, len(hs), percentile(vals, 0.5),
                              percentile(vals, 0.95), None, None, percentile(att, 0.5),
                              percentile(att, 0.95),
                              _mean_or_none([float(h["home_round_trips"]) for h in hs]),
                              sum(int(h["ping_lost"]) for h in hs)])
        add(_table(["mode", "DNS", "kind", "n", "interr. p50", "interr. p95", "reroute p50",
                    "reroute p95", "auth p50", "auth p95", "home RTs", "probes lost"],
                   mode_rows) + "\n")
        add(_img(files[n], "cdf", f"interruption CDF ({n})", prefix))
    for n in names:
        for key in ("flat_timeline", "flat_draft_timeline", "anchored_timeline"):
            add(_img(files[n], key, f"{key.removesuffix('_timeline')} handoff timeline ({n})",
                     prefix))

    add("## 3. Authentication: stapled against lookup\n")
    add("The AR's part of a handoff. In the stapled mode the MN's AUTH carries the "
        "DNSSEC-signed answers (address set, key and nonce records) and the chain to the root, "
        "which the AR validates offline; in the lookup mode the AR asks the resolver, which "
        "asks the MN's home zones' server whenever its cache has expired. The AUTH size is "
        "the datagram's UDP payload as the MN sent it (docs/protocol.md).\n")
    auth_rows = []
    for n in names:
        for col in COLUMNS[:2]:
            b = results[n][col]
            auth_rows.append([n, _config(results[n], col), b.get("auth_ms_p50"),
                              b.get("auth_ms_p95"), b["home_round_trips_per_handoff"],
                              _size(b)])
    add(_table(["distance", "configuration", "auth p50 (ms)", "auth p95 (ms)",
                "home round trips", "AUTH size min / p50 / max"], auth_rows, 2) + "\n")
    add("Anchored attach (UE's ATTACH to ACCEPT) p50: " + ", ".join(
        f"{_f(results[n]['anchored'].get('attach_ms_p50'))} ms at {n} (HSS round trip "
        f"{_f(results[n]['anchored'].get('hss_ms_p50'))} ms)" for n in names) + ".\n")

    add("## 4. Control messages per handoff\n")
    add("Mean over the measured handoffs. Flat: the one-round-trip AUTH over the air (2), "
        "queries to the ISP resolver (Unbound's counter over the walk divided by its "
        "handoffs, first contacts and every agent's lookups in that window included: an "
        "upper bound), the BGP UPDATEs the FRR routers received for the MN's /32 (the ARs' "
        "ExaBGP is not logged), and the AR-to-AR redirect exchange. Anchored: NAS over the "
        "air, S1 between the eNB relay and the MME, S6a to the HSS.\n")
    add(_table(["distance", "design", "messages per handoff, by interface", "total"],
               [[n, _config(results[n], c), ", ".join(
                   f"{k} {_f(v, 2)}" for k, v in results[n][c]["messages_per_handoff"].items()),
                 _total(results[n][c]["messages_per_handoff"])]
                for n in names for c in COLUMNS], 2) + "\n")
    add(_img(files[names[0]], "messages", "messages per handoff", prefix))

    add("## 5. Failures\n")
    add("One probe stream per MN (10 ms). A session survives when its stream is answering "
        "again before the end of the observation window; recovery is the longest gap. The "
        "anchored failure takes the anchor node down (processes killed, link down): no standby "
        "anchor exists, as in Figure 1. The flat failures are cumulative: a route reflector "
        "goes down (all its links), then, without repair, the AR serving the most MNs; its "
        "MNs re-attach at a sibling AR at once (radio-loss detection is not modelled). Both "
        "are repaired and the backbone reconverged before the next configuration's turn.\n")
    add(_table(["distance", "architecture", "failure", "sessions survived",
                "recovery per session (ms)"],
               [[n, ev.get("config") or ev["arch"], ev["event"], f"{ev['survived']}/{ev['total']}",
                 ", ".join(f"{s['mn']} {_f(s['recovery_ms'], 0)}" if s["survived"]
                           else f"{s['mn']} lost" for s in ev["sessions"])]
                for n in names for ev in results[n]["failures"]]) + "\n")
    add(_img(files[names[-1]], "failures", f"failure timeline ({names[-1]})", prefix))

    add("## 6. State per node\n")
    add("MNs are moved one at a time into another cluster (flat handoff and anchored attach). "
        "Flat: /32 host routes in each router's kernel table inside the managed range (the "
        "serving AR's access-link route included). Anchored: bearers (per-MN routes) at the "
        "anchor and neighbour entries for anchored addresses at the ARs.\n")
    add(_table(["distance", "MNs away", "flat total", "flat busiest node", "anchored total",
                "anchored busiest node"],
               [[n, r["mns_away"], r["flat_total"], f"{r['flat_max']} ({r['flat_max_node']})",
                 r["anchored_total"], f"{r['anchored_max']} ({r['anchored_max_node']})"]
                for n in names for r in results[n]["state"]]) + "\n")
    add(_img(files[names[0]], "state", "state as MNs move", prefix))

    add("## Where the flat architecture does not win\n")
    for n in names:
        lost = losses(results[n])
        add(f"**{n}**\n")
        if lost:
            lines.extend(f"- {x}" for x in lost)
            add("")
        else:
            add("In this run both flat configurations did at least as well on every measure "
                "above.\n")
    add("Limits of this comparison, whichever way the numbers fall:\n")
    add("- Distance is emulated: every delayed link direction and the home network's flows "
        "go through one userspace delay line (docs/links.md; this kernel has no netem). Its "
        "accuracy is measured by `flatarch bench links`; under the walk's load its delay sits "
        "a little above the configured one.\n"
        "- The home network shares nodes with the ISP: its distance is laid on the flows of "
        "its servers (BIND for the home zones, asked by Unbound on the DNS node's own address; "
        "the HSS, asked by the MME beside it), not on a link of its own; the signed updates an "
        "AR sends are not delayed.\n"
        "- The anchored baseline re-authenticates with the HSS on every handoff, as the draft "
        "describes for a new MME; LTE's intra-MME X2 handover would skip that round trip.\n"
        "- Only three MNs exist, so the failure and state figures are small counts; the trend "
        "(per-MN state on every router of a cluster versus one bearer per MN at the anchor) is "
        "what they show.\n"
        "- Nothing was tuned for either side: all use the same walk, traffic, period and "
        "netlink client for route changes.\n")
    return "\n".join(lines) + "\n"


def _excess(stretch: list[dict[str, Any]], arch: str) -> float | None:
    """The largest measured RTT less the expected one, over the ARs."""
    diffs = [float(r[f"{arch}_rtt_ms"]) - float(r[f"{arch}_expected_rtt_ms"]) for r in stretch
             if r.get(f"{arch}_expected_rtt_ms") is not None]
    return max(diffs) if diffs else None


def _mean_or_none(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def write_report(results: dict[str, dict[str, Any]], out: Path,
                 machine: dict[str, Any] | None = None, raws: dict[str, Path] | None = None,
                 prefix: str = "", markdown: Path | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    machine = machine or machine_info()
    files = {n: write_plots(r, out, (raws or {}).get(n), n) for n, r in results.items()}
    # The per-probe timeline is in the raw runs; at a 1 ms probe it would dwarf the rest.
    doc = {"runs": {n: {k: v for k, v in r.items() if k != "timelines"}
                    for n, r in results.items()}, "machine": machine, "plots": files}
    (out / "evaluation.json").write_text(json.dumps(doc, indent=1, sort_keys=True,
                                                    default=str) + "\n")
    path = markdown or out / "evaluation.md"
    path.write_text(render_markdown(results, machine, files, prefix))
    return path
