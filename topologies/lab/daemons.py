"""One class per daemon: its config, pid path, dry-run, start, readiness, the kinds it must
start after, and a stop that signals only the process we started (checked by identity).

Every daemon writes its pid file under the node's run directory. A pid alone proves nothing
(pids are recycled), so a stop also checks the process's start time where we know it and,
where the daemon wrote the pid file itself, that its command line names our run directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from agents import control
from agents.contract import Command, Layout

log = logging.getLogger(__name__)

FRR_DIR = Path("/usr/lib/frr")


class LabError(RuntimeError):
    """Base error of the lab: bad config, a daemon that fails, a deadline missed."""


class ConfigCheckError(LabError):
    """A rendered config failed its daemon's dry-run."""


class DeadlineError(LabError):
    """Something awaited did not happen before its deadline."""


def wait_until(
    pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll pred toward a deadline; raise DeadlineError naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        if time.monotonic() >= deadline:
            raise DeadlineError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def proc_comm(pid: int) -> str | None:
    """The command name of a live process; None when gone or a zombie awaiting reaping."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Format: "pid (comm) S ...": comm may hold spaces, so split at the last ')'.
    head, _, rest = stat.rpartition(")")
    if rest.split()[:1] == ["Z"]:
        return None
    return head.partition("(")[2]


@dataclass(frozen=True)
class Identity:
    """Who a pid is: its start time in clock ticks since boot (field 22 of /proc/PID/stat,
    unique per pid for the life of the machine) and its command line."""

    pid: int
    start: int
    cmdline: str


def identity(pid: int) -> Identity | None:
    """The live process behind pid; None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    rest = stat.rpartition(")")[2].split()  # comm may hold spaces and parentheses
    if not rest or rest[0] == "Z":
        return None
    return Identity(pid, int(rest[19]), raw.replace(b"\0", b" ").decode(errors="replace"))


def read_pid(path: Path) -> int | None:
    text = read_pid_record(path)
    return text[0] if text else None


def read_pid_record(path: Path) -> tuple[int, int | None] | None:
    """(pid, start) from a pid file: "PID" as daemons write it, or "PID START" as we do."""
    try:
        fields = path.read_text().split()
    except OSError:
        return None
    if not fields or not fields[0].isdigit():
        return None
    start = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
    return int(fields[0]), start


def write_pid(path: Path, pid: int) -> None:
    """A pid file that records the start time too, so a recycled pid is never mistaken."""
    ident = identity(pid)
    path.write_text(f"{pid} {ident.start}\n" if ident else f"{pid}\n")


def is_ours(pid: int, *, start: int | None = None, marker: str | None = None) -> bool:
    """Whether pid is still the process we started: same start time when we recorded it,
    and the marker (our run directory, a shell's name) in its command line when given."""
    ident = identity(pid)
    if ident is None or (start is None and marker is None):
        return False
    if start is not None and ident.start != start:
        return False
    return marker is None or marker in ident.cmdline


def stop_pid(pid: int, *, start: int | None = None, marker: str | None = None,
             timeout: float = 5.0) -> bool:
    """SIGTERM then SIGKILL one process, only if it is the one we started.

    Returns True when a process was signalled. A recycled pid (another start time, or a
    command line without our marker) is left alone: we stop only what we started.
    """
    ident = identity(pid)
    if ident is None or not is_ours(pid, start=start, marker=marker):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False

    def gone() -> bool:
        now = identity(pid)
        return now is None or now.start != ident.start

    try:
        wait_until(gone, timeout, f"pid {pid} to exit", 0.05)
    except DeadlineError:
        log.warning("pid %d ignored SIGTERM; sending SIGKILL", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_until(gone, 2.0, f"pid {pid} to die", 0.05)
    return True


def stop_pid_file(path: Path, marker: str | None = None, timeout: float = 5.0) -> bool:
    """Stop what a pid file names, by its recorded start time and/or the marker."""
    rec = read_pid_record(path)
    return rec is not None and stop_pid(rec[0], start=rec[1], marker=marker, timeout=timeout)


class NodeExec:
    """Runs commands inside a node's network namespace, found by its shell's pid."""

    def __init__(self, name: str, pid: int):
        self.name = name
        self.pid = pid

    def argv(self, cmd: Sequence[str]) -> list[str]:
        return ["mnexec", "-a", str(self.pid), *cmd]

    def run(
        self, cmd: Sequence[str], timeout: float = 15.0, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
        )

    def check(self, cmd: Sequence[str], timeout: float = 15.0) -> str:
        res = self.run(cmd, timeout)
        if res.returncode != 0:
            raise LabError(
                f"{self.name}: {' '.join(cmd)} failed ({res.returncode}): "
                f"{(res.stderr or res.stdout).strip()[:500]}"
            )
        return res.stdout


class Daemon:
    """A daemon in one node: its files live in that node's run directory.

    ``after`` names the kinds that must be ready before this kind starts (an absent kind is
    ignored); ``spawned_by`` marks a process another daemon starts (ExaBGP's API process):
    the lab waits for it after its parent and stops it right after its parent."""

    kind: ClassVar[str]
    after: ClassVar[tuple[str, ...]] = ()
    spawned_by: ClassVar[str | None] = None
    ready_timeout: float = 30.0  # a kind's default; an instance may need longer
    owner: ClassVar[str | None] = None  # user that must own the run directory

    def __init__(self, node: str, rundir: Path, config: str):
        self.node = node
        self.rundir = rundir
        self.config = config
        self.started = False

    @property
    def conf_path(self) -> Path:
        return self.rundir / f"{self.kind}.conf"

    @property
    def pid_path(self) -> Path:
        return self.rundir / f"{self.kind}.pid"

    @property
    def log_path(self) -> Path:
        return self.rundir / f"{self.kind}.log"

    @property
    def marker(self) -> str:
        """What every process of ours names on its command line: the node's run directory."""
        return str(self.rundir)

    def write(self) -> None:
        self.rundir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config)
        if self.owner:
            shutil.chown(self.rundir, self.owner, self.owner)
            shutil.chown(self.conf_path, self.owner, self.owner)

    def check_cmd(self) -> list[str]:
        raise NotImplementedError

    def start_cmd(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def dry_run(self) -> None:
        """Run the daemon's own config checker; raise ConfigCheckError with its words."""
        res = subprocess.run(
            self.check_cmd(), capture_output=True, text=True, timeout=60, env=self.env()
        )
        problems = self.problems(res)
        if problems:
            raise ConfigCheckError(f"{self.node}/{self.kind}: {self.conf_path}: {problems}")

    def problems(self, res: subprocess.CompletedProcess[str]) -> str:
        if res.returncode != 0:
            return (res.stderr or res.stdout).strip()[:800] or f"exit {res.returncode}"
        return ""

    def start(self, ex: NodeExec) -> None:
        self.pid_path.unlink(missing_ok=True)
        self.started = True
        res = ex.run(self.start_cmd(), env=self.env(), timeout=30)
        if res.returncode != 0:
            raise LabError(
                f"{self.node}/{self.kind} failed to start: {(res.stderr or res.stdout).strip()}"
            )

    def ready(self, ex: NodeExec) -> bool:
        """Polled after start until true (or the kind's ready_timeout): alive, by default."""
        return self.alive()

    def pid(self) -> int | None:
        rec = read_pid_record(self.pid_path)
        if rec is None or not is_ours(rec[0], start=rec[1], marker=self.marker):
            return None
        return rec[0]

    def alive(self) -> bool:
        return self.pid() is not None

    def stop(self) -> None:
        stop_pid_file(self.pid_path, self.marker)
        self.pid_path.unlink(missing_ok=True)


def start_order(kinds: Iterable[str], classes: Mapping[str, type[Daemon]]) -> list[str]:
    """The kinds present, each after the kinds it declares (``after``), ties in the order
    given; a cycle is a LabError naming it."""
    present = list(dict.fromkeys(kinds))
    order: list[str] = []
    visiting: list[str] = []

    def visit(kind: str) -> None:
        if kind in order:
            return
        if kind in visiting:
            raise LabError(f"daemon order has a cycle: {' -> '.join([*visiting, kind])}")
        visiting.append(kind)
        cls = classes[kind]
        for dep in (*cls.after, *((cls.spawned_by,) if cls.spawned_by else ())):
            if dep in present:
                visit(dep)
        visiting.pop()
        order.append(kind)

    for kind in present:
        visit(kind)
    return order


def start_batch(batch: Sequence[tuple[Daemon, NodeExec]]) -> None:
    """Start daemons of one kind, then poll each toward its deadline until it is ready."""
    if not batch:
        return
    for d, ex in batch:
        d.start(ex)
    pending = list(batch)

    def ready() -> bool:
        pending[:] = [(d, ex) for d, ex in pending if not d.ready(ex)]
        return not pending

    try:
        wait_until(ready, max(d.ready_timeout for d, _ in batch),
                   f"{batch[0][0].kind} to be ready", 0.1)
    except DeadlineError as exc:
        names = ", ".join(f"{d.node}/{d.kind}" for d, _ in pending[:5])
        raise DeadlineError(f"{exc}: not ready: {names}") from None


def stop_order(order: Sequence[str], classes: Mapping[str, type[Daemon]]) -> list[str]:
    """The reverse of the start order, except that a spawned process is stopped right after
    its parent (ExaBGP would respawn an API process stopped before it)."""
    out: list[str] = []
    for kind in reversed(order):
        if classes[kind].spawned_by in order:
            continue
        out.append(kind)
        out += [k for k in reversed(order) if classes[k].spawned_by == kind]
    return out


class FrrDaemon(Daemon):
    owner = "frr"

    def _common(self) -> list[str]:
        return [
            str(FRR_DIR / self.kind),
            "-u", "frr", "-g", "frr",
            "-f", str(self.conf_path),
            "-z", str(self.rundir / "zserv.api"),
        ]

    def check_cmd(self) -> list[str]:
        return [*self._common(), "-C"]

    def start_cmd(self) -> list[str]:
        return [
            *self._common(),
            "-d",
            "-i", str(self.pid_path),
            "--vty_socket", str(self.rundir),
            "-P", "0",
            "--log", f"file:{self.log_path}",
        ]

    def problems(self, res: subprocess.CompletedProcess[str]) -> str:
        # FRR's -C exits 0 even on unknown commands; the complaint is on stderr.
        bad = [
            ln for ln in res.stderr.splitlines()
            if "config line" in ln or ("Error" in ln and "MPLS" not in ln)
        ]
        return "; ".join(bad) or super().problems(res)


class Zebra(FrrDaemon):
    kind = "zebra"
    after = ("delayline",)  # links hold their delay before the first hello

    def ready(self, ex: NodeExec) -> bool:
        # ospfd and bgpd need zebra's API socket before they can register.
        return self.alive() and (self.rundir / "zserv.api").exists()


class Ospfd(FrrDaemon):
    kind = "ospfd"
    after = ("zebra",)


class Ospf6d(FrrDaemon):
    """OSPFv3 on a dual-stack backbone (issue 18), beside ospfd."""

    kind = "ospf6d"
    after = ("zebra",)


class Bgpd(FrrDaemon):
    kind = "bgpd"
    after = ("zebra", "ospfd", "ospf6d")


def vtysh(ex: NodeExec, rundir: Path, *commands: str, timeout: float = 10.0) -> str:
    argv = ["vtysh", "--vty_socket", str(rundir)]
    for c in commands:
        argv += ["-c", c]
    return ex.check(argv, timeout)


class ExaBgp(Daemon):
    """ExaBGP on an AR or the HA; its API process is the agent (AgentProcess)."""

    kind = "exabgp"
    after = ("zebra", "ospfd", "ospf6d", "bgpd")

    def __init__(self, node: str, rundir: Path, config: str, exabgp_bin: str):
        super().__init__(node, rundir, config)
        self.exabgp_bin = exabgp_bin

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                # ExaBGP drops to 'nobody' unless told otherwise; the agent needs netlink.
                "exabgp_daemon_user": "root",
                "exabgp_daemon_daemonize": "true",
                "exabgp_daemon_pid": str(self.pid_path),
                "exabgp_log_destination": str(self.log_path),
                "exabgp_api_cli": "false",
                "exabgp_api_ack": "true",
                "exabgp_tcp_bind": "",
            }
        )
        return env

    def check_cmd(self) -> list[str]:
        return [self.exabgp_bin, "validate", str(self.conf_path)]

    def start_cmd(self) -> list[str]:
        return [self.exabgp_bin, "server", str(self.conf_path)]


def answers(sock: Path) -> bool:
    """Whether an agent's control socket answers a status request: the agents' readiness."""
    try:
        return bool(control.request(sock, {"cmd": Command.STATUS}, timeout=2).get("ok"))
    except control.ControlError:
        return False


class ForegroundDaemon(Daemon):
    """A process that does not daemonize: the lab runs it under its own session, with a pid
    file that records its start time, and a start-up failure is reported with its log."""

    def argv(self) -> list[str]:
        raise NotImplementedError

    def __init__(self, node: str, rundir: Path, config: str) -> None:
        super().__init__(node, rundir, config)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, ex: NodeExec) -> None:
        self.pid_path.unlink(missing_ok=True)
        self.started = True
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(ex.argv(self.argv()), stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        # mnexec execs the command in place: the pid is the command's own.
        write_pid(self.pid_path, self._proc.pid)

    def exited(self) -> None:
        """Raise, with the tail of its log, if the process has already exited."""
        if self._proc is not None and self._proc.poll() is not None:
            raise LabError(f"{self.node}/{self.kind} exited ({self._proc.returncode}): "
                           f"{self.log_path.read_text(errors='replace')[-400:]}")

    def stop(self) -> None:
        super().stop()
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=3)
            self._proc = None


class AgentFiles(Daemon):
    """The files every agent's run directory holds under the contract's names."""

    @property
    def conf_path(self) -> Path:
        return self.rundir / Layout.AGENT_CONFIG

    @property
    def pid_path(self) -> Path:
        return self.rundir / Layout.AGENT_PID


class AgentProcess(AgentFiles):
    """The AR agent or the HA agent: ExaBGP's API process, so ExaBGP starts it (and writes
    no start time: our run directory on its command line identifies it); we check its
    configuration against the contract before anything starts, wait until its control
    socket answers, and stop it by pid after ExaBGP."""

    kind = "agent"
    spawned_by = "exabgp"
    after = ("exabgp",)

    def __init__(self, node: str, rundir: Path, config: str, module: str, python: str):
        super().__init__(node, rundir, config)
        self.module = module  # agents.ar or agents.ha
        self.python = python

    @property
    def log_path(self) -> Path:
        return self.rundir / Layout.AGENT_LOG

    def check_cmd(self) -> list[str]:
        return [self.python, "-m", self.module, "--check", "--node", self.node,
                "--rundir", str(self.rundir), "--config", str(self.conf_path)]

    def start(self, ex: NodeExec) -> None:
        self.started = True  # ExaBGP runs us

    def ready(self, ex: NodeExec) -> bool:
        return self.alive() and answers(self.rundir / Layout.CONTROL)


class MnAgentProcess(AgentFiles, ForegroundDaemon):
    """The MN agent (agents/mn.py), started in the MN's namespace."""

    kind = "mnagent"
    after = ("unbound",)

    def __init__(self, node: str, rundir: Path, config: str, python: str) -> None:
        super().__init__(node, rundir, config)
        self.python = python

    @property
    def log_path(self) -> Path:
        return self.rundir / Layout.AGENT_STDERR

    def argv(self) -> list[str]:
        return [self.python, "-m", "agents.mn", "--rundir", str(self.rundir),
                "--config", str(self.conf_path), "--keys", str(self.rundir / Layout.AR_KEYS)]

    def check_cmd(self) -> list[str]:
        return [*self.argv(), "--check"]

    def ready(self, ex: NodeExec) -> bool:
        self.exited()
        return answers(self.rundir / Layout.CONTROL)


class Dnsmasq(Daemon):
    """dnsmasq as the visited network's DHCP server (no DNS): a standard server, so the MN's
    care-of address comes the way it would in any operator's network (draft 2.4)."""

    kind = "dnsmasq"
    after = ("zebra",)

    def check_cmd(self) -> list[str]:
        return ["dnsmasq", "--test", f"--conf-file={self.conf_path}"]

    def start_cmd(self) -> list[str]:
        # It daemonizes and writes the pid file named in its configuration.
        return ["dnsmasq", f"--conf-file={self.conf_path}"]
