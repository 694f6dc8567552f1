"""The Kathará export of figure2 deployed with Kathará's own API on a local Docker, in
`make test` (alone: `make docker-test`): our own dockerd (pid file, its own directories, no
netfilter), the image built by the export's recipe, the lab brought up and down by
`flatarch up|down --engine kathara`, every BGP session Established and OSPF adjacency Full,
every AR pool answering the CN, and a handoff across clusters (a runtime re-link through
Kathará's API) that keeps a ping stream alive. It skips only without root or without a
prerequisite `make deps` installs, and names it. Its figures: FLATARCH_DOCKER_JSON=FILE.

Kathará's Docker manager insists on its network plugin, which only a registry serves: here
a stand-in (tests/integration/katharanp/: a bridge per collision domain, a veth per
endpoint) is registered under its name. It stands in for Kathará's data plane only on
machines without registry access; real users get the upstream plugin.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import dockerside
from topologies import model
from topologies.cli import main
from topologies.export import kathara
from topologies.export.katharalab import NETWORK_PLUGIN, KatharaLab, Routing
from topologies.export.plan import ExportPlan, build_plan
from topologies.lab.daemons import is_ours, read_pid_record, stop_pid_file, wait_until


def _missing() -> list[str]:
    missing = [b for b in ("dockerd", "docker", "debootstrap", "chroot")
               if shutil.which(b) is None]
    if importlib.util.find_spec("Kathara") is None:
        missing.append("the Python package kathara")
    return missing


MISSING = _missing()
pytestmark = [
    pytest.mark.docker, pytest.mark.root,
    pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)}: `make deps` "
                       "installs them (docker.io and debootstrap, the venv's docker extra)"),
]
ROOT = Path(__file__).resolve().parents[2]
TOPO = model.load(ROOT / "topologies" / "figure2.yaml")
PLUGIN = NETWORK_PLUGIN
PLUGIN_DIR = Path(__file__).resolve().parent / "katharanp"
MN, HOME, VISITED = "mn1", "ar1", "ar5"  # ar5: another cluster than ar1's


@dataclass
class DockerLab:
    """Our own dockerd and the exported lab it runs, driven by topologies/export."""

    root: Path
    env: dict[str, str]
    plan: ExportPlan
    kathara: KatharaLab
    figures: dict[str, Any] = field(default_factory=dict)
    deployed: bool = False

    def lab_args(self) -> list[str]:
        """The exported lab, as the verbs name it."""
        return ["--topology", str(ROOT / "topologies" / "figure2.yaml"),
                "--lab", str(self.kathara.labdir), "--image", self.plan.image]

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        res = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
        assert not check or res.returncode == 0, \
            f"docker {' '.join(args[:3])}: {res.stderr.strip()[:400]}"
        return res.stdout

    def run(self, dev: str, *argv: str) -> int:
        return self.kathara.run(dev, list(argv))[0]


def _dockerd(root: Path, env: dict[str, str]) -> None:
    # Its containers' cgroups under a parent of its own, removed once it has exited.
    with (root / "dockerd.log").open("wb") as log:
        subprocess.Popen(["dockerd", "--pidfile", str(root / "dockerd.pid"),
                          "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
                          "-H", env["DOCKER_HOST"], "--iptables=false", "--ip6tables=false",
                          "--ip-forward=false", "--bridge=none",
                          "--cgroup-parent", f"/{root.name}"],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    wait_until(lambda: subprocess.run(["docker", "info"], env=env, capture_output=True)
               .returncode == 0, 60, "our dockerd to answer", 0.2)


def _plugin(k: DockerLab) -> None:
    """The stand-in network plugin, its rootfs the node image's (it has python3 and ip)."""
    where = k.root / "plugin"
    (where / "rootfs" / "katharanp").mkdir(parents=True)
    cid = k.docker("create", k.plan.image, "true").strip()
    with subprocess.Popen(["docker", "export", cid], env=k.env, stdout=subprocess.PIPE) as exp:
        subprocess.run(["tar", "-C", str(where / "rootfs"), "-x"], stdin=exp.stdout, check=True)
    k.docker("rm", cid)
    shutil.copy(PLUGIN_DIR / "driver.py", where / "rootfs" / "katharanp" / "driver.py")
    shutil.copy(PLUGIN_DIR / "config.json", where / "config.json")
    k.docker("plugin", "create", f"{PLUGIN}:amd64", str(where))
    k.docker("plugin", "enable", f"{PLUGIN}:amd64")
    shutil.rmtree(where)


@pytest.fixture(scope="module")
def lab() -> Iterator[DockerLab]:
    started = time.monotonic()
    before = dockerside.host_paths(), dockerside.cgroups()
    root = Path(tempfile.mkdtemp(prefix="flatarch-kathara-"))
    plan = build_plan(TOPO)
    k = DockerLab(root, {**os.environ, "DOCKER_HOST": f"unix://{root / 'docker.sock'}"}, plan,
                  KatharaLab(TOPO, root / "lab", plan.image))
    os.environ["DOCKER_HOST"] = k.env["DOCKER_HOST"]  # Kathará's docker.from_env()
    try:
        kathara.export(TOPO, plan, root / "lab")
        t0 = time.monotonic()
        _dockerd(root, k.env)
        k.figures["dockerd_ready_s"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        res = subprocess.run(["sh", str(root / "lab" / kathara.RECIPE_DIR / "build-image.sh"),
                              str(ROOT)], env=k.env, capture_output=True, text=True,
                             timeout=1200)
        assert res.returncode == 0, res.stderr[-2000:]
        k.figures["image_build_s"] = round(time.monotonic() - t0, 1)
        k.figures["image_mb"] = round(int(k.docker("image", "inspect", "--format",
                                                   "{{.Size}}", plan.image)) / 1e6)
        t0 = time.monotonic()
        _plugin(k)
        k.figures["plugin_s"] = round(time.monotonic() - t0, 1)
        k.deployed = True
        # Deployed, converged and every MN attached at home (mn3 by DHCP) by the verb a
        # user runs.
        assert main(["up", "--engine", "kathara", *k.lab_args(),
                     "--json", str(root / "up.json")]) == 0
        up = json.loads((root / "up.json").read_text())
        k.figures.update({f"kathara_up_{key}": up[key]
                          for key in ("deploy_s", "converged_s", "attached_s", "down")})
        yield k
    finally:
        _teardown(k, before)
        k.figures["docker_test_wall_s"] = round(time.monotonic() - started, 1)
        out_json = os.environ.get("FLATARCH_DOCKER_JSON")
        if out_json:
            Path(out_json).write_text(json.dumps(k.figures, indent=2, sort_keys=True) + "\n")


def _teardown(k: DockerLab, before: tuple[set[str], set[str]]) -> None:
    try:
        if k.deployed:  # the last test's `flatarch down` did not run or failed
            k.kathara.undeploy()
    finally:
        # Every container and network of our own dockerd is ours: none may outlive it (a
        # network's bridge lives in the host until the plugin deletes it).
        ids = subprocess.run(["docker", "ps", "-aq"], env=k.env, capture_output=True,
                             text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], env=k.env, capture_output=True)
        subprocess.run(["docker", "network", "prune", "-f"], env=k.env, capture_output=True)
        _stop(k, before)


def _stop(k: DockerLab, before: tuple[set[str], set[str]]) -> None:
    subprocess.run(["docker", "plugin", "disable", "-f", f"{PLUGIN}:amd64"], env=k.env,
                   capture_output=True)
    subprocess.run(["docker", "plugin", "rm", "-f", f"{PLUGIN}:amd64"], env=k.env,
                   capture_output=True)
    subprocess.run(["docker", "rmi", "-f", k.plan.image], env=k.env, capture_output=True)
    pid_file = k.root / "dockerd.pid"
    rec = read_pid_record(pid_file)
    stop_pid_file(pid_file, marker=str(k.root), timeout=30)
    if rec is not None:
        wait_until(lambda: not is_ours(rec[0], marker=str(k.root)), 30, "dockerd to exit")
    shutil.rmtree(k.root, ignore_errors=True)
    os.environ.pop("DOCKER_HOST", None)
    dockerside.remove_created(*before)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not dockerside.links(links), "a collision domain's bridge or veth was left"
    assert not k.root.exists() and not any(Path("/var/tmp").glob("flatarch-image.*"))


def test_every_session_established_and_every_adjacency_full(lab: DockerLab) -> None:
    last: list[Routing] = []

    def converged() -> bool:
        last[:] = [lab.kathara.routing()]
        return last[0].converged

    wait_until(converged, 180, "every BGP session and OSPF adjacency", 1.0)
    lab.figures["bgp_established"] = last[0].bgp_established
    lab.figures["ospf_full"] = last[0].ospf_full


def test_every_ar_pool_answers_the_cn(lab: DockerLab) -> None:
    ars = TOPO.by_role(model.Role.AR)

    def answering() -> bool:
        return all(lab.run("cn", "ping", "-c", "1", "-W", "1", str(ar.pool_gateway)) == 0
                   for ar in ars)

    wait_until(answering, 120, "every AR pool to answer the CN", 1.0)


def test_a_handoff_across_clusters_keeps_the_ping_stream(lab: DockerLab) -> None:
    assert TOPO.cluster_of(HOME) != TOPO.cluster_of(VISITED)
    address = str(TOPO.mobile(MN).address)

    def attached(ar: str) -> bool:
        answer = lab.kathara.attach(MN, ar)
        return bool(answer.get("ok")) and not answer.get("not_rerouted")

    assert lab.kathara.cell_of(MN) == HOME  # `up` attached it there
    # The CN reaches the MN at home before the stream starts.
    wait_until(lambda: lab.run("cn", "ping", "-c", "1", "-W", "1", address) == 0, 30,
               f"the CN to reach {MN} at {HOME}", 0.2)
    cn = lab.docker("ps", "--filter", "label=name=cn", "--format", "{{.Names}}").split()[0]
    ping = subprocess.Popen(["docker", "exec", cn, "ping", "-D", "-n", "-i", "0.05", "-w",
                             "12", address], env=lab.env, stdout=subprocess.PIPE, text=True)
    replies = re.compile(r"^\[(\d+\.\d+)\] .*icmp_seq=(\d+)")
    try:
        # The move starts once the stream has replies from home.
        assert ping.stdout is not None
        first = ping.stdout.readline() + ping.stdout.readline()
        assert replies.search(first.splitlines()[-1]), first
        t0 = time.time()
        answer = lab.kathara.handoff(MN, VISITED)
        assert answer.get("ok") and answer["from"] == HOME, answer
        if answer.get("not_rerouted"):
            wait_until(lambda: attached(VISITED), 30, f"{MN} to authenticate at {VISITED}", 0.2)
        lab.figures["handoff_relink_and_attach_s"] = round(time.time() - t0, 2)
        out, _ = ping.communicate(timeout=60)
    finally:
        if ping.poll() is None:
            ping.kill()
    out = first + out  # the replies read before the move count too
    times = [float(m.group(1)) for line in out.splitlines() if (m := replies.match(line))]
    assert any(t < t0 for t in times) and any(t > t0 + lab.figures[
        "handoff_relink_and_attach_s"] for t in times), "the stream did not survive the move"
    lab.figures["ping_replies"] = len(times)
    sent = re.search(r"(\d+) packets transmitted", out)
    lab.figures["ping_sent"] = int(sent.group(1)) if sent else None
    visited_aggs = TOPO.ar_parents(VISITED)
    _, route, _ = lab.kathara.run(visited_aggs[0], ["ip", "-j", "route", "show", "exact",
                                                    f"{address}/32"])
    via = json.loads(route or "[]")
    visited_link = next(i.address for i in TOPO.node(VISITED).interfaces
                        if i.peer == visited_aggs[0])
    assert via and via[0].get("gateway") == str(visited_link), via
    # Resident memory of each device's processes (docker stats reads 0 under cgroup v1
    # here), in MiB, beside what the same daemons take in our own engine.
    lab.figures["rss_mib"] = {
        dev: round(sum(int(v) for v in lab.kathara.run(dev, ["ps", "-eo", "rss="])[1].split()[:-1])
                   / 1024, 1)
        for dev in ("core1", "agg1", "ar1", "dns", "mn1")}


def test_the_kathara_verbs_report_and_hand_the_mn_back(lab: DockerLab, tmp_path: Path) -> None:
    lab_args = lab.lab_args()
    # Once converged, no session may drop: ar7's and ar8's expired every 10 s while the
    # stand-in's bridge ends clipped the backbone's 1600-byte frames, and a snapshot
    # caught them between expiry and re-establishment.
    assert main(["status", "--engine", "kathara", *lab_args, "--wait", "60",
                 "--json", str(tmp_path / "s.json")]) == 0
    status = json.loads((tmp_path / "s.json").read_text())
    assert status["converged"] and status["first"]["down"] == [], status
    where = lab.kathara.cell_of(MN)
    back = HOME if where != HOME else VISITED
    assert main(["kathara", "handoff", *lab_args, "--json", str(tmp_path / "h.json"),
                 MN, back]) == 0
    answer = json.loads((tmp_path / "h.json").read_text())
    assert answer["from"] == where and answer["to"] == back and answer["ok"]
    assert lab.kathara.cell_of(MN) == back


def test_down_removes_every_container_and_network(lab: DockerLab) -> None:
    assert main(["down", "--engine", "kathara", *lab.lab_args()]) == 0
    lab.deployed = False
    assert lab.docker("ps", "-aq").split() == []
    assert set(lab.docker("network", "ls", "--format", "{{.Name}}").split()) <= {"host", "none"}
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not dockerside.links(links), "a collision domain's bridge or veth outlived down"
