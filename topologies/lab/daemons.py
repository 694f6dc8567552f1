"""One class per daemon: render target, config dry-run, start in a node, readiness, stop.

Every daemon writes its own pid file under the node's run directory; stop() reads it,
checks the process is still the one we started (by command name) and signals only it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

log = logging.getLogger(__name__)

FRR_DIR = Path("/usr/lib/frr")
AGENT_COMMS = ("python", "python3")  # agents run as `python -m agents.<name>`


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


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def stop_pid(pid: int, comms: Sequence[str], timeout: float = 5.0) -> bool:
    """SIGTERM then SIGKILL one process, only if its comm is one we expect.

    Returns True when a process was signalled. A recycled pid whose comm differs is
    left alone: we stop only what we started.
    """
    comm = proc_comm(pid)
    if comm is None or not any(comm.startswith(c[:15]) for c in comms):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    try:
        wait_until(lambda: proc_comm(pid) != comm, timeout, f"pid {pid} ({comm}) to exit", 0.05)
    except DeadlineError:
        log.warning("pid %d (%s) ignored SIGTERM; sending SIGKILL", pid, comm)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: proc_comm(pid) != comm, 2.0, f"pid {pid} to die", 0.05)
    return True


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
    """A daemon in one node: its files live in that node's run directory."""

    kind: ClassVar[str]
    comms: ClassVar[tuple[str, ...]]
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

    def pid(self) -> int | None:
        pid = read_pid(self.pid_path)
        if pid is None or proc_comm(pid) is None:
            return None
        return pid

    def alive(self) -> bool:
        return self.pid() is not None

    def stop(self) -> None:
        pid = read_pid(self.pid_path)
        if pid is not None:
            stop_pid(pid, self.comms)
        self.pid_path.unlink(missing_ok=True)


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
    comms = ("zebra",)


class Ospfd(FrrDaemon):
    kind = "ospfd"
    comms = ("ospfd",)


class Bgpd(FrrDaemon):
    kind = "bgpd"
    comms = ("bgpd",)


def vtysh(ex: NodeExec, rundir: Path, *commands: str, timeout: float = 10.0) -> str:
    argv = ["vtysh", "--vty_socket", str(rundir)]
    for c in commands:
        argv += ["-c", c]
    return ex.check(argv, timeout)


class ExaBgp(Daemon):
    """ExaBGP on an AR; its API process is the AR agent, which ExaBGP spawns."""

    kind = "exabgp"
    comms = ("exabgp",)

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

    def stop(self) -> None:
        # The agent exits on its own when ExaBGP closes its stdin; stop it by pid anyway.
        agent_pid = read_pid(self.rundir / "agent.pid")
        super().stop()
        if agent_pid is not None:
            stop_pid(agent_pid, AGENT_COMMS, timeout=3.0)
        (self.rundir / "agent.pid").unlink(missing_ok=True)


class MnAgentProcess(Daemon):
    """The MN agent (agents/mn.py), started in the MN's namespace; it writes agent.pid."""

    kind = "mnagent"
    comms = AGENT_COMMS

    def __init__(self, node: str, rundir: Path, config: str, python: str) -> None:
        super().__init__(node, rundir, config)
        self.python = python
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def conf_path(self) -> Path:
        return self.rundir / "agent.json"

    @property
    def pid_path(self) -> Path:
        return self.rundir / "agent.pid"

    @property
    def log_path(self) -> Path:
        return self.rundir / "agent.stderr"

    def _argv(self) -> list[str]:
        return [self.python, "-m", "agents.mn", "--rundir", str(self.rundir),
                "--config", str(self.conf_path), "--keys", str(self.rundir / "ar_keys.json")]

    def check_cmd(self) -> list[str]:
        return [*self._argv(), "--check"]

    def start(self, ex: NodeExec) -> None:
        self.pid_path.unlink(missing_ok=True)
        self.started = True
        with self.log_path.open("ab") as err:
            self._proc = subprocess.Popen(
                ex.argv(self._argv()), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, start_new_session=True,
            )

    def stop(self) -> None:
        super().stop()
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=3)
            self._proc = None


class Dnsmasq(Daemon):
    """dnsmasq as the visited network's DHCP server (no DNS): a standard server, so the MN's
    care-of address comes the way it would in any operator's network (draft 2.4)."""

    kind = "dnsmasq"
    comms = ("dnsmasq",)

    def check_cmd(self) -> list[str]:
        return ["dnsmasq", "--test", f"--conf-file={self.conf_path}"]

    def start_cmd(self) -> list[str]:
        # It daemonizes and writes the pid file named in its configuration.
        return ["dnsmasq", f"--conf-file={self.conf_path}"]
