"""What the verbs share: the default topology, root checks, the --json writer and the
parser that reports a bad command line in one line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from topologies.lab.daemons import LabError

DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[1] / "figure2.yaml"


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (and status 2)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (try --help)", file=sys.stderr)
        raise SystemExit(2)


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("this verb builds network namespaces and needs root (use sudo)")


def add_topology(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topology", default=str(DEFAULT_TOPOLOGY))
