"""TCP-MD5 keys of the BGP sessions (topologies/render/bgpkeys.py): both ends of every session
render the same key, no two sessions share one, and the lab's secret is private to its run."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from topologies import model
from topologies.render import configs as render
from topologies.render.bgpkeys import (
    SECRET_FILE,
    BgpKeyError,
    new_lab_secret,
    read_lab_secret,
    session_key,
)

ROOT = Path(__file__).resolve().parents[2]
SECRET = bytes(range(32))


def test_a_session_key_is_the_same_from_either_end_and_unique_per_pair() -> None:
    assert session_key(SECRET, "agg1", "ar2") == session_key(SECRET, "ar2", "agg1")
    assert session_key(SECRET, "agg1", "ar2") != session_key(SECRET, "agg1", "ar1")
    assert session_key(SECRET, "agg1", "ar2") != session_key(bytes(32), "agg1", "ar2")
    key = session_key(SECRET, "agg1", "ar2")
    assert len(key) == 32 and re.fullmatch(r"[A-Za-z0-9_-]+", key)


def _sessions(topo: model.Topology) -> dict[tuple[str, str], list[str]]:
    """(node, peer) -> the passwords node's configs give the session with peer."""
    out: dict[tuple[str, str], list[str]] = {}
    for node in topo.nodes.values():
        kinds = render.daemons_for(node, topo)
        data = []
        if "bgpd" in kinds:
            data.append(render.bgpd_data(topo, node, secret=SECRET))
        if "exabgp" in kinds:
            data.append(render.exabgp_data(topo, node, Path("/tmp"), SECRET))
        for d in data:
            for nb in d["neighbors"]:
                out.setdefault((node.name, nb["name"]), []).append(nb["password"])
    return out


@pytest.mark.parametrize("yaml", ["figure2.yaml", "three_by_five.yaml"])
def test_every_session_has_one_key_both_ends_agree_on(yaml: str) -> None:
    sessions = _sessions(model.load(ROOT / "topologies" / yaml))
    assert sessions
    for (a, b), keys in sessions.items():
        assert keys and all(keys), f"{a}->{b} has no password"
        assert sessions.get((b, a)) == keys, f"{a}<->{b}: the ends disagree"
    pairs = {frozenset(p): k[0] for p, k in sessions.items()}
    assert len(set(pairs.values())) == len(pairs)


def test_without_a_secret_no_password_is_rendered() -> None:
    topo = model.load(ROOT / "topologies" / "figure2.yaml")
    text = render.render_node(topo, topo.node("core1"), Path("/tmp/x"))["bgpd"]
    assert " password " not in text


def test_the_lab_secret_is_fresh_per_run_and_private(tmp_path: Path) -> None:
    first = new_lab_secret(tmp_path)
    assert stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode) == 0o600
    assert read_lab_secret(tmp_path) == first
    assert new_lab_secret(tmp_path) != first
    (tmp_path / SECRET_FILE).write_bytes(b"short")
    with pytest.raises(BgpKeyError):
        read_lab_secret(tmp_path)
    with pytest.raises(BgpKeyError):
        read_lab_secret(tmp_path / "nowhere")
