"""The exports with their configs: the lab renders, keys and dry-runs every file as for
`up` (root: FRR's files belong to frr), and each lands where the startups look for it, with
no path of this machine left in it. Builds no namespace and starts no daemon."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from topologies import model
from topologies.export import containerlab, kathara
from topologies.export.plan import CONTAINER_RUN, build_plan

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]
TOPO = model.load(ROOT / "topologies" / "figure2.yaml")
RUNDIRS = {f"{CONTAINER_RUN}/{TOPO.name}/{n}" for n in build_plan(TOPO).nodes}


def named_paths(commands: list[str]) -> set[str]:
    """Every file a start command names under the run directories (pid and log files, and
    the sockets daemons make, do not exist before they start)."""
    out = set()
    for cmd in commands:
        for word in shlex.split(cmd):
            for path in re.findall(rf"{CONTAINER_RUN}/[\w./-]+", word):
                if not re.search(r"\.(pid|log|stderr|api)$", path) and path not in RUNDIRS:
                    out.add(path)
    return out


def no_host_paths(tree: Path) -> list[str]:
    bad = []
    for path in tree.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode(errors="replace")
            if sys.executable in text or str(ROOT) in text or "flatarch-export-" in text:
                bad.append(str(path))
    return bad


def test_kathara_device_dirs_hold_every_file_the_startups_name(tmp_path: Path) -> None:
    plan = build_plan(TOPO)
    kathara.export(TOPO, plan, tmp_path)
    for dev in kathara.devices(plan):
        missing = [p for p in named_paths([s.command for s in dev.steps])
                   if not (tmp_path / dev.name / p.lstrip("/")).exists()]
        assert missing == [], dev.name
    for ar in TOPO.by_role(model.Role.AR):
        assert (tmp_path / ar.name / f"run/flatarch/figure2/{ar.name}/identity.pem").exists()
    assert no_host_paths(tmp_path) == []


def test_containerlab_configs_hold_every_file_the_execs_name(tmp_path: Path) -> None:
    plan = build_plan(TOPO)
    containerlab.export(TOPO, plan, tmp_path)
    for node in plan.nodes.values():
        rd = f"{CONTAINER_RUN}/{TOPO.name}/{node.name}"
        names = named_paths([s.command for s in node.steps])
        missing = [p for p in names if p.startswith(rd + "/")
                   and not (tmp_path / "configs" / node.name / p[len(rd) + 1:]).exists()]
        assert missing == [], node.name
    assert no_host_paths(tmp_path) == []
