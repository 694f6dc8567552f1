"""The DNS mode from the topology to the MN's agent.json (issue 17): ``dns: lookup|stapled``
lab-wide or per MN, strictly checked; and the AR's trust-anchor path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.contract import DnsMode, Layout, MnAgentConfig
from topologies import model
from topologies.model.errors import TopologyError
from topologies.render import configs as render

ROOT = Path(__file__).resolve().parents[2]


def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text())
    return loaded


def modes(topo: model.Topology) -> dict[str, DnsMode]:
    return {mn: render.mobile_config(topo, mn, Path("/run/x") / mn).dns_mode
            for mn in topo.mobiles}


def test_default_is_lookup_and_lab_wide_or_per_mn_stapled() -> None:
    assert set(modes(model.build(doc())).values()) == {DnsMode.LOOKUP}
    assert set(modes(model.build({**doc(), "dns": "stapled"})).values()) == {DnsMode.STAPLED}
    mixed = modes(model.build({**doc(), "dns": {"default": "stapled", "mn2": "lookup"}}))
    assert mixed == {"mn1": DnsMode.STAPLED, "mn2": DnsMode.LOOKUP, "mn3": DnsMode.STAPLED}


@pytest.mark.parametrize("bad", ["dnssec", {"mn9": "stapled"}, {"mn1": "both"}, ["stapled"]])
def test_bad_dns_modes_are_refused_at_load(bad: Any) -> None:
    with pytest.raises(TopologyError, match="dns"):
        model.build({**doc(), "dns": bad})


def test_mode_and_trust_anchor_reach_the_agents_json() -> None:
    topo = model.build({**doc(), "dns": {"mn1": "stapled"}})
    cfg = render.mobile_config(topo, "mn1", Path("/run/x/mn1"))
    again = MnAgentConfig.from_json(json.loads(cfg.to_json()))
    assert again.dns_mode is DnsMode.STAPLED
    ar = render.agent_data(topo, topo.node("ar1"), Path("/run/x/ar1"))
    assert ar.trust_anchor == Path("/run/x/ar1") / Layout.TRUST_ANCHOR
