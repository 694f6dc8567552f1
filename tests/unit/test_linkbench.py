"""The link bench's arithmetic without root: the receiver's lines, the delay statistics,
the loss ratio, and the table."""

from __future__ import annotations

import pytest

from topologies.lab import linkbench


def test_parse_recv_skips_what_is_not_a_record() -> None:
    text = "0 1000000 11000000\ngarbage\n1 2000000 12500000\n2 3 x\n"
    assert linkbench.parse_recv(text) == [10.0, 10.5]


def test_summary_percentiles_jitter_and_loss() -> None:
    delays = [10.0 + (i % 10) * 0.01 for i in range(990)]
    s = linkbench.Delays(delays, sent=1000).summary()
    assert s["p50"] == pytest.approx(10.05) and s["max"] == pytest.approx(10.09)
    assert s["p99"] == pytest.approx(10.09)
    assert s["loss_pct"] == pytest.approx(1.0)
    assert 0.0 < s["jitter_ms"] < 0.03


def test_nothing_received_is_all_lost() -> None:
    s = linkbench.Delays([], sent=10).summary()
    assert s["loss_pct"] == 100.0 and s["p50"] is None


def test_table_names_the_mechanism_and_every_point() -> None:
    res = {"mechanism": "nfqueue", "tcp_mbit": 300.0, "cpu_pct": 12.0,
           "points": [{"pps": 1000, "delay_ms": 10.0, "loss_pct": 0.0, "jitter_ms": 0.01,
                       "delayline_cpu_pct": 12.0,
                       "measured_ms": {"p50": 10.1, "p99": 10.6, "max": 11.0, "mean": 10.2}}],
           "loss": {"configured_pct": 1.0, "packets": 100000, "measured_pct": 1.02},
           "rate": {"configured_mbit": 50.0, "measured_mbit": 49.1}}
    text = linkbench.table(res)
    assert "mechanism nfqueue" in text and "1000" in text and "49.1" in text
