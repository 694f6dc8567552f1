"""The links' commands, rendered from templates (golden files) on both paths: netem + HTB
where the kernel has netem, HTB + iptables + the delay line where it has not; and nothing
at all for a topology without attributes."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from agents import delayline
from tests.golden import check_golden
from topologies.lab import shaping
from topologies.lab.daemons import ConfigCheckError
from topologies.model.links import LinkAttributes

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "links"
ATTRS = {
    ("agg1", "agg1-eth0"): LinkAttributes(delay_ms=2.0, jitter_ms=0.5),
    ("core1", "core1-eth3"): LinkAttributes(delay_ms=2.0, jitter_ms=0.5),
    ("ar2", "ar2-eth2"): LinkAttributes(delay_ms=1.0, loss_pct=1.0),
    ("inet", "inet-eth2"): LinkAttributes(rate_mbit=50.0),
    ("cn", "cn-eth0"): LinkAttributes(rate_mbit=100.0, delay_ms=10.0, loss_pct=0.5),
}


@pytest.mark.parametrize("netem", [True, False], ids=["netem", "fallback"])
def test_rendered_commands(netem: bool) -> None:
    data = shaping.shaping_data(ATTRS, netem)
    text = "".join(f"## {node} tc\n{shaping.render_tc(d)}" for node, d in data.items())
    if not netem:
        text += "".join(f"## {node} iptables\n{shaping.render_iptables(d)}"
                        for node, d in data.items())
    check_golden(GOLDEN / f"{'netem' if netem else 'fallback'}.txt", text)


def test_only_delayed_directions_are_queued_and_the_config_loads() -> None:
    data = shaping.shaping_data(ATTRS, netem=False)
    entries = shaping.delayline_links(data, {n: f"/proc/{i}/ns/net" for i, n in
                                             enumerate(data, 1)})
    assert sorted(e["name"] for e in entries) == ["agg1/agg1-eth0", "ar2/ar2-eth2",
                                                  "cn/cn-eth0", "core1/core1-eth3"]
    assert len({e["queue"] for e in entries}) == len(entries)
    links = delayline.parse_config(json.loads(json.dumps({"links": entries})))
    assert {ln.delay_ms for ln in links} == {1.0, 2.0, 10.0}
    assert shaping.shaping_data(ATTRS, netem=True)["cn"]["interfaces"][0]["queue"] is None


def test_no_attributes_apply_nothing(tmp_path: Path) -> None:
    applied = shaping.apply({}, {}, tmp_path, lambda _: None)
    assert applied.mechanism is None and applied.daemon is None
    assert list(tmp_path.iterdir()) == []


def test_daemon_dry_run_and_argv(tmp_path: Path) -> None:
    cfg = {"links": [{"name": "a/x", "netns": "/proc/self/ns/net", "queue": 1,
                      "delay_ms": 1.0, "jitter_ms": 0.0}]}
    d = shaping.DelayLineDaemon("a", tmp_path / "delayline", json.dumps(cfg))
    d.write()
    d.dry_run()
    assert d.kind == "delayline" and str(d.rundir) in " ".join(d.argv())
    d.config = json.dumps({"links": [{**cfg["links"][0], "delay_ms": -1}]})  # type: ignore[dict-item]
    d.write()
    with pytest.raises(ConfigCheckError, match="delay_ms"):
        d.dry_run()


class FakeExec(shaping.NodeExec):
    """Records commands instead of running them; netem 'exists' when told so."""

    def __init__(self, name: str, netem: bool) -> None:
        super().__init__(name, os.getpid())  # a namespace that exists
        self.netem = netem
        self.cmds: list[list[str]] = []

    def run(self, cmd: Sequence[str], timeout: float = 15.0,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        self.cmds.append(list(cmd))
        ok = self.netem or "netem" not in cmd
        return subprocess.CompletedProcess(list(cmd), 0 if ok else 2, "", "")


@pytest.mark.parametrize("netem", [True, False], ids=["netem", "fallback"])
def test_apply_detects_records_and_builds_the_delay_line(tmp_path: Path, netem: bool) -> None:
    execs = {n: FakeExec(n, netem) for n in ("agg1", "ar2", "cn", "core1", "inet")}
    said: list[str] = []
    applied = shaping.apply(ATTRS, execs, tmp_path, said.append)
    assert applied.mechanism == ("netem" if netem else "nfqueue")
    assert f"shaped by {applied.mechanism}" in said[0]
    restores = [c for ex in execs.values() for c in ex.cmds if c[0] == shaping.IPTABLES_RESTORE]
    if netem:
        assert applied.daemon is None and restores == []
        assert (tmp_path / "agg1" / "links.tc").read_text().count("netem") == 1
    else:
        assert applied.daemon is not None and len(restores) == 4  # inet: rate only
        cfg = json.loads(applied.daemon.conf_path.read_text())
        assert {e["netns"] for e in cfg["links"]} == {f"/proc/{os.getpid()}/ns/net"}
        assert not (tmp_path / "agg1" / "links.tc").exists()  # delay only: no qdisc
    assert applied.record()["mechanism"] == applied.mechanism


HOME = shaping.HomeDistance(LinkAttributes(delay_ms=20.0, jitter_ms=1.0), {
    "dns": [shaping.HomeFlow("udp", 5300, "10.253.0.2"), shaping.HomeFlow("tcp", 5300,
                                                                          "10.253.0.2")],
    "pgw": [shaping.HomeFlow("udp", 3868)]})


def test_home_rules_golden_and_their_queues_follow_the_links() -> None:
    data = shaping.home_data(HOME, first_queue=4)
    text = "".join(f"## {node} iptables\n{shaping.render_home_iptables(d)}"
                   for node, d in data.items())
    check_golden(GOLDEN / "home.txt", text)
    entries = shaping.delayline_links(data, {"dns": "/proc/1/ns/net", "pgw": "/proc/2/ns/net"})
    assert [(e["name"], e["queue"], e["delay_ms"]) for e in entries] == [
        ("dns/lo", 4, 20.0), ("pgw/lo", 5, 20.0)]
    assert len(delayline.parse_config({"links": entries})) == 2


def test_the_home_distance_comes_from_the_topology() -> None:
    import yaml

    from topologies import model
    from topologies.model.links import with_distance

    root = Path(__file__).resolve().parents[2] / "topologies" / "figure2.yaml"
    doc = yaml.safe_load(root.read_text())
    assert shaping.home_distance(model.build(doc)) is None  # nothing laid, nothing changed
    home = shaping.home_distance(model.build(with_distance(doc, "regional")))
    assert home is not None and home.attrs.delay_ms == 20.0
    assert {n: [(f.proto, f.port) for f in fs] for n, fs in home.flows.items()} == {
        "dns": [("udp", 5300), ("tcp", 5300)], "pgw": [("udp", 3868)]}


@pytest.mark.parametrize("netem", [True, False], ids=["netem", "fallback"])
def test_apply_holds_the_home_flows_in_the_delay_line_on_either_kernel(
        tmp_path: Path, netem: bool) -> None:
    execs = {n: FakeExec(n, netem) for n in ("dns", "pgw")}
    said: list[str] = []
    applied = shaping.apply({}, execs, tmp_path, said.append, home=HOME)
    assert applied.mechanism == "nfqueue" and applied.daemon is not None
    assert "the home network 40 ms RTT away (dns, pgw)" in said[0]
    assert applied.record()["home"] == {"delay_ms": 20.0, "jitter_ms": 1.0,
                                        "nodes": ["dns", "pgw"]}
    assert (tmp_path / "dns" / "home.iptables").read_text().count("NFQUEUE") == 4
    assert not (tmp_path / "dns" / "links.tc").exists()
