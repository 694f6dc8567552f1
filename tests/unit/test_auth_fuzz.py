"""A short run of the fuzz campaign (the full one is ``make fuzz``) and of the benchmark, to
keep both entry points working: zero crashes, zero accepted forgeries, the contract's keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.auth import authenticator, bench, fuzz


def test_short_fuzz_campaign_finds_nothing(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    assert fuzz.main(["--count", "1500", "--seed", "7", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["inputs"] == 1500
    assert report["crashes"] == 0 and report["forgeries"] == 0
    assert report["genuine_accepted"] > 0  # genuine messages do get through


def test_fuzz_detects_a_broken_mac_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The campaign's forgery oracle works: with the tag check disabled it reports forgeries."""
    monkeypatch.setattr(authenticator, "check_auth_mac", lambda *args: None)
    report = fuzz.run_campaign(1500, seed=7)
    assert report.forgeries > 0 and not report.ok


def test_bench_reports_contract_keys() -> None:
    result = bench.run_bench(duration_s=0.05)
    for key in ("openssl_p256_ecdh_per_s", "cold_per_s", "warm_per_s", "udp_warm_per_s"):
        assert isinstance(result[key], float) and result[key] > 0, key
