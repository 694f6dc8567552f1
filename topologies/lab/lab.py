"""A running lab: Mininet namespaces, rendered configs, daemons started in order.

`with Lab(topo) as lab:` renders and dry-runs every config before any namespace
exists, builds the nodes and links, starts zebra → ospfd → bgpd → ExaBGP, and polls
until healthy. Exit stops every daemon by pid file and removes every namespace and
link, even after an exception. `teardown_all()` does the same from state files alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from agents import control, epc
from agents.contract import AUTH_PORT, NAMED_PORT, PAGING_PORT, Command, Layout, Mode
from topologies.lab import health, shaping
from topologies.lab.daemons import (
    AgentProcess,
    Bgpd,
    Daemon,
    DeadlineError,
    Dnsmasq,
    ExaBgp,
    LabError,
    MnAgentProcess,
    NodeExec,
    Ospf6d,
    Ospfd,
    Zebra,
    is_ours,
    read_pid_record,
    start_batch,
    start_order,
    stop_order,
    stop_pid,
    stop_pid_file,
    wait_until,
    write_pid,
)
from topologies.lab.dnsplane import DnsPlane, Identity, Named, Unbound
from topologies.lab.lifetime import StartStop
from topologies.lab.radio import AIR, MnControl, Radio, access_ifname, air_ifname
from topologies.model import Node, Role, Topology, fqdn
from topologies.render import identities
from topologies.render.bgpkeys import new_lab_secret
from topologies.render.configs import (
    cells,
    daemons_for,
    render_air,
    render_mobile,
    render_node,
)

log = logging.getLogger(__name__)

RUN_ROOT = Path(os.environ.get("FLATARCH_RUN", "/run/flatarch"))
STATE = "state.json"
# One lab at a time per machine: node and link names are global in the root namespace while
# Mininet makes the links, so a second lab would collide with the first half-way through.
LOCK = "lab.lock"
# Every daemon kind a lab may run, in the order the lab lists them; each declares what it
# starts after (topologies/lab/daemons.py), and the lab sorts them once.
DAEMON_CLASSES: dict[str, type[Daemon]] = {
    c.kind: c for c in (Zebra, Ospfd, Ospf6d, Bgpd, ExaBgp, AgentProcess, Dnsmasq, Named, Unbound,
                        MnAgentProcess, shaping.DelayLineDaemon)
}


# Every fixed port a lab daemon listens on, kept out of each namespace's ephemeral range.
LISTEN_PORTS = (AUTH_PORT, PAGING_PORT, NAMED_PORT, epc.ENB_PORT, epc.MME_PORT, epc.HSS_PORT,
                epc.GTPU_PORT)


def shell_marker(node: str) -> str:
    """What a Mininet node's shell names on its command line (bash ... -is mininet:NODE)."""
    return f"mininet:{node}"

Progress = Callable[[str], None]


def stderr_progress(msg: str) -> None:
    print(f"[flatarch] {msg}", file=sys.stderr, flush=True)


def exabgp_bin() -> str:
    cand = Path(sys.executable).with_name("exabgp")
    found = str(cand) if cand.exists() else shutil.which("exabgp")
    if not found:
        raise LabError("exabgp not found next to the Python interpreter or on PATH")
    return found


def take_machine_lock(holder: str) -> IO[str]:
    """The machine's lab lock (one lab or bench at a time), held until released; the file
    names its holder, so that a refusal says who has it."""
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    fh = (RUN_ROOT / LOCK).open("a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        other = fh.read().strip() or "another process"
        fh.close()
        raise LabError(f"another lab is running on this machine ({other}); one at a time: "
                       "stop it (flatarch down) or wait for it to finish") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{holder}, pid {os.getpid()}\n")
    fh.flush()
    return fh


def release_machine_lock(fh: IO[str]) -> None:
    with contextlib.suppress(OSError):
        fh.truncate(0)  # only the holder clears the holder's line
    fh.close()  # closing the file releases the flock


@contextlib.contextmanager
def machine_lock(holder: str) -> Iterator[None]:
    """The machine's lab lock for a block: the benches that build namespaces take it."""
    fh = take_machine_lock(holder)
    try:
        yield
    finally:
        release_machine_lock(fh)


class Lab(StartStop):
    def __init__(
        self,
        topo: Topology,
        *,
        progress: Progress = stderr_progress,
        ready_timeout: float = 180.0,
    ) -> None:
        self.topo = topo
        self.progress = progress
        self.ready_timeout = ready_timeout
        self.dir = RUN_ROOT / topo.name
        self.net: Any = None
        self.execs: dict[str, NodeExec] = {}
        self.daemons: dict[str, list[Daemon]] = {}
        self.configs: dict[str, dict[str, str]] = {}
        self.health: health.Health | None = None
        self.dns: DnsPlane | None = None
        self.radio: Radio | None = None
        self._bg_started = 0
        self._lock: Any = None
        self._owner = os.getpid()
        self.started = time.monotonic()
        self.shaping = shaping.Applied()  # the links' delay, loss and rate (shaping.py)

    # -- bring-up --------------------------------------------------------

    def rundir(self, node: str) -> Path:
        return self.dir / node

    def _take_lock(self) -> None:
        self._lock = take_machine_lock(f"lab {self.topo.name}")

    def _release_lock(self) -> None:
        if self._lock is not None:
            release_machine_lock(self._lock)
            self._lock = None

    def prepare(self) -> None:
        """Render every config and dry-run it; nothing is started yet."""
        self._take_lock()
        if (self.dir / STATE).exists():
            # We hold the machine's lab lock, so whoever wrote this state is gone: a crash.
            self.progress(f"a crashed lab named {self.topo.name!r} left state behind; "
                          "cleaning it up first")
            for line in teardown_dir(self.dir):
                log.info("%s", line)
        self.dir.mkdir(parents=True, exist_ok=True)
        secret = new_lab_secret(self.dir)  # this run's TCP-MD5 keys come from it, never committed
        exa = exabgp_bin()
        for node in self.topo.nodes.values():
            rd = self.rundir(node.name)
            rd.mkdir(parents=True, exist_ok=True)
            self.configs[node.name] = cfg = render_node(self.topo, node, rd, secret)
            (rd / "ip.batch").write_text(cfg["ip"])
            if "nft" in cfg:
                (rd / "ar.nft").write_text(cfg["nft"])
                (rd / "overlay.bridge").write_text(cfg["bridge"])
            ds: list[Daemon] = []
            for kind in daemons_for(node, self.topo):
                if kind == "exabgp":
                    ds.append(ExaBgp(node.name, rd, cfg[kind], exa))
                elif kind == "agent":
                    module = "agents.ha" if node.service == "ha" else "agents.ar"
                    ds.append(AgentProcess(node.name, rd, cfg[kind], module, sys.executable))
                else:
                    ds.append(DAEMON_CLASSES[kind](node.name, rd, cfg[kind]))
            self.daemons[node.name] = ds
        self.progress(f"rendered configs for {len(self.topo.nodes)} nodes in {self.dir}")
        if any(n.service == "dns" for n in self.topo.nodes.values()):
            idents = identities.provision(self.topo, self.dir)
            dns_node = self.topo.service("dns").name
            self.dns = DnsPlane(self.topo, self.rundir(dns_node), idents)
            self.dns.prepare()  # renders, generates DNSSEC keys and DS, dry-runs both daemons
            self.daemons[dns_node] = self.dns.daemons()
            self.progress(
                f"DNS plane: {len(idents)} identities, {len(self.dns.zone_names)} signed zones"
            )
            self._prepare_mobiles(idents)
            # Agents that update DNS get their own TSIG key: ARs their pools' PTRs (draft
            # 2.3), DHCP MNs their forward names.
            for name, role in [*((n.name, "ar") for n in self.topo.by_role(Role.AR)),
                               *((mn, "mn") for mn in self.topo.dhcp_mobiles)]:
                dest = self.rundir(name) / Layout.TSIG
                shutil.copyfile(self.dns.tsig_path(fqdn(role, name)), dest)
                dest.chmod(0o600)
            # The root's DS, against which ARs validate stapled proofs offline (issue 17).
            for node in (n for n in self.topo.nodes.values()
                         if n.role is Role.AR or n.service == "ha"):
                shutil.copyfile(self.dns.rundir / "trust-anchor.ds",
                                self.rundir(node.name) / Layout.TRUST_ANCHOR)
        checked = 0
        for ds in self.daemons.values():
            for d in ds:
                d.write()
                d.dry_run()
                checked += 1
        self.progress(f"dry-run passed for {checked} daemon configs")

    def _prepare_mobiles(self, idents: list[Identity]) -> None:
        """Each MN: its interface batch, its agent's config and the provisioned AR keys."""
        ar_keys = {
            i.name: {"suite": int(i.suite), "spki": i.spki.hex(),
                     "nonce": i.nonce.hex() if i.nonce else "",
                     "nonce_expires": i.nonce_expires or 0}
            for i in idents if i.role == "ar"
        }
        for mn in self.topo.mobiles:
            rd = self.rundir(mn)
            rd.mkdir(parents=True, exist_ok=True)
            cfg = render_mobile(self.topo, mn, rd)
            (rd / "ip.batch").write_text(cfg["ip"])
            (rd / "ar_keys.json").write_text(json.dumps(ar_keys, indent=1, sort_keys=True))
            for key, file in (("hook", Layout.UDHCPC_HOOK), ("hook6", Layout.DHCLIENT6_HOOK)):
                if key in cfg:
                    (rd / file).write_text(cfg[key])
                    (rd / file).chmod(0o755)
            self.daemons[mn] = [MnAgentProcess(mn, rd, cfg["agent"], sys.executable)]
        if self.topo.mobiles:
            rd = self.rundir(AIR)
            rd.mkdir(parents=True, exist_ok=True)
            (rd / "ip.batch").write_text(render_air(self.topo))

    @property
    def mobiles(self) -> list[str]:
        """The MNs this lab runs (only with a DNS plane: they authenticate against it)."""
        return [mn for mn in self.topo.mobiles if mn in self.daemons]

    def build(self) -> None:
        from mininet.net import Mininet
        from mininet.node import Node as MnNode

        self.net = Mininet(
            topo=None, controller=None, build=False, autoSetMacs=False,
            autoStaticArp=False, waitConnected=False,
        )
        for node in self.topo.nodes.values():
            self.net.addHost(node.name, cls=MnNode, ip=None, inNamespace=True)
        for link in self.topo.links:
            a, b = self.topo.nodes[link.a], self.topo.nodes[link.b]
            ia = next(i.name for i in a.interfaces if i.peer == b.name)
            ib = next(i.name for i in b.interfaces if i.peer == a.name)
            self.net.addLink(link.a, link.b, intfName1=ia, intfName2=ib)
        if self.mobiles:
            # The radio: each AR's access link and each MN's one link end in the air node.
            self.net.addHost(AIR, cls=MnNode, ip=None, inNamespace=True)
            for cell in cells(self.topo):
                self.net.addLink(cell, AIR, intfName1=access_ifname(cell),
                                 intfName2=air_ifname(cell))
            for mn in self.mobiles:
                self.net.addHost(mn, cls=MnNode, ip=None, inNamespace=True)
                self.net.addLink(mn, AIR, intfName1=f"{mn}-eth0", intfName2=air_ifname(mn))
        for name in [*self.topo.nodes, *self.mobiles, *([AIR] if self.mobiles else [])]:
            self.execs[name] = NodeExec(name, self.net.get(name).pid)
        self._write_state()
        self.progress(f"built {len(self.topo.nodes)} nodes and {len(self.topo.links)} links")
        for name in self.execs:
            self._reserve_ports(name)
        for node in self.topo.nodes.values():
            self._configure(node)
        self.shaping = shaping.apply(self.topo.link_attrs, self.execs, self.dir, self.progress,
                                     home=shaping.home_distance(self.topo))
        if self.shaping.daemon is not None:
            d = self.shaping.daemon
            self.daemons[d.node] = [d, *self.daemons.get(d.node, [])]
            self._write_state()  # so that `flatarch down` stops the delay line after a crash
        if not self.mobiles:
            return
        self.execs[AIR].check(["ip", "-batch", str(self.rundir(AIR) / "ip.batch")])
        for mn in self.mobiles:
            self.execs[mn].check(["ip", "-batch", str(self.rundir(mn) / "ip.batch")])
        self.radio = Radio(self.execs[AIR].pid)
        for mn in self.mobiles:
            self.radio.place(mn, self.topo.mobile(mn).home)

    def _reserve_ports(self, name: str) -> None:
        # ENB_PORT (36412, S1-AP's own) lies in Linux's ephemeral range: without the
        # reserve, any client socket in the namespace (ExaBGP, the agent's resolver) could
        # take it first and the eNB's bind fails, one lab in a few dozen.
        ports = ",".join(str(p) for p in sorted(LISTEN_PORTS))
        self.execs[name].check(["sysctl", "-q", "-w", f"net.ipv4.ip_local_reserved_ports={ports}"])

    def _configure(self, node: Node) -> None:
        ex = self.execs[node.name]
        ex.check(["ip", "-batch", str(self.rundir(node.name) / "ip.batch")])
        if node.is_router:
            for key, val in (
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                # traceroute checks every path: no rate limit on the routers' ICMP errors
                ("net.ipv4.icmp_ratelimit", "0"),
            ):
                ex.check(["sysctl", "-q", "-w", f"{key}={val}"])
        if node.service == "ha":
            # The Home Agent forwards between its tunnels and the AS (draft 2.4).
            for key in ("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter",
                        "net.ipv4.conf.default.rp_filter"):
                ex.check(["sysctl", "-q", "-w", f"{key}={int(key.endswith('forward'))}"])
            if self.topo.backbone6 is not None:  # and the MNs' refused /64s (issue 18)
                ex.check(["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])
        if node.role is Role.AR:
            ex.check(["bridge", "-batch", str(self.rundir(node.name) / "overlay.bridge")])
            ex.check(["nft", "-f", str(self.rundir(node.name) / "ar.nft")])

    def start_daemons(self, daemons: dict[str, list[Daemon]] | None = None,
                      classes: Mapping[str, type[Daemon]] = DAEMON_CLASSES) -> None:
        """Start ``daemons`` (default: the lab's own) kind by kind in their declared order,
        each kind until ready; daemons added later (the anchored plane) come this way too."""
        todo = self.daemons if daemons is None else daemons
        present = [d.kind for ds in todo.values() for d in ds]
        for kind in start_order(present, classes):
            batch = [(d, self.execs[name]) for name, ds in todo.items() for d in ds
                     if d.kind == kind]
            self.progress(f"starting {kind} on {len(batch)} nodes")
            start_batch(batch)
        if self.dns is not None:
            (self.dir / "resolv.conf").write_text(f"nameserver {self.dns.resolver_address}\n")

    def wait_converged(self) -> health.Health:
        """Poll toward the deadline until every OSPF adjacency is Full and BGP session up."""
        last: list[health.Health] = []
        # The first time from the lab's start (bring-up); after that, from this call (a repair).
        since = self.started if self.health is None else time.monotonic()

        def converged() -> bool:
            self._check_daemons()
            h = health.check(self.topo, self.execs, self.rundirs(), ping=False)
            line = health.progress_line(h)
            if not last or line != health.progress_line(last[0]):
                self.progress(f"waiting: {line}")
            last[:] = [h]
            return h.converged

        try:
            wait_until(converged, self.ready_timeout, "OSPF and BGP to converge", 0.5)
        except DeadlineError as exc:
            h = last[0] if last else None
            detail = f"{health.progress_line(h)}; problems: {h.problems}" if h else ""
            raise DeadlineError(f"{exc}: {detail}") from None
        self.progress(f"lab {self.topo.name} converged in {time.monotonic() - since:.1f}s")
        self.health = last[0]
        return self.health

    def check_health(self, timeout: float = 30.0) -> health.Health:
        """The full `up --check` record, pools included; the lab must have converged.

        Routes reach the ARs' kernels a moment after the sessions come up, so pool
        reachability is polled; a pool that never answers is reported, not raised.
        """
        def pools_ok() -> bool:
            self.health = health.check(self.topo, self.execs, self.rundirs(), ping=True)
            return self.health.reachable

        with contextlib.suppress(DeadlineError):
            wait_until(pools_ok, timeout, "every AR pool to answer the CN", 1.0)
        assert self.health is not None
        return self.health

    def _check_daemons(self) -> None:
        dead = [f"{n}/{d.kind}" for n, ds in self.daemons.items() for d in ds
                if d.started and not d.alive()]
        if dead:
            logs = []
            for n, ds in self.daemons.items():
                for d in ds:
                    if f"{n}/{d.kind}" in dead[:2] and d.log_path.exists():
                        logs.append(f"{d.log_path}: ...{d.log_path.read_text()[-400:]}")
            raise LabError(f"daemons died: {', '.join(dead)}\n" + "\n".join(logs))
        failed = health.agent_problems(self.topo, self.rundirs())
        if failed:
            raise LabError("agent services failed: " + "; ".join(failed))

    def start(self) -> None:
        self.started = time.monotonic()
        self.prepare()
        self.build()
        self.start_daemons()
        self.wait_converged()
        self.attach_mobiles()

    # -- mobile nodes ---------------------------------------------------------------------

    def control(self, mn: str) -> MnControl:
        return MnControl(self.rundir(mn) / "control.sock")

    def attach_mobiles(self) -> None:
        """Authenticate each MN at its home AR (its first attachment)."""
        if not self.mobiles:
            return
        self.progress(f"first authentication of {len(self.mobiles)} MNs at home")
        for mn in self.mobiles:
            home = self.topo.mobile(mn).home
            # The home AR's agent may still be starting its authenticator: retry briefly.
            answer: dict[str, Any] = {}

            # A refusal right after bring-up (a DNS answer not yet cached) is retried too.
            def authenticated(mn: str = mn, home: str = home,
                              answer: dict[str, Any] = answer) -> bool:
                answer.clear()
                answer.update(self.control(mn).request({"cmd": "attach", "ar": home}))
                return bool(answer.get("ok")) and not answer.get("not_rerouted")

            try:
                wait_until(authenticated, 30, f"{mn} to authenticate at {home}", 0.5)
            except DeadlineError as exc:
                why = answer.get("error") or f"not re-routed: {answer.get('not_rerouted')}"
                raise LabError(f"{exc}: {why}") from None

    def handoff(self, mn: str, ar: str) -> dict[str, Any]:
        """The lab primitive: move the MN's radio link to ``ar``, then let it authenticate.

        Returns the radio's and the MN agent's wall-clock times and the AR's answer.
        """
        if self.radio is None or mn not in self.mobiles:
            raise LabError(f"no mobile node {mn!r} in this lab")
        if ar not in cells(self.topo):
            raise LabError(f"{ar!r} is not an access router or the visited network")
        previous = self.radio.where.get(mn)
        radio = self.radio.move(mn, ar)
        answer = self.control(mn).request({"cmd": "attach", "ar": ar})
        return {"mn": mn, "from": previous, "to": ar, **radio, **answer}

    @contextlib.contextmanager
    def background(self, node: str, cmd: Sequence[str], out: Path) -> Iterator[Background]:
        """Run ``cmd`` in ``node`` for the duration of the block (a probe, a traffic source)."""
        bgdir = self.dir / "background"
        bgdir.mkdir(exist_ok=True)
        self._bg_started += 1
        pid_file = bgdir / f"{node}-{Path(cmd[0]).name}-{self._bg_started}.pid"
        self._track(pid_file)
        bg = Background(self.execs[node], cmd, out, pid_file)
        try:
            yield bg
        finally:
            bg.interrupt()

    def _track(self, pid_file: Path, marker: str | None = None) -> None:
        track_pid_file(self.dir, pid_file, marker)

    def set_mode(self, mode: str) -> None:
        """Handoff mode of every AR agent: 'redirect' (default) or 'draft' (BGP only), set
        through each agent's control socket."""
        try:
            wanted = Mode(mode)
        except ValueError:
            raise LabError(f"unknown handoff mode {mode!r} (redirect, draft)") from None
        for n in self.topo.by_role(Role.AR):
            sock = self.rundir(n.name) / Layout.CONTROL
            try:
                answer = control.request(sock, {"cmd": Command.MODE, "mode": wanted})
            except control.ControlError as exc:
                raise LabError(f"{n.name}: cannot set the handoff mode: {exc}") from None
            if not answer.get("ok"):
                raise LabError(f"{n.name}: mode {wanted}: {answer.get('error')}")

    def _stop_order(self) -> list[str]:
        present = [d.kind for ds in self.daemons.values() for d in ds]
        return stop_order(start_order(present, DAEMON_CLASSES), DAEMON_CLASSES)

    def rundirs(self) -> dict[str, Path]:
        return {n: self.rundir(n) for n in self.topo.nodes}

    # -- state, for `flatarch exec/status/down` from another process ---------

    def _write_state(self) -> None:
        state = {
            "name": self.topo.name,
            "owner_pid": os.getpid(),
            "nodes": {n: ex.pid for n, ex in self.execs.items()},
            "daemons": [
                {"node": n, "kind": d.kind, "pid_file": str(d.pid_path), "marker": d.marker}
                for n, ds in self.daemons.items() for d in ds
            ],
            # The lab's stop order, kept so that `flatarch down` keeps to it after a crash.
            "stop_order": self._stop_order(),
            "extra_pid_files": [],
            "shaping": self.shaping.record(),
            "links": [
                *(i.name for n in self.topo.nodes.values() for i in n.interfaces),
                *(f"{mn}-eth0" for mn in self.mobiles),
                *(air_ifname(n) for n in [*self.mobiles, *cells(self.topo)]
                  if self.mobiles),
            ],
        }
        (self.dir / STATE).write_text(json.dumps(state, indent=1))

    # -- teardown -----------------------------------------------------------

    def stop(self) -> None:
        if self._lock is None:
            # We never owned the machine's lab: whatever runs under this name is another's.
            return
        if os.getpid() != self._owner:
            # A forked copy of the process that built the lab (a library's helper child that
            # raised) must not stop the daemons and nodes its parent still runs.
            return
        # Reverse start order, each kind in parallel: a daemon that is slow to exit
        # must not serialise the whole teardown.
        for kind in self._stop_order():
            batch = [d for ds in self.daemons.values() for d in ds if d.kind == kind]
            if not batch:
                continue
            t0 = time.monotonic()
            for d, exc in _parallel(lambda d: d.stop(), batch):
                log.warning("stopping %s/%s: %s", d.node, d.kind, exc)
            self.progress(f"stopped {kind} on {len(batch)} nodes ({time.monotonic() - t0:.1f}s)")
        if self.radio is not None:
            self.radio.close()
            self.radio = None
        if self.net is not None:
            self.progress("removing namespaces and links")
            try:
                self.net.stop()
            except Exception as exc:  # noqa: BLE001
                log.warning("mininet stop: %s", exc)
            self.net = None
        teardown_dir(self.dir)
        self._release_lock()


class Background:
    """A command running in a lab node until stopped; stdout to a file. It has a pid file
    that the lab's state names, so `flatarch down` stops it even after a crash."""

    def __init__(self, ex: NodeExec, cmd: Sequence[str], out: Path, pid_file: Path) -> None:
        self.out = out
        self.pid_file = pid_file
        self._fh = out.open("wb")
        self.proc = subprocess.Popen(ex.argv(cmd), stdin=subprocess.DEVNULL, stdout=self._fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        # mnexec execs the command in place: the pid is the command's own.
        write_pid(pid_file, self.proc.pid)

    def interrupt(self, timeout: float = 5.0) -> int | None:
        """SIGINT (ping prints its summary), then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(2)
        self._fh.close()
        self.pid_file.unlink(missing_ok=True)
        return self.proc.returncode

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.interrupt()


def track_pid_file(labdir: Path, pid_file: Path, marker: str | None = None) -> None:
    """Name a pid file in a lab's state, so `flatarch down` stops its process after a crash:
    by the start time the file records, and the marker where one is given. A process started
    from another terminal (`flatarch capture`) is tracked the same way."""
    path = labdir / STATE
    if not path.exists():
        raise LabError(f"cannot read the lab's state {path}: no such file")
    # The lab and `flatarch capture` in another terminal both add entries: one at a time.
    with (labdir / "state.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LabError(f"cannot read the lab's state {path}: {exc}") from None
        state["extra_pid_files"].append({"pid_file": str(pid_file), "marker": marker})
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)


def teardown_dir(labdir: Path) -> list[str]:
    """Stop whatever a lab's state file names, delete its links, remove its directory.

    Safe after a crash and safe to repeat: every step tolerates what is already gone.
    """
    done: list[str] = []
    state_path = labdir / STATE
    state: dict[str, Any] = {}
    if state_path.exists():
        try:
            state = json.loads(state_path.read_text())
        except (OSError, json.JSONDecodeError):
            state = {}
    def stop_entry(d: dict[str, Any]) -> None:
        rec = read_pid_record(Path(d["pid_file"]))
        if rec is not None and stop_pid_file(Path(d["pid_file"]), d.get("marker")):
            what = f"{d['node']}/{d['kind']}" if "node" in d else Path(d["pid_file"]).stem
            done.append(f"stopped {what} ({rec[0]})")

    daemons = state.get("daemons", [])
    order = state.get("stop_order") or sorted({d["kind"] for d in daemons})
    for kind in order:
        for d, exc in _parallel(stop_entry, [d for d in daemons if d["kind"] == kind]):
            log.warning("stopping %s: %s", d.get("pid_file"), exc)
    for d, exc in _parallel(stop_entry, [*(d for d in daemons if d["kind"] not in order),
                                         *state.get("extra_pid_files", [])]):
        log.warning("stopping %s: %s", d.get("pid_file"), exc)
    for name, pid in (state.get("nodes") or {}).items():
        if is_ours(pid, marker=shell_marker(name)) and _in_other_netns(pid):
            stop_pid(pid, marker=shell_marker(name), timeout=2.0)
            done.append(f"removed node {name}")
    for ifname in state.get("links", []):
        if Path(f"/sys/class/net/{ifname}").exists():
            subprocess.run(["ip", "link", "del", ifname], capture_output=True)
            done.append(f"deleted link {ifname}")
    shutil.rmtree(labdir, ignore_errors=True)
    return done


def _parallel(fn: Callable[[Any], object], items: list[Any]) -> list[tuple[Any, Exception]]:
    """Run fn over items on threads; return the (item, error) pairs that failed."""
    if not items:
        return []
    failed: list[tuple[Any, Exception]] = []
    with ThreadPoolExecutor(min(16, len(items))) as pool:
        futures = {pool.submit(fn, it): it for it in items}
        for fut, it in futures.items():
            exc = fut.exception()
            if isinstance(exc, Exception):
                failed.append((it, exc))
    return failed


def _in_other_netns(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    except OSError:
        return False


def running_labs() -> list[Path]:
    if not RUN_ROOT.exists():
        return []
    return sorted(p.parent for p in RUN_ROOT.glob(f"*/{STATE}"))


def teardown_all() -> list[str]:
    done: list[str] = []
    if RUN_ROOT.exists():
        for labdir in sorted(p for p in RUN_ROOT.iterdir() if p.is_dir()):
            done += teardown_dir(labdir)
    return done


def attach(name: str | None = None) -> tuple[dict[str, Any], dict[str, NodeExec]]:
    """Find a running lab's state, for verbs run from another terminal."""
    labs = running_labs()
    if name is not None:
        labs = [p for p in labs if p.name == name]
    if not labs:
        raise LabError("no running lab (start one with 'flatarch up')")
    if len(labs) > 1:
        raise LabError(f"several labs running: {', '.join(p.name for p in labs)}")
    state = json.loads((labs[0] / STATE).read_text())
    execs = {n: NodeExec(n, pid) for n, pid in state["nodes"].items()}
    dead = [n for n, ex in execs.items() if not is_ours(ex.pid, marker=shell_marker(n))]
    if dead:
        raise LabError(f"lab {state['name']} has dead nodes ({', '.join(dead[:5])}); "
                       "run 'flatarch down'")
    return state, execs
