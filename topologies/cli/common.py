"""What the verbs share: the default topology, root checks, the --json writer and the
parser that reports a bad command line in one line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from topologies.lab.daemons import LabError

DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[1] / "figure2.yaml"


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (and status 2)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (try --help)", file=sys.stderr)
        raise SystemExit(2)


def stop_on(*signums: int) -> None:
    """Make each signal a KeyboardInterrupt, so that the lab's exit cleans up. A shell that
    backgrounds us (`cmd &` without job control) has set SIGINT to ignored.

    Only in this process: a forked copy of it exits on the signal at once. pyroute2 forks to
    open a socket in a namespace and sends the child SIGTERM when done; beside a CPU hog the
    child is still running then, and an interrupt would unwind it through our with-blocks,
    tearing down the lab its parent was still building (the parent then hung in Mininet)."""
    owner = os.getpid()

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        signal.default_int_handler(signum, frame)

    for s in signums:
        signal.signal(s, interrupt)


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("this verb builds network namespaces and needs root (use sudo)")


def add_topology(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topology", default=str(DEFAULT_TOPOLOGY))


def add_distance(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--distance", metavar="NAME",
                        help="lay the topology's named distance set (its `distances:`) over "
                        "its links and home network")


def distance_topology(topology: str, distance: str | None, out: Path) -> Path:
    """The topology file to run: ``topology`` itself, or with ``distance`` laid over it, a
    plain topology written into ``out`` (so the run keeps what it ran on)."""
    if not distance:
        return Path(topology)
    import yaml

    from topologies.model.errors import TopologyError
    from topologies.model.links import with_distance

    try:
        doc = yaml.safe_load(Path(topology).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TopologyError(f"{topology}: {exc}") from None
    if not isinstance(doc, dict):
        raise TopologyError(f"{topology}: topology must be a mapping")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{Path(topology).stem}-{distance}.yaml"
    path.write_text(f"# {topology} with its distance set {distance!r} laid over it\n"
                    + yaml.safe_dump(with_distance(doc, distance), sort_keys=False))
    return path
