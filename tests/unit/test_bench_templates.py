"""Templates the benches render (configs/bench/): each has its golden file."""

from __future__ import annotations

from pathlib import Path

from tests.golden import check_golden
from topologies.lab.floodbench import ar_nft, blackhole_nft
from topologies.render import configs as render

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "bench"


def test_every_bench_template_has_a_golden_file() -> None:
    assert {p.name for p in (render.CONFIGS / "bench").glob("*.j2")} == {
        "dns-blackhole.nft.j2", "dns-refuse-reverse6.nft.j2"}
    check_golden(GOLDEN / "dns-blackhole.nft", blackhole_nft())
    check_golden(GOLDEN / "dns-refuse-reverse6.nft", render.render(
        "bench/dns-refuse-reverse6.nft.j2",
        {"table": "fa_test_ha6", "resolver": "10.253.0.2", "port": 53}))


def test_the_flood_bench_renders_the_ar_template_with_every_variable_it_needs() -> None:
    # The lab's AR template grows variables (IPv6 came once and broke the bench's own
    # rendering only in the root test); StrictUndefined makes a missing one raise here.
    check_golden(GOLDEN / "flood-ar.nft", ar_nft())
