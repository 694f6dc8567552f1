"""The fuzz campaign (``python -m agents.fuzz``, ``make fuzz``): a short run of every target
finds nothing and writes the report's keys, and each target's oracle does catch the defect
it exists for when that defect is put back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents import exabgp_api, fuzz
from agents.auth import keys as auth_keys
from agents.dhcpd import DhcpServer
from agents.fuzzers import messages

KEYS = {"inputs", "uncaught", "forgeries", "accepted", "rejected", "p50_us", "p99_us",
        "max_us", "seconds", "examples"}


def test_short_campaign_of_every_target_finds_nothing(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    assert fuzz.main(["--count", "1000", "--seed", "11", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["ok"] and report["count"] == 1000 and report["seed"] == 11
    assert set(report["targets"]) == set(fuzz.TARGETS)
    for name, target in report["targets"].items():
        assert set(target) >= KEYS, name
        assert target["inputs"] == 1000, name
        assert target["uncaught"] == 0 and target["forgeries"] == 0, name
        assert 0 < target["p50_us"] <= target["p99_us"] <= target["max_us"], name
    # Valid inputs do get through, so the oracles see acceptances, not only rejections.
    assert all(t["accepted"] > 0 for t in report["targets"].values())


def test_messages_oracle_catches_a_broken_tag_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(messages.protocol, "check_auth_mac", lambda *args: None)
    tally = fuzz.run_target("auth_messages", 2000, 3)
    assert tally.forgeries > 0 and not tally.ok


def test_keys_oracle_catches_an_escaping_parser_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19 defect 1 put back: UnsupportedAlgorithm escapes the SPKI parser."""
    real = auth_keys.serialization.load_der_public_key

    def old_parse(spki: bytes) -> object:
        try:
            return real(spki)
        except ValueError as exc:
            raise auth_keys.KeyMismatch(str(exc)) from None

    monkeypatch.setattr(auth_keys, "parse_spki", old_parse)
    tally = fuzz.run_target("dns_keys", 1500, 3)
    assert tally.uncaught > 0
    assert any("UnsupportedAlgorithm" in line for line in tally.examples)


def test_exabgp_oracle_catches_an_untyped_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19 defect 2 put back: no shape checks, so a field of the wrong type raises
    AttributeError or TypeError out of the reader."""
    monkeypatch.setattr(exabgp_api, "_obj", lambda value, what: value)
    monkeypatch.setattr(exabgp_api, "_list", lambda value, what: value)
    tally = fuzz.run_target("exabgp", 3000, 3)
    assert tally.uncaught > 0


def test_dhcp_oracle_catches_a_release_by_a_stranger(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hole the campaign found: a RELEASE naming the MN ended its lease from any station."""
    real = DhcpServer._release

    def release_without_holder_check(self: DhcpServer, cid: bytes, mn: str, why: str,
                                     chaddr: bytes | None = None) -> None:
        real(self, cid, mn, why, None)

    monkeypatch.setattr(DhcpServer, "_release", release_without_holder_check)
    tally = fuzz.run_target("dhcp", 20000, 3)
    assert tally.forgeries > 0


def test_ra_oracle_catches_an_ra_believed_from_off_the_link(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The MN's hop-limit check removed: an RA a router forwarded is believed."""
    from agents import ra

    monkeypatch.setattr(ra, "HOP_LIMIT", None)
    tally = fuzz.run_target("ra", 3000, 3)
    assert tally.forgeries > 0 and any("off the link" in e for e in tally.examples)
