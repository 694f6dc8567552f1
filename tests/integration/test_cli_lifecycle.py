"""`flatarch` verbs on a second topology: up --check, and down after a crashed `up`.

The second shape (3 clusters of 5 ARs) proves nothing is tied to Figure 2's size.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from topologies.lab.daemons import wait_until
from topologies.lab.lab import RUN_ROOT

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]
FLATARCH = [sys.executable, "-m", "topologies.cli"]
THREE = str(ROOT / "topologies" / "three_by_five.yaml")


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLATARCH, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_up_check_second_topology(tmp_path: Path) -> None:
    out = tmp_path / "health.json"
    res = run("up", "--topology", THREE, "--check", "--json", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    h = json.loads(out.read_text())
    assert h["healthy"] is True
    assert h["nodes"] == 24  # with the anchored baseline's pgw node
    assert h["bgp_sessions"]["established"] == h["bgp_sessions"]["total"] > 30
    assert h["ospf_full"] is True
    assert h["pools_reachable"] == {"ok": 15, "total": 15}
    # Its backbone is dual-stack (issue 18): the same figures for IPv6, under "ipv6".
    six = h["ipv6"]
    assert six["bgp_sessions"] == h["bgp_sessions"]
    assert six["ospf_full"] is True
    assert six["pools_reachable"] == {"ok": 15, "total": 15}
    assert six["core_more_specifics"] == []
    assert "waiting:" in res.stderr  # progress was shown
    assert not (RUN_ROOT / "threebyfive").exists()


def test_down_after_crashed_up_and_twice(tmp_path: Path) -> None:
    log = (tmp_path / "up.log").open("w")
    proc = subprocess.Popen([*FLATARCH, "up", "--topology", THREE], stdout=log,
                            stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_until(lambda: "is up" in (tmp_path / "up.log").read_text() or
                   proc.poll() is not None, 180, "the lab to come up")
        assert proc.poll() is None, (tmp_path / "up.log").read_text()[-2000:]
        res = run("exec", "ar1", "--", "ip", "-4", "route")
        assert res.returncode == 0 and "10.80.0.0/24" in res.stdout
        assert run("exec", "nonode", "--", "true").returncode != 0
        st = tmp_path / "status.json"
        assert run("status", "--json", str(st)).returncode == 0
        status = json.loads(st.read_text())
        assert status["nodes"]["agg1"]["daemons"] == {"zebra": True, "ospfd": True,
                                                      "ospf6d": True, "bgpd": True}
        os.kill(proc.pid, signal.SIGKILL)  # a crash: no cleanup ran
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    first = run("down")
    assert first.returncode == 0, first.stderr
    assert "stopped" in first.stdout
    second = run("down")
    assert second.returncode == 0 and second.stdout.strip() == ""
    assert not RUN_ROOT.joinpath("threebyfive").exists()


def test_up_check_more_mobiles_than_ars_in_uneven_clusters(tmp_path: Path) -> None:
    # 12 MNs on 11 ARs (clusters of 1, 3 and 7, one single-homed): each MN its own address,
    # each first-authenticated at its home AR, every session up and every pool reachable.
    out = tmp_path / "health.json"
    res = run("up", "--topology", str(ROOT / "topologies" / "uneven.yaml"), "--check",
              "--json", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    h = json.loads(out.read_text())
    assert h["healthy"] is True and h["problems"] == []
    assert h["pools_reachable"] == {"ok": 11, "total": 11}
    assert "first authentication of 12 MNs" in res.stderr


def test_overlapping_pools_are_refused_at_load_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (ROOT / "topologies" / "three_by_five.yaml").read_text()
    bad.write_text(text.replace("services: 10.253.0.0/24", "services: 10.254.2.0/24"))
    res = run("up", "--topology", str(bad), "--check")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert lines == [f"flatarch: {bad}: addressing.services 10.254.2.0/24 overlaps "
                     "addressing.links 10.254.0.0/22"]
