"""Health tells the truth: an agent whose authentication, DHCP or netlink service failed to
start makes the lab unhealthy, with the reason in problems."""

from __future__ import annotations

import json
from pathlib import Path

from topologies import model
from topologies.lab.health import agent_problems

ROOT = Path(__file__).resolve().parents[2]
TOPO = model.load(ROOT / "topologies" / "figure2.yaml")


def rundirs(tmp: Path) -> dict[str, Path]:
    out = {}
    for n in TOPO.nodes:
        (tmp / n).mkdir()
        out[n] = tmp / n
    return out


def test_a_failed_service_is_a_problem_with_its_reason(tmp_path: Path) -> None:
    dirs = rundirs(tmp_path)
    up = {"services": {"auth": "up", "dhcp": "up", "netlink": "up"}}
    for ar in TOPO.by_role(model.Role.AR):
        (dirs[ar.name] / "agent.status.json").write_text(json.dumps(up))
    assert agent_problems(TOPO, dirs) == []
    bad = {"services": {"auth": "failed: [Errno 98] Address already in use", "dhcp": "up",
                        "netlink": "up"}}
    (dirs["ar3"] / "agent.status.json").write_text(json.dumps(bad))
    (dirs["ha"] / "agent.status.json").write_text(
        json.dumps({"services": {"netlink": "failed: the monitor ended"}}))
    assert agent_problems(TOPO, dirs) == [
        "ar3: auth service failed: [Errno 98] Address already in use",
        "ha: netlink service failed: the monitor ended",
    ]


def test_an_agent_still_starting_is_not_yet_a_problem(tmp_path: Path) -> None:
    assert agent_problems(TOPO, rundirs(tmp_path)) == []
