"""Stapled DNSSEC proofs with the real BIND and Unbound (issue 17), one Figure-2 lab.

A stapled handoff sends no query to the MN's home zone's server (counted in BIND's query
log); a lookup handoff does. Tampered bundles (a flipped byte in any RRSIG, a key not in the
chain, an expired signature, another MN's bundle) are refused with a typed reason and the AR
falls back to the lookups; a zone served unsigned still fails closed.
"""

from __future__ import annotations

import base64
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.dnssec
import dns.dnssectypes
import dns.name
import dns.rdata
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from dns.rdtypes.ANY.DNSKEY import DNSKEY

from agents.contract import read_events
from agents.staple import RRSIG, encode_bundle, parse_bundle
from tests.integration.labs import strip_dnssec, why_unreachable
from topologies import model
from topologies.analysis.dnscount import home_round_trips
from topologies.lab.daemons import DeadlineError, wait_until
from topologies.lab.lab import Lab

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]
MN1 = "10.64.0.10"  # mn1's provisioned address, from ar1's pool
ZONE = "mn1.example"
FIGURES = Path("/tmp/flatarch-stapled-figures.json")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    topo = model.load(ROOT / "topologies" / "figure2.yaml")
    with Lab(topo, ready_timeout=120) as running:
        running.set_mode("redirect")
        yield running


def plane(lab: Lab) -> Any:
    assert lab.dns is not None
    return lab.dns


def mn_cmd(lab: Lab, mn: str, **req: Any) -> dict[str, Any]:
    return lab.control(mn).request(req)


def events_since(lab: Lab, node: str, t0: float, ev: str) -> list[dict[str, Any]]:
    return [e for e in read_events(lab.rundir(node) / "events.jsonl")
            if e.get("ev") == ev and float(e.get("t", 0)) >= t0]


def query_log(lab: Lab) -> str:
    return (lab.rundir(plane(lab).node.name) / "named.queries.log").read_text()


def staple_cli(lab: Lab, node: str, *args: str) -> dict[str, Any]:
    """``python -m agents.staple`` in a lab node: its JSON, or {"ok": False, "error": ...}."""
    res = lab.execs[node].run([sys.executable, "-m", "agents.staple", *args], timeout=30)
    if res.returncode != 0:
        return {"ok": False, "error": res.stderr.strip(), "rerouted": []}
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def fetch(lab: Lab, name: str) -> bytes:
    resolver = json.loads((lab.rundir("mn1") / "agent.json").read_text())["resolver"]
    out = staple_cli(lab, "mn1", "fetch", "--resolver", resolver, name)
    assert "bundle" in out, out
    return bytes.fromhex(out["bundle"])


def probe(lab: Lab, ar: str, staple: bytes | None) -> dict[str, Any]:
    """One AUTH from mn1 (its key, its address, on its access link) to ``ar``."""
    rd = lab.rundir("mn1")
    return staple_cli(lab, "mn1", "auth", "--config", str(rd / "agent.json"),
                      "--keys", str(rd / "ar_keys.json"), "--ar", ar,
                      "--staple", staple.hex() if staple else "")


def refused_with(lab: Lab, ar: str, t0: float, error: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        found[:] = [e for e in events_since(lab, ar, t0, "staple_refused")
                    if e.get("mn") == ZONE and e.get("error") == error]
        return bool(found)

    wait_until(logged, 10, f"{ar} to log staple_refused {error}", 0.1)
    assert found[0]["fallback"] == "lookup"
    return found[0]


def settle(lab: Lab, address: str = MN1) -> None:
    try:
        wait_until(lambda: lab.execs["cn"].run(["ping", "-c", "1", "-W", "1", address])
                   .returncode == 0, 20, f"{address} reachable", 0.2)
    except DeadlineError as exc:
        raise AssertionError(f"{exc}\n{why_unreachable(lab, address)}") from None


def _zone_key(lab: Lab) -> tuple[ec.EllipticCurvePrivateKey, DNSKEY]:
    """mn1.example.'s real signing key, from BIND's key directory (to sign validly but late)."""
    private = next(plane(lab).rundir.rglob(f"K{ZONE}.+013+*.private"))
    fields = dict(ln.split(": ", 1) for ln in private.read_text().splitlines() if ": " in ln)
    scalar = int.from_bytes(base64.b64decode(fields["PrivateKey"]), "big")
    line = next(ln for ln in private.with_suffix(".key").read_text().splitlines()
                if not ln.startswith(";"))
    dnskey = dns.rdata.from_text("IN", "DNSKEY", line.split("DNSKEY", 1)[1])
    assert isinstance(dnskey, DNSKEY)
    return ec.derive_private_key(scalar, ec.SECP256R1()), dnskey


def _resign_a(bundle: bytes, key: ec.EllipticCurvePrivateKey, dnskey: DNSKEY,
              inception: int, expiration: int) -> bytes:
    rrsets = parse_bundle(bundle)
    owner = dns.name.from_text(ZONE + ".")
    a = rrsets[(owner, dns.rdatatype.A, dns.rdatatype.NONE)]
    sig = dns.dnssec.sign(a, key, owner, dnskey, inception=inception, expiration=expiration)
    sigs = dns.rrset.RRset(owner, a.rdclass, RRSIG, dns.rdatatype.A)
    sigs.update_ttl(a.ttl)
    sigs.add(sig)
    rrsets[(owner, RRSIG, dns.rdatatype.A)] = sigs
    return encode_bundle(rrsets.values())


def _rrsig_offsets(bundle: bytes) -> list[int]:
    out, off = [], 0
    while off < len(bundle):
        while bundle[off]:
            off += 1 + bundle[off]
        rdtype = int.from_bytes(bundle[off + 1:off + 3], "big")
        rdlen = int.from_bytes(bundle[off + 9:off + 11], "big")
        off += 11 + rdlen
        if rdtype == RRSIG:
            out.append(off - 32)  # inside the signature
    return out


def test_stapled_handoff_makes_no_home_round_trip_and_lookup_does(lab: Lab) -> None:
    on = mn_cmd(lab, "mn1", cmd="dns_mode", mode="stapled")
    assert on["ok"] and on["staple_size"] > 0, on
    stapled = lab.handoff("mn1", "ar2")
    assert stapled["ok"] and stapled["staple_size"] > 0, stapled
    assert stapled["rerouted"] == [f"{MN1}/32"]
    wait_until(lambda: any(e.get("mn") == ZONE for e in events_since(
        lab, "ar2", stapled["t_auth_sent"], "staple_validated")), 10, "ar2 to validate", 0.1)
    settle(lab)
    off = mn_cmd(lab, "mn1", cmd="dns_mode", mode="lookup")
    assert off["ok"] and off["dns_mode"] == "lookup"
    plane(lab).flush(ZONE)  # the lookup's answers must come from the home server
    looked = lab.handoff("mn1", "ar1")
    assert looked["ok"] and looked["staple_size"] == 0, looked
    assert looked["rerouted"] == [f"{MN1}/32"], looked
    try:
        # The handoff starts at the radio's attach: the AR may ask before the MN stamps
        # its send (BIND's log has millisecond stamps).
        wait_until(lambda: home_round_trips(query_log(lab), ZONE, looked["t_attach"],
                                            looked["t_reply"]) > 0, 10,
                   "the lookup in BIND's log")
    except Exception:
        print("query log tail:", query_log(lab)[-3000:])
        print("ar1 checked:", events_since(lab, "ar1", looked["t_auth_sent"], "checked"))
        print("window:", looked["t_auth_sent"], looked["t_reply"])
        raise
    # The log now runs past the stapled handoff: its count is final.
    assert home_round_trips(query_log(lab), ZONE, stapled["t_attach"],
                            stapled["t_reply"]) == 0
    n = home_round_trips(query_log(lab), ZONE, looked["t_attach"], looked["t_reply"])
    print(f"\nhome round trips: stapled 0, lookup after a cache flush {n}")
    settle(lab)


def test_tampered_bundles_are_refused_and_the_ar_falls_back(lab: Lab) -> None:
    lab.handoff("mn1", "ar2")
    settle(lab)
    genuine = fetch(lab, ZONE)
    ok = probe(lab, "ar2", genuine)
    assert ok["rerouted"] == [f"{MN1}/32"]
    cases: list[tuple[str, bytes]] = []
    for at in _rrsig_offsets(genuine):
        cases.append(("StapleBogus", genuine[:at] + bytes((genuine[at] ^ 0x01,))
                      + genuine[at + 1:]))
    now = int(time.time())
    key, dnskey = _zone_key(lab)
    evil = ec.generate_private_key(ec.SECP256R1())
    evil_key = dns.dnssec.make_dnskey(evil.public_key(),
                                      dns.dnssectypes.Algorithm.ECDSAP256SHA256, flags=257)
    cases.append(("StapleBogus", _resign_a(genuine, evil, evil_key, now - 60, now + 3600)))
    cases.append(("StapleExpired", _resign_a(genuine, key, dnskey, now - 7200, now - 60)))
    cases.append(("StapleWrongName", fetch(lab, "mn2.example")))
    assert len(cases) >= 8
    for error, bad in cases:
        res = probe(lab, "ar2", bad)
        # The genuine DNS still answers: the fallback lookup re-routes the address.
        assert res["rerouted"] == [f"{MN1}/32"], (error, res)
        refused_with(lab, "ar2", res["t_sent"], error)


def _unsigned(text: str) -> str:
    zone = dns.zone.from_text(text, origin=ZONE + ".", relativize=False)
    strip_dnssec(zone)
    return zone.to_text(relativize=False)


def test_unsigned_zone_fails_closed_but_a_valid_old_bundle_still_validates(lab: Lab) -> None:
    pl = plane(lab)
    ex = lab.execs[pl.node.name]
    genuine = fetch(lab, ZONE)
    flipped = bytearray(genuine)
    flipped[_rrsig_offsets(genuine)[0]] ^= 0x01
    axfr = ex.check(["dig", "@127.0.0.1", "-p", str(pl.update_port), "+onesoa", ZONE, "AXFR"])
    pl.serve_verbatim(ZONE, _unsigned(axfr))
    try:
        pl.restart_named(ex)
        pl.flush(ZONE)
        t_first = time.time()
        for staple in (bytes(flipped), None):
            res = probe(lab, "ar2", staple)
            assert res["rerouted"] == [], res  # nothing re-routed on doubt
            if not res["ok"]:
                # The AR had no cached key for mn1: the key itself failed closed.
                assert "AuthRejected" in res["error"] or "AuthTimeout" in res["error"], res
                continue
            checked: list[dict[str, Any]] = []

            def seen(t0: float = res["t_sent"], out: list[dict[str, Any]] = checked) -> bool:
                out[:] = [e for e in events_since(lab, "ar2", t0, "checked")
                          if e.get("mn") == ZONE]
                return bool(out)

            wait_until(seen, 10, "ar2 to finish its check", 0.1)
            assert checked[0]["accepted"] == [] and MN1 in checked[0]["refused"]
            assert not [e for e in events_since(lab, "ar2", res["t_sent"], "announced")
                        if e.get("addr") == MN1]
        refused_with(lab, "ar2", t_first, "StapleBogus")
        # What a signature lifetime means: the genuine bundle, validly signed minutes ago,
        # still validates while the home zone is broken (docs/dns.md, "Freshness").
        res = probe(lab, "ar2", genuine)
        assert res["rerouted"] == [f"{MN1}/32"], res
    finally:
        pl.serve_verbatim(ZONE, None)
        pl.restart_named(ex)
        pl.flush(ZONE)
    wait_until(lambda: probe(lab, "ar2", None)["rerouted"] == [f"{MN1}/32"], 20,
               "lookups to validate again")


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def test_measure_auth_time_and_sizes(lab: Lab) -> None:
    """Auth time (AUTH to AUTH_REPLY at the MN) and home round trips per handoff, both
    modes, the caches as they are; and the AUTH size of every MN's stapled bundle."""
    rounds = 12
    figures: dict[str, Any] = {}
    for mode in ("lookup", "stapled"):
        assert mn_cmd(lab, "mn1", cmd="dns_mode", mode=mode)["ok"]
        auth_ms: list[float] = []
        trips: list[tuple[float, float]] = []
        for i in range(rounds):
            rec = lab.handoff("mn1", "ar1" if i % 2 == 0 else "ar2")
            assert rec["ok"] and rec["rerouted"] == [f"{MN1}/32"], rec
            assert (rec["staple_size"] > 0) == (mode == "stapled")
            auth_ms.append(rec["auth_ms"])
            trips.append((rec["t_auth_sent"], rec["t_reply"]))
            settle(lab)
        log = query_log(lab)
        counts = [home_round_trips(log, ZONE, a, b) for a, b in trips]
        figures[mode] = {"handoffs": rounds, "auth_ms_p50": _pct(auth_ms, 0.5),
                         "auth_ms_p95": _pct(auth_ms, 0.95),
                         "auth_ms_mean": round(statistics.mean(auth_ms), 2),
                         "home_round_trips": counts}
    assert all(n == 0 for n in figures["stapled"]["home_round_trips"])
    sizes = {}
    for mn in lab.mobiles:
        bundle = fetch(lab, f"{mn}.example")
        # AUTH: fixed 44, three names (peer, authenticator, previous: flag P as in a
        # handoff), the staple's 3-octet header, one IPv4 address, the tag.
        names = 3 + len(f"{mn}.example") + 2 * len("ar1.isp.test")
        sizes[mn] = {"bundle": len(bundle), "auth": 44 + names + 3 + len(bundle) + 7 + 16}
    figures["sizes"] = sizes
    assert all(s["auth"] <= 1472 for s in sizes.values())
    FIGURES.write_text(json.dumps(figures, indent=1))
    print(f"\nstapled figures: {json.dumps(figures)}")
