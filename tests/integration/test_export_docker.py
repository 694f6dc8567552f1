"""The Kathará export on the local Docker, opt-in (FLATARCH_DOCKER=1, `make docker-test`):
our own dockerd (pid file, its own directories, no netfilter), the image built by the
export's own recipe, two exported devices (agg1 and ar1) started by their own startups.

Kathará's data plane is stood in for: its network plugin comes only from a registry, so the
collision domain the two devices share is one veth pair and every other one a stub veth.
That checks the export's files, image and startups, not Kathará's own deployment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from topologies import model
from topologies.export import kathara
from topologies.export.plan import build_plan, rundir
from topologies.lab.daemons import is_ours, read_pid_record, stop_pid_file, wait_until

pytestmark = [
    pytest.mark.docker, pytest.mark.root,
    pytest.mark.skipif(not os.environ.get("FLATARCH_DOCKER"),
                       reason="opt-in: FLATARCH_DOCKER=1 (make docker-test)"),
]
ROOT = Path(__file__).resolve().parents[2]
TOPO = model.load(ROOT / "topologies" / "figure2.yaml")
DEVICES = ("agg1", "ar1")
# The capabilities that work here in place of --privileged (the host lacks SYS_RESOURCE).
RUN_OPTS = ["--network", "none", "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
            "--security-opt", "seccomp=unconfined", "--security-opt", "systempaths=unconfined"]


@dataclass
class DockerLab:
    root: Path
    env: dict[str, str]
    image: str
    started: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def docker(self, *args: str, timeout: float = 120) -> str:
        res = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
        assert res.returncode == 0, f"docker {' '.join(args)}: {res.stderr.strip()[:400]}"
        return res.stdout

    def vtysh(self, dev: str, command: str) -> Any:
        return json.loads(self.docker("exec", f"flatarch-{dev}", "vtysh", "--vty_socket",
                                      str(rundir(TOPO, dev)), "-c", command))


def _dockerd(root: Path, env: dict[str, str]) -> None:
    sock = root / "docker.sock"
    with (root / "dockerd.log").open("wb") as log:
        subprocess.Popen(["dockerd", "--pidfile", str(root / "dockerd.pid"),
                          "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
                          "-H", f"unix://{sock}", "--iptables=false", "--ip6tables=false",
                          "--ip-forward=false", "--bridge=none"],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    wait_until(lambda: subprocess.run(["docker", "info"], env=env, capture_output=True)
               .returncode == 0, 60, "our dockerd to answer", 0.2)


def _wire(lab: DockerLab, pids: dict[str, int]) -> None:
    """A veth pair for each collision domain both devices join, a stub veth for the rest."""
    data = kathara.lab_conf_data(TOPO, build_plan(TOPO))
    ports = {d["name"]: d["ports"] for d in data["devices"] if d["name"] in DEVICES}
    shared = set(ports[DEVICES[0]]) & set(ports[DEVICES[1]])
    for domain in sorted(shared):
        a, b = (f"fx{domain}{s}" for s in "ab")
        subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
        for dev, end in zip(DEVICES, (a, b), strict=True):
            subprocess.run(["ip", "link", "set", end, "netns", str(pids[dev])], check=True)
            subprocess.run(["nsenter", "-t", str(pids[dev]), "-n", "ip", "link", "set", end,
                            "name", f"eth{ports[dev].index(domain)}"], check=True)
    for dev in DEVICES:
        for i, domain in enumerate(ports[dev]):
            if domain not in shared:
                subprocess.run(["nsenter", "-t", str(pids[dev]), "-n", "ip", "link", "add",
                                f"eth{i}", "type", "veth", "peer", "name", f"stub{i}"],
                               check=True)


@pytest.fixture(scope="module")
def lab() -> Iterator[DockerLab]:
    root = Path(tempfile.mkdtemp(prefix="flatarch-docker-"))
    out = root / "lab"
    plan = build_plan(TOPO)
    kathara.export(TOPO, plan, out)
    lab = DockerLab(root, {**os.environ, "DOCKER_HOST": f"unix://{root / 'docker.sock'}"},
                    plan.image)
    try:
        t0 = time.monotonic()
        _dockerd(root, lab.env)
        lab.figures["dockerd_ready_s"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        res = subprocess.run(["sh", str(out / kathara.RECIPE_DIR / "build-image.sh"),
                              str(ROOT)], env=lab.env, capture_output=True, text=True,
                             timeout=1200)
        assert res.returncode == 0, res.stderr[-2000:]
        lab.figures["image_build_s"] = round(time.monotonic() - t0, 1)
        pids = {}
        for dev in DEVICES:
            name = f"flatarch-{dev}"
            lab.docker("create", "--name", name, "--hostname", dev, *RUN_OPTS, plan.image,
                       "sleep", "infinity")
            lab.docker("cp", f"{out / dev}/.", f"{name}:/")
            lab.docker("cp", str(out / f"{dev}.startup"), f"{name}:/{dev}.startup")
            lab.docker("start", name)
            pids[dev] = int(lab.docker("inspect", "-f", "{{.State.Pid}}", name))
        _wire(lab, pids)
        for dev in DEVICES:
            lab.started[dev] = time.monotonic()
            lab.docker("exec", f"flatarch-{dev}", "sh", f"/{dev}.startup")
        yield lab
    finally:
        _teardown(lab)


def _teardown(lab: DockerLab) -> None:
    for dev in DEVICES:
        subprocess.run(["docker", "rm", "-f", f"flatarch-{dev}"], env=lab.env,
                       capture_output=True)
    subprocess.run(["docker", "rmi", "-f", lab.image], env=lab.env, capture_output=True)
    pid_file = lab.root / "dockerd.pid"
    rec = read_pid_record(pid_file)
    stop_pid_file(pid_file, marker=str(lab.root), timeout=30)
    if rec is not None:
        wait_until(lambda: not is_ours(rec[0], marker=str(lab.root)), 30, "dockerd to exit")
    shutil.rmtree(lab.root, ignore_errors=True)
    assert not lab.root.exists()
    assert not any(Path("/var/tmp").glob("flatarch-image.*")), "image build dir left behind"


def test_ospf_full_and_the_ar_session_established(lab: DockerLab) -> None:
    ar1 = str(TOPO.node("ar1").loopback)

    def up() -> bool:
        nbrs = lab.vtysh("agg1", "show ip ospf neighbor json").get("neighbors", {})
        peers = lab.vtysh("agg1", "show bgp summary json").get("ipv4Unicast", {}).get(
            "peers", {})
        return (any(n.get("nbrState", "").startswith("Full") for n in nbrs.get(ar1, []))
                and peers.get(ar1, {}).get("state") == "Established")

    wait_until(up, 60, "agg1's adjacency and BGP session with ar1", 0.5)
    lab.figures["ar1_startup_to_established_s"] = round(time.monotonic() - lab.started["ar1"],
                                                       1)


def test_the_ar_pool_reaches_the_aggregation_router(lab: DockerLab) -> None:
    pool = str(TOPO.node("ar1").pool)

    def routed() -> bool:
        out = lab.docker("exec", "flatarch-agg1", "ip", "-j", "route", "show", "exact", pool)
        return any(r.get("protocol") == "bgp" for r in json.loads(out or "[]"))

    wait_until(routed, 60, f"agg1 to route ar1's pool {pool}", 0.5)


def test_the_ar_agent_answers_and_memory_is_recorded(lab: DockerLab) -> None:
    sock = rundir(TOPO, "ar1") / "control.sock"
    code = ("import json, sys; from agents import control; "
            f"print(json.dumps(control.request({str(sock)!r}, {{'cmd': 'status'}}, timeout=3)))")

    def answers() -> bool:
        res = subprocess.run(["docker", "exec", "flatarch-ar1", "/opt/flatarch/.venv/bin/python",
                              "-c", code], env=lab.env, capture_output=True, text=True)
        return res.returncode == 0 and bool(json.loads(res.stdout).get("ok"))

    wait_until(answers, 60, "ar1's agent to answer on its control socket", 0.5)
    stats = lab.docker("stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}")
    lab.figures["memory"] = dict(line.split(" ", 1) for line in stats.splitlines())
    out = os.environ.get("FLATARCH_DOCKER_JSON")
    if out:
        Path(out).write_text(json.dumps(lab.figures, indent=2, sort_keys=True) + "\n")
