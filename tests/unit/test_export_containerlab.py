"""The containerlab export: figure2 and three_by_five validate against containerlab's own
schema (pinned under tests/data/containerlab with its licence), whole and split across
hosts; a broken file does not; a split names every node once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.golden import check_golden
from topologies import model
from topologies.export import containerlab as clab
from topologies.export.plan import ExportError, build_plan

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "tests" / "data" / "containerlab" / "clab.schema.json").read_text())
GOLDEN = ROOT / "tests" / "golden" / "export"
TOPOLOGIES = ["figure2", "three_by_five"]


def validate(doc: Any) -> None:
    # The schema's \p{...} patterns need the `regex` module: jsonschema's format checker
    # is not enough, so patterns go through a regex-backed validator.
    import regex

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Any:
        if isinstance(instance, str) and not regex.search(patrn, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": pattern})
    cls(SCHEMA).validate(doc)


def export(name: str, split: str | None = None) -> list[dict[str, Any]]:
    topo = model.load(ROOT / "topologies" / f"{name}.yaml")
    plan = build_plan(topo)
    if split is None:
        return [yaml.safe_load(clab.render_clab(clab.clab_data(topo, plan)))]
    hosts = clab.parse_split(split, list(plan.nodes))
    return [yaml.safe_load(clab.render_clab(clab.clab_data(topo, plan, h, hosts)))
            for h in hosts]


def halves(name: str) -> str:
    nodes = list(build_plan(model.load(ROOT / "topologies" / f"{name}.yaml")).nodes)
    mid = len(nodes) // 2
    return (f"east@192.0.2.1={','.join(nodes[:mid])};"
            f"west@2001:db8::2={','.join(nodes[mid:])}")


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_export_validates_against_the_pinned_schema(name: str) -> None:
    (doc,) = export(name)
    validate(doc)
    assert all(n["kind"] == "linux" for n in doc["topology"]["nodes"].values())


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_a_split_validates_and_stitches_each_cut_link_at_both_ends(name: str) -> None:
    docs = export(name, halves(name))
    for doc in docs:
        validate(doc)
    ends: dict[int, list[str]] = {}
    for doc in docs:
        for link in doc["topology"]["links"]:
            if link.get("type") == "vxlan-stitch":
                ends.setdefault(link["vni"], []).append(link["remote"])
    assert ends and all(sorted(r) == ["192.0.2.1", "2001:db8::2"] for r in ends.values())
    whole = export(name)[0]["topology"]
    assert sorted(n for d in docs for n in d["topology"]["nodes"]) == sorted(whole["nodes"])
    veth = sum(1 for d in docs for lk in d["topology"]["links"] if "endpoints" in lk)
    assert veth + len(ends) == len(whole["links"])


def test_a_broken_export_fails_the_schema() -> None:
    (doc,) = export("figure2")
    doc["topology"]["nodes"]["ar1"]["kind"] = "no-such-kind"
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)
    (doc,) = export("figure2")
    doc["topology"]["links"][0]["endpoints"][0] = "no colon here"
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


def test_every_node_starts_its_daemons_in_declared_order() -> None:
    (doc,) = export("figure2")
    steps = doc["topology"]["nodes"]["ar1"]["exec"]
    at = {k: next(i for i, s in enumerate(steps) if f"/{k} " in s or f"{k} server" in s)
          for k in ("zebra", "ospfd", "exabgp")}
    assert at["zebra"] < at["ospfd"] < at["exabgp"]
    assert any("zserv.api" in s and "until" in s for s in steps[at["zebra"]:at["ospfd"]])
    assert doc["topology"]["nodes"]["ar1"]["binds"] == ["configs/ar1:/run/flatarch/figure2/ar1"]


@pytest.mark.parametrize("spec, why", [
    ("a=core1", "needs an address"),
    ("a@192.0.2.1=core1;b@192.0.2.2=core1", "on both"),
    ("a@192.0.2.1=core1", "no host for"),
    ("a@192.0.2.1=nosuch", "not a node"),
    ("a@192.0.2.1", "expected NAME@ADDRESS"),
])
def test_a_bad_split_is_refused(spec: str, why: str) -> None:
    nodes = list(build_plan(model.load(ROOT / "topologies" / "figure2.yaml")).nodes)
    with pytest.raises(ExportError, match=why):
        clab.parse_split(spec, nodes)


def test_golden_figure2_clab() -> None:
    topo = model.load(ROOT / "topologies" / "figure2.yaml")
    check_golden(GOLDEN / "figure2.clab.yml",
                 clab.render_clab(clab.clab_data(topo, build_plan(topo))))


NODES = list(build_plan(model.load(ROOT / "topologies" / "figure2.yaml")).nodes)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab@=,;.:0123456789 core1agg2mn3air", max_size=80))
def test_parse_split_refuses_anything_else_with_its_own_error(spec: str) -> None:
    try:
        hosts = clab.parse_split(spec, NODES)
    except ExportError:
        return
    assert sorted(n for h in hosts for n in h.nodes) == sorted(NODES)
