"""Link attributes in the topology YAML: per link, per role pair, per named profile and per
service attachment; what wins over what; every bad value named with its path, at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from topologies import model
from topologies.model import TopologyError
from topologies.model.links import LinkAttributes, with_distance

TOPO = Path(__file__).resolve().parents[2] / "topologies"


def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((TOPO / "figure2.yaml").read_text())
    return loaded


def attrs_of(t: model.Topology, a: str, b: str) -> LinkAttributes | None:
    ia = next(i.name for i in t.nodes[a].interfaces if i.peer == b)
    return t.link_attrs.get((a, ia))


def test_no_attributes_means_an_empty_map() -> None:
    t = model.build(doc())
    assert t.link_attrs == {} and t.link_profile() == {}


def test_every_layer_and_what_wins() -> None:
    d = doc()
    d["profiles"] = {"metro": {"delay_ms": 2, "jitter_ms": 0.5}, "far": {"delay_ms": 20}}
    d["link_profiles"] = {"agg-core": {"distance": "metro"}, "ar-agg": {"delay_ms": 1},
                          "inet-cn": {"delay_ms": 10, "rate_mbit": 100}}
    d["links"][2] = {"between": ["ar2", "ar3"], "delay_ms": 0.5, "loss_pct": 1}
    d["links"].append({"between": ["agg1", "ar1"], "distance": "far"})  # an existing link
    d["services"]["dns"]["link"] = {"delay_ms": 20}
    t = model.build(d)
    assert attrs_of(t, "core1", "agg1") == LinkAttributes(delay_ms=2.0, jitter_ms=0.5)
    # both directions carry the same attributes
    assert attrs_of(t, "agg1", "core1") == attrs_of(t, "core1", "agg1")
    assert attrs_of(t, "agg2", "ar1") == LinkAttributes(delay_ms=1.0)
    assert attrs_of(t, "agg1", "ar1") == LinkAttributes(delay_ms=20.0)  # the link's own
    assert attrs_of(t, "ar2", "ar3") == LinkAttributes(delay_ms=0.5, loss_pct=1.0)
    assert attrs_of(t, "dns", "core1") == LinkAttributes(delay_ms=20.0)
    assert attrs_of(t, "cn", "inet") == LinkAttributes(delay_ms=10.0, rate_mbit=100.0)
    assert attrs_of(t, "core1", "core2") is None
    assert sum(1 for lk in t.links if {lk.a, lk.b} == {"agg1", "ar1"}) == 1
    prof = t.link_profile()
    assert prof["core1-dns"] == {"delay_ms": 20.0}
    assert prof["agg1-ar1"] == {"delay_ms": 20.0}
    assert "core1-core2" not in prof


def test_a_service_name_is_a_role_and_more_specific_than_host() -> None:
    d = doc()
    d["link_profiles"] = {"core-host": {"delay_ms": 1}, "core-ha": {"delay_ms": 20}}
    t = model.build(d)
    assert attrs_of(t, "ha", "core2") == LinkAttributes(delay_ms=20.0)
    assert attrs_of(t, "dns", "core1") == LinkAttributes(delay_ms=1.0)


def test_bad_values_are_named_all_at_once() -> None:
    d = doc()
    d["profiles"] = {"metro": {"delay_ms": "two"}}
    d["link_profiles"] = {"agg-core": {"distance": "suburb"}, "agg-moon": {"delay_ms": 1},
                          "ar-agg": {"jitter_ms": 3, "delay_ms": 1}}
    d["links"][0] = {"between": ["agg1", "agg2"], "loss_pct": 100, "colour": "red"}
    d["services"]["ha"]["link"] = {"rate_mbit": 0, "delay_ms": True}
    assert_named(d, ("profiles.metro.delay_ms: expected a number",
                     "link_profiles.agg-core.distance: unknown profile 'suburb'",
                     "link_profiles.agg-moon: expected ROLE-ROLE",
                     "link_profiles.ar-agg.jitter_ms: 3 exceeds delay_ms 1",
                     "links[0].loss_pct: 100 would cut the link",
                     "links[0].colour: unknown key",
                     "services.ha.link.rate_mbit: expected a number in [0.001",
                     "services.ha.link.delay_ms: expected a number"))


def assert_named(d: dict[str, Any], expected: tuple[str, ...]) -> None:
    """The document is refused, every one of ``expected`` named in the one error."""
    with pytest.raises(TopologyError) as err:
        model.build(d)
    msg = str(err.value)
    for words in expected:
        assert words in msg, (words, msg)


@pytest.mark.parametrize("entry", [{"delay_ms": 1}, {"between": "ar2"}])
def test_mapping_entry_needs_between(entry: dict[str, Any]) -> None:
    d = doc()
    d["links"][2] = entry
    with pytest.raises(TopologyError, match=r"links\[2\]"):
        model.build(d)


def test_home_distance_from_a_profile_and_recorded() -> None:
    d = doc()
    d["home"] = {"distance": "regional_home", "jitter_ms": 1}
    t = model.build(d)
    assert t.home_link == LinkAttributes(delay_ms=20.0, jitter_ms=1.0)
    assert t.home_rtt_ms == 40.0 and t.link_profile()["home"] == {"delay_ms": 20.0,
                                                                 "jitter_ms": 1.0}
    assert model.build(doc()).home_rtt_ms == 0.0


def test_bad_home_values_are_named() -> None:
    d = doc()
    d["home"] = {"delay_ms": -1, "rate_mbit": 10, "loss_pct": 1, "distance": "moon"}
    assert_named(d, ("home.delay_ms: expected a number in [0, 10000], got -1",
                     "home.rate_mbit: the home network's distance takes delay_ms and jitter_ms",
                     "home.loss_pct: the home network's distance takes",
                     "home.distance: unknown profile 'moon'"))


def test_a_distance_set_is_laid_over_the_links() -> None:
    d = doc()
    d["link_profiles"] = {"inet-cn": {"rate_mbit": 100}, "core-host": {"delay_ms": 0.5}}
    t = model.build(with_distance(d, "regional"))
    assert t.distance == "regional" and t.home_rtt_ms == 40.0
    assert attrs_of(t, "ar1", "agg1") == LinkAttributes(delay_ms=1.0)
    assert attrs_of(t, "agg1", "agg2") == LinkAttributes(delay_ms=2.0)
    assert attrs_of(t, "core1", "core2") == LinkAttributes(delay_ms=5.0)
    assert attrs_of(t, "cn", "inet") == LinkAttributes(delay_ms=20.0)  # the set's pair wins
    assert attrs_of(t, "dns", "core1") == LinkAttributes(delay_ms=0.5)  # the document's kept
    assert "distances" not in with_distance(d, "metro")
    assert model.build(d).distance is None  # no set is on by default


@pytest.mark.parametrize(("name", "sets", "words"), [
    ("suburb", None, "distance 'suburb': no such set under distances: (metro, regional)"),
    ("x", {"x": {"home": {}, "links": []}}, "distances.x.links: unknown key"),
    ("x", {"x": [1]}, "distances.x: expected a mapping"),
    ("x", {"x": {"link_profiles": [1]}}, "distances.x.link_profiles: expected a mapping"),
    ("x", [1], "distances: expected a mapping"),
])
def test_bad_distance_sets_are_named(name: str, sets: Any, words: str) -> None:
    d = doc()
    if sets is not None:
        d["distances"] = sets
    with pytest.raises(TopologyError) as err:
        with_distance(d, name)
    assert words in str(err.value)


def test_a_bad_value_inside_a_set_is_named_once_laid() -> None:
    d = doc()
    d["distances"]["regional"]["link_profiles"]["ar-agg"] = {"delay_ms": "far"}
    with pytest.raises(TopologyError, match=r"link_profiles\.ar-agg\.delay_ms: expected a"):
        model.build(with_distance(d, "regional"))
    d["distance"] = 7
    with pytest.raises(TopologyError, match="distance: expected the name"):
        model.build(d)
