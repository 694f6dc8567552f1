"""The lab-agent contract: what the lab renders loads back strictly, a bad field is named
with its path, and the names both sides use (events, commands) are defined once."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from agents.contract import (
    ArAgentConfig,
    Command,
    ContractError,
    Event,
    MnAgentConfig,
)
from agents.mn import MnAgent
from topologies import model
from topologies.render import configs as render

ROOT = Path(__file__).resolve().parents[2]
TOPO = model.load(ROOT / "topologies" / "figure2.yaml")
RUNDIR = Path("/run/flatarch/figure2")


def ar_doc(node: str = "ar3") -> dict[str, Any]:
    cfg = render.agent_data(TOPO, TOPO.node(node), RUNDIR / node)
    doc: dict[str, Any] = json.loads(cfg.to_json())
    return doc


def mn_doc(mn: str = "mn3") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(render.mobile_config(TOPO, mn, RUNDIR / mn).to_json())
    return doc


def test_rendered_configs_load_back_equal() -> None:
    for ar in TOPO.by_role(model.Role.AR):
        cfg = render.agent_data(TOPO, ar, RUNDIR / ar.name)
        assert ArAgentConfig.from_json(json.loads(cfg.to_json())) == cfg
    ha = TOPO.service("ha")
    cfg = render.ha_agent_data(TOPO, ha, RUNDIR / "ha")
    assert ArAgentConfig.from_json(json.loads(cfg.to_json())) == cfg
    for mn in TOPO.mobiles:
        mcfg = render.mobile_config(TOPO, mn, RUNDIR / mn)
        assert MnAgentConfig.from_json(json.loads(mcfg.to_json())) == mcfg


@pytest.mark.parametrize(("path", "value", "message"), [
    (("ars", "ar3", "loopback"), "10.255.0.300", r"ars\.ar3\.loopback: expected an IPv4 address"),
    (("resolver_port",), "53", r"resolver_port: expected an integer, got '53'"),
    (("paging", "timeout_s"), True, r"paging\.timeout_s: expected a number, got True"),
    (("dhcp", "tsig"), "", r"dhcp\.tsig: expected a path"),
    (("tal",), "ar3", r"tal: expected a list"),
    (("mode",), "fast", r"mode: 'fast' is not one of redirect, draft"),
    (("managed",), "10.64.0.1/12", r"managed: expected an IPv4 network"),
])
def test_a_bad_field_is_named(path: tuple[str, ...], value: Any, message: str) -> None:
    doc = ar_doc()
    here = doc
    for key in path[:-1]:
        here = here[key]
    here[path[-1]] = value
    with pytest.raises(ContractError, match=message):
        ArAgentConfig.from_json(doc)


def test_missing_and_unknown_fields_are_named() -> None:
    doc = ar_doc()
    del doc["ars"]["ar1"]["overlay"]
    with pytest.raises(ContractError, match=r"ars\.ar1\.overlay: missing"):
        ArAgentConfig.from_json(doc)
    doc = ar_doc()
    doc["paging"]["bufer"] = 3
    with pytest.raises(ContractError, match=r"paging: unknown field 'bufer'"):
        ArAgentConfig.from_json(doc)


def test_a_file_error_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "agent.json"
    doc = mn_doc()
    doc["ars"] = ["ar1"]
    p.write_text(json.dumps(doc))
    with pytest.raises(ContractError, match=rf"{p}: ars: expected an object"):
        MnAgentConfig.load(p)


def test_an_mn_has_an_address_or_dhcp_not_both() -> None:
    doc = mn_doc("mn3")
    doc["address"] = "10.64.0.10"
    with pytest.raises(ContractError, match="either a provisioned address or DHCP"):
        MnAgentConfig.from_json(doc)
    doc = mn_doc("mn1")
    assert MnAgentConfig.from_json(doc).address is not None


def test_every_event_an_agent_logs_is_a_contract_name() -> None:
    # events("name", ...) and self.events("dhcp_" + event) in agents/: every literal name
    # must be an Event, so that scenarios reading them by Event cannot drift from agents.
    names: set[str] = set()
    for py in (ROOT / "agents").glob("*.py"):
        if py.name in ("anchor.py", "contract.py"):  # the anchored baseline logs its own
            continue
        names |= set(re.findall(r"events\(\s*\"([a-z_]+)\"\s*[,)]", py.read_text()))
    assert names, "found no events at all"
    names |= {"dhcp_bound", "dhcp_renew"}  # agents/addresses.py: "dhcp_" + udhcpc's event
    assert names <= {e.value for e in Event}, names - {e.value for e in Event}


def test_every_mn_command_is_in_the_one_dispatch_table() -> None:
    agent = object.__new__(MnAgent)
    table = agent._commands
    assert set(table) == {c for c in Command if c is not Command.MODE}
