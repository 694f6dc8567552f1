"""`flatarch bench flood`: a legitimate client's success and latency while the AR is flooded.

Two namespaces joined by a veth: fa-flood-<pid>-ar runs the real Authenticator with the AR's
nftables pre-filter on its access interface, fa-flood-<pid>-air the legitimate client, the
cookie-reuse attacker and tcpreplay sending spoofed floods. Everything is removed on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from agents.auth import DEFAULT_PORT, flood
from agents.auth.prefilter import prefilter_data
from agents.stats import percentile_or_none
from topologies.lab.daemons import LabError, identity, stop_pid, wait_until, write_pid
from topologies.lab.lab import machine_lock
from topologies.render.configs import render

PREFIX = "fa-flood-"
AR_IP = "10.192.0.1"
RESOLVER_IP = "10.192.0.53"  # on the air side, where every DNS query is dropped
NET_LEN = 10  # 10.192.0.0/10 is on-link: legitimate, attacker and spoofed sources alike
LEGIT_SOURCES = [f"10.200.1.{i}" for i in range(1, 41)]  # each well inside its meter
# Real sources of the cookie-reuse attack, each in its own /24: the 100, and 1,000
# that each stay below the pre-filter's meter so that every datagram reaches the service.
COOKIE_SOURCES = [f"10.{201 + i // 256}.{i % 256}.1" for i in range(1000)]

Progress = Callable[[str], None]


def ar_nft() -> str:
    """The bench AR's nftables: the lab's own AR template, IPv4 only, its pre-filter on."""
    return render("nft/ar.nft.j2", {
        "name": "flood-bench", "backbone": [], "auth_port": DEFAULT_PORT,
        "open_ports": [], "access": "acc", "dhcp_mark": "0x43",
        "auth_filter": prefilter_data(), "ipv6": False})


def blackhole_nft(port: int = 53) -> str:
    """The rules of a resolver that never answers (configs/bench/dns-blackhole.nft.j2)."""
    return render("bench/dns-blackhole.nft.j2", {"port": port})


@dataclass(frozen=True)
class FloodConfig:
    pps: int = 100_000
    sources: int = 8000
    duration_s: float = 8.0  # of each phase
    legit_rate: float = 20.0  # legitimate authentications per second, each a new MN
    cookie_pps: float = 2000.0
    top_speed: bool = True  # also flood at the highest rate tcpreplay reaches


def _run(cmd: Sequence[str], timeout: float = 20.0) -> str:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                         check=False)
    if res.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


def _percentile(values: Sequence[float], q: float) -> float | None:
    """The one percentile (agents/stats.py), None rather than NaN: JSON has no NaN."""
    return percentile_or_none(values, q, 2)


class FloodBench:
    """The namespaces, the AR service, and one phase after another."""

    def __init__(self, cfg: FloodConfig, progress: Progress | None = None) -> None:
        self.cfg = cfg
        self.say = progress or (lambda _text: None)
        tag = f"{PREFIX}{os.getpid()}"
        self.ar_ns = f"{tag}-ar"
        self.air_ns = f"{tag}-air"
        self.dir = Path(tempfile.mkdtemp(prefix=PREFIX))
        self.pids: list[tuple[int, int | None]] = []  # (pid, start time): stops check both
        self.logs: list[IO[bytes]] = []
        self.next_mn = 0
        self.ar_mac = b""
        self.ar_proc: subprocess.Popen[bytes] | None = None

    # -- namespaces ------------------------------------------------------

    def _ns(self, ns: str, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *cmd]

    def setup(self) -> None:
        for ns in (self.ar_ns, self.air_ns):
            _run(["ip", "netns", "add", ns])
        _run(["ip", "-n", self.ar_ns, "link", "add", "acc", "type", "veth", "peer", "name",
              "air0", "netns", self.air_ns])
        batch_ar = [f"addr add {AR_IP}/{NET_LEN} dev acc", "link set lo up",
                    "link set acc up"]
        batch_air = [f"addr add {a}/{NET_LEN} dev air0"
                     for a in [*LEGIT_SOURCES, *COOKIE_SOURCES, RESOLVER_IP]]
        batch_air += ["link set lo up", "link set air0 up"]
        for ns, batch in ((self.ar_ns, batch_ar), (self.air_ns, batch_air)):
            path = self.dir / f"{ns}.batch"
            path.write_text("\n".join(batch) + "\n")
            _run(["ip", "-n", ns, "-batch", str(path)])
        (self.dir / "ar.nft").write_text(ar_nft())
        _run(self._ns(self.ar_ns, "nft", "-f", str(self.dir / "ar.nft")))
        (self.dir / "blackhole.nft").write_text(blackhole_nft())
        _run(self._ns(self.air_ns, "nft", "-f", str(self.dir / "blackhole.nft")))
        link = json.loads(_run(["ip", "-n", self.ar_ns, "-j", "link", "show", "acc"]))
        self.ar_mac = bytes.fromhex(link[0]["address"].replace(":", ""))

    def teardown(self) -> None:
        for pid, start in reversed(self.pids):
            with contextlib.suppress(Exception):
                stop_pid(pid, start=start)
        for fh in self.logs:
            fh.close()
        for ns in (self.air_ns, self.ar_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- processes -------------------------------------------------------

    def _spawn(self, ns: str, cmd: Sequence[str], name: str) -> subprocess.Popen[bytes]:
        log = (self.dir / f"{name}.log").open("ab")
        self.logs.append(log)
        proc = subprocess.Popen(self._ns(ns, *cmd), stdout=log, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parents[2])
        ident = identity(proc.pid)
        self.pids.append((proc.pid, ident.start if ident else None))
        write_pid(self.dir / f"{name}.pid", proc.pid)
        return proc

    def _python(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "agents.auth.flood", *args]

    def start_ar(self) -> None:
        state = self.dir / "ar"
        state.mkdir()
        proc = self._spawn(self.ar_ns, self._python(
            "serve", "--state", str(state), "--resolver", RESOLVER_IP, "--access", "acc"),
            "ar")
        self.ar_proc = proc
        wait_until(lambda: (state / "ready").exists() or proc.poll() is not None, 30.0,
                   "the flood bench's authenticator")
        if proc.poll() is not None:
            raise LabError(f"authenticator exited: {self._log_tail('ar')}")

    def stop_ar(self) -> dict[str, int]:
        if self.ar_proc is None:
            raise LabError("the authenticator was never started")
        starts = dict(self.pids)
        stop_pid(self.ar_proc.pid, start=starts.get(self.ar_proc.pid))
        self.ar_proc.wait(10.0)
        path = self.dir / "ar" / "stats.json"
        stats: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
        return stats

    def _log_tail(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def _client(self, name: str) -> subprocess.Popen[bytes]:
        count = max(1, round(self.cfg.legit_rate * self.cfg.duration_s))
        first = self.next_mn
        self.next_mn += count
        return self._spawn(self.air_ns, self._python(
            "client", "--ar", AR_IP, "--sources", ",".join(LEGIT_SOURCES),
            "--first", str(first), "--count", str(count), "--rate", str(self.cfg.legit_rate),
            "--out", str(self.dir / f"{name}.json")), name)

    def _client_result(self, proc: subprocess.Popen[bytes], name: str) -> dict[str, Any]:
        # Each attempt gives up within about 3.5 s (Peer: 1 s, two retries, cookie rounds).
        proc.wait(self.cfg.duration_s + 60.0)
        path = self.dir / f"{name}.json"
        if proc.returncode != 0 or not path.exists():
            raise LabError(f"legitimate client failed: {self._log_tail(name)}")
        raw: dict[str, Any] = json.loads(path.read_text())
        lat = raw["latencies_ms"]
        return {"success": raw["ok"] / raw["attempts"] if raw["attempts"] else 0.0,
                "p50_ms": _percentile(lat, 0.50), "p95_ms": _percentile(lat, 0.95),
                "attempts": raw["attempts"], "failures": raw["failures"]}

    # -- phases ----------------------------------------------------------

    def baseline(self) -> dict[str, Any]:
        self.say(f"baseline: {self.cfg.legit_rate:g} AUTH/s for {self.cfg.duration_s:g} s")
        return self._client_result(self._client("baseline"), "baseline")

    def replay_flood(self, kind: str, pps: int | None) -> dict[str, Any]:
        pcap = self.dir / f"{kind}.pcap"
        n = flood.flood_capture(pcap, kind, self.cfg.sources, self.ar_mac, AR_IP)
        rate = ["--pps", str(pps)] if pps else ["--topspeed"]
        name = f"{kind}-{pps or 'top'}"
        self.say(f"{kind}: {n} spoofed sources at {pps or 'top speed'} pps")
        # The flood runs a little longer than the client on both sides, so every measured
        # attempt sees it.
        replay = self._spawn(self.air_ns, [
            "tcpreplay", "-q", "-K", "-i", "air0", *rate, "--loop", "0",
            "--duration", str(int(self.cfg.duration_s + 6))] + [str(pcap)], f"{name}-replay")
        flooding = self._wait_flooding(replay)
        client = self._client(name)
        result = self._client_result(client, name)
        replay.wait(self.cfg.duration_s + 30.0)
        sent = self._replay_rate(f"{name}-replay")
        return {"kind": kind, "pps": round(sent or 0.0), "sources": self.cfg.sources,
                **result, "flood_started": flooding}

    def _wait_flooding(self, replay: subprocess.Popen[bytes]) -> bool:
        """Until the AR's pre-filter counts the flood (tcpreplay first loads the capture)."""
        base = self.counters()

        def seen() -> bool:
            if replay.poll() is not None:
                return True
            now = self.counters()
            dropped = sum(now.get(k, 0) - base.get(k, 0) for k in ("auth_malformed",
                                                                     "auth_flood"))
            return dropped > self.cfg.sources

        try:
            wait_until(seen, 20.0, "the flood to reach the AR", 0.05)
        except LabError:
            return False
        return replay.poll() is None

    def counters(self) -> dict[str, int]:
        """The AR pre-filter's packet counters, by name."""
        out = _run(self._ns(self.ar_ns, "nft", "-j", "list", "counters", "table", "ip",
                            "flatarch"))
        return {c["counter"]["name"]: int(c["counter"]["packets"])
                for c in json.loads(out).get("nftables", []) if "counter" in c}

    def _replay_rate(self, name: str) -> float | None:
        text = self._log_tail(name)
        m = re.search(r"Actual: (\d+) packets .*? sent in ([\d.]+) seconds", text)
        if not m or float(m.group(2)) <= 0:
            return None
        return int(m.group(1)) / float(m.group(2))

    def cookie_reuse(self, sources: int) -> dict[str, Any]:
        srcs = COOKIE_SOURCES[:sources]
        self.say(f"cookie_reuse: {sources} sources at {self.cfg.cookie_pps:g} pps")
        name = f"cookie-attack-{sources}"
        out = self.dir / f"{name}.json"
        started = self.dir / f"{name}.started"
        attack = self._spawn(self.air_ns, self._python(
            "cookie-attack", "--ar", AR_IP, "--sources", ",".join(srcs),
            "--pps", str(self.cfg.cookie_pps), "--duration", str(self.cfg.duration_s + 8),
            "--started", str(started), "--out", str(out)), name)
        # Measure once the attack has the AR under load: it hands out cookies only then.
        with contextlib.suppress(LabError):  # never under load: attack_loaded is false
            wait_until(lambda: attack.poll() is not None or started.exists(), 20.0,
                       "the cookie-reuse attack to load the AR", 0.05)
        client = self._client(f"cookie_reuse-{sources}")
        result = self._client_result(client, f"cookie_reuse-{sources}")
        attack.wait(self.cfg.duration_s + 30.0)
        raw = json.loads(out.read_text()) if out.exists() else {}
        return {"kind": "cookie_reuse", "pps": round(raw.get("pps", 0.0)),
                "sources": sources, **result, "attack_loaded": started.exists(),
                "attacker_cookies": raw.get("cookies", 0)}


def run_flood_bench(cfg: FloodConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Every phase in one run; the JSON of issue 19 plus the AR's counters."""
    if shutil.which("tcpreplay") is None:
        raise LabError("tcpreplay is not installed (make deps)")
    with machine_lock("flood bench"):
        bench = FloodBench(cfg, progress)
        try:
            bench.setup()
            bench.start_ar()
            out: dict[str, Any] = {"baseline": bench.baseline(), "attacks": []}
            out["attacks"].append(bench.replay_flood("garbage", cfg.pps))
            out["attacks"].append(bench.replay_flood("forged_mac", cfg.pps))
            if cfg.top_speed:
                out["attacks"].append(bench.replay_flood("garbage", None))
                out["attacks"].append(bench.replay_flood("forged_mac", None))
            out["attacks"].append(bench.cookie_reuse(100))
            out["attacks"].append(bench.cookie_reuse(1000))
            out["ar_stats"] = bench.stop_ar()
            out["setup"] = {
                "key_resolution": "legitimate MNs' keys known to the AR (no DNS); other "
                                  "names through a real DNS resolver that drops every query",
                "legit_rate_per_s": cfg.legit_rate, "phase_s": cfg.duration_s,
                "each_attempt": "a new MN name: a cold lookup and an ECDH at the AR",
                "prefilter": prefilter_data(),
            }
            return out
        finally:
            bench.teardown()


def format_table(res: dict[str, Any]) -> str:
    rows = [("baseline", "-", "-", res["baseline"])]
    rows += [(a["kind"], f"{a['pps']:,}", str(a["sources"]), a) for a in res["attacks"]]
    lines = [f"{'phase':<14} {'pps':>9} {'sources':>8} {'success':>8} {'p50 ms':>8} "
             f"{'p95 ms':>8}"]
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for kind, pps, sources, r in rows:
        lines.append(f"{kind:<14} {pps:>9} {sources:>8} {r['success']:>8.1%} "
                     f"{ms(r['p50_ms']):>8} {ms(r['p95_ms']):>8}")
    return "\n".join(lines)


__all__ = ["FloodBench", "FloodConfig", "PREFIX", "format_table",
           "run_flood_bench"]
