"""Packet captures in a running lab: tcpdump inside a node, writing pcap to a file or a pipe.

Each tcpdump has a pid file that the lab's state names, so `flatarch down` stops it even
when whoever started it died. `flatarch capture` and the scenarios' `--capture` use `Capture`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from topologies.lab.daemons import LabError, NodeExec, wait_until, write_pid
from topologies.lab.lab import track_pid_file
from topologies.lab.lifetime import StartStop

if TYPE_CHECKING:
    from topologies.lab.lab import Lab

CAPTURE_DIR = "capture"
_serial = itertools.count(1)


class CaptureError(LabError):
    """A capture could not start (bad node, interface or filter) or did not stop."""


@dataclass(frozen=True)
class CaptureSpec:
    """Where to capture: a node and one of its interfaces (tcpdump's "any" by default)."""

    node: str
    iface: str = "any"

    @classmethod
    def parse(cls, text: str) -> CaptureSpec:
        text = text.strip()
        node, colon, iface = text.partition(":")
        # Names only: the parts end up in file names and on tcpdump's command line.
        if not node or (colon and not iface) or any(c in text for c in "/ \t") or ":" in iface:
            raise CaptureError(f"bad capture point {text!r}: expected NODE or NODE:IFACE")
        return cls(node, iface or "any")

    @property
    def stem(self) -> str:
        return self.node if self.iface == "any" else f"{self.node}-{self.iface}"


def parse_specs(text: str) -> list[CaptureSpec]:
    """The `--capture NODE[:IFACE],...` list of a scenario."""
    return [CaptureSpec.parse(part) for part in text.split(",") if part.strip()]


class Capture(StartStop):
    """tcpdump in ``ex``'s node for the duration of the block, pcap to ``out``.

    ``out`` is a path or an open binary file (for example stdout); tcpdump writes to it
    directly (`--immediate-mode -U -w -`: a pipe reader sees each packet at once).
    Entering returns once tcpdump listens, so nothing sent after it is missed.
    """

    def __init__(self, ex: NodeExec, labdir: Path, spec: CaptureSpec, out: Path | IO[bytes],
                 bpf: str | None = None, start_timeout: float = 10.0) -> None:
        self.ex = ex
        self.labdir = labdir
        self.spec = spec
        self.out = out
        self.bpf = bpf
        self.start_timeout = start_timeout
        stem = f"{spec.stem}-{os.getpid()}-{next(_serial)}"
        self.pid_file = labdir / CAPTURE_DIR / f"{stem}.pid"
        self.log_path = labdir / CAPTURE_DIR / f"{stem}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._own: IO[bytes] | None = None

    @classmethod
    def in_lab(cls, lab: Lab, spec: CaptureSpec, out: Path | IO[bytes],
               bpf: str | None = None) -> Capture:
        if spec.node not in lab.execs:
            raise CaptureError(f"no node {spec.node!r} in lab {lab.topo.name}")
        return cls(lab.execs[spec.node], lab.dir, spec, out, bpf)

    def command(self) -> list[str]:
        # Immediate mode: packets reach us (and a pipe's reader) at once, not once a kernel
        # block fills or a second passes; a stop right after a packet still has it.
        cmd = ["tcpdump", "-n", "-U", "--immediate-mode", "-i", self.spec.iface, "-w", "-"]
        return [*cmd, self.bpf] if self.bpf else cmd

    def start(self) -> None:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            track_pid_file(self.labdir, self.pid_file)
        except LabError as exc:
            raise CaptureError(str(exc)) from None
        sink: IO[bytes]
        if isinstance(self.out, Path):
            self._own = sink = self.out.open("wb")
        else:
            sink = self.out
        with self.log_path.open("wb") as log:
            # Its own session: the terminal's Ctrl-C reaches only us, and we stop it in order.
            self.proc = subprocess.Popen(self.ex.argv(self.command()), stdin=subprocess.DEVNULL,
                                         stdout=sink, stderr=log, start_new_session=True)
        # mnexec execs tcpdump in place: the pid is tcpdump's own.
        write_pid(self.pid_file, self.proc.pid)
        proc = self.proc
        wait_until(lambda: proc.poll() is not None or b"listening on" in self._log(),
                   self.start_timeout, f"tcpdump to listen in {self.spec.node}", 0.02)
        if b"listening on" not in self._log():
            raise CaptureError(f"tcpdump in {self.spec.node} on {self.spec.iface} exited "
                               f"({proc.returncode}): {self.summary() or 'no output'}")

    def _log(self) -> bytes:
        try:
            return self.log_path.read_bytes()
        except OSError:
            return b""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for tcpdump to end by itself; True if it did."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGINT (tcpdump flushes and prints its counts), SIGKILL if it lingers."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            # Our child, not yet reaped: the pid cannot belong to anyone else.
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(2.0)
        if self._own is not None:
            self._own.close()
            self._own = None
        self.pid_file.unlink(missing_ok=True)
        return proc.returncode if proc is not None else None

    def summary(self) -> str:
        """tcpdump's own last lines: its counts after a stop, its complaint after a failure."""
        lines = self._log().decode(errors="replace").strip().splitlines()
        return "; ".join(ln for ln in lines if "listening on" not in ln)[-500:]


@contextlib.contextmanager
def capture_all(lab: Lab, specs: Sequence[CaptureSpec], out_dir: Path,
                bpf: str | None = None) -> Iterator[list[Path]]:
    """One pcap per capture point in ``out_dir`` (NODE.pcap or NODE-IFACE.pcap) for the block."""
    if specs:
        out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{s.stem}.pcap" for s in specs]
    with contextlib.ExitStack() as stack:
        for spec, path in zip(specs, paths, strict=True):
            stack.enter_context(Capture.in_lab(lab, spec, path, bpf))
        yield paths
