"""The flood bench's parts that need no namespace: the captures tcpreplay sends are valid
frames (so only our checks can drop them), forged AUTHs pass every cheap check, and the
pre-filter's numbers are the wire format's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from scapy.all import IP, UDP, Ether, rdpcap

from agents.auth import Authenticator, Limits
from agents.auth.flood import (
    AR_NAME,
    AR_NONCE,
    KnownKeys,
    dead_auth,
    flood_capture,
    keystore,
    legit_name,
    payloads,
    spoofed_sources,
)
from agents.auth.messages import AUTH_MAX_LEN, AUTH_MIN_LEN, VERSION, AuthMessage, MsgType
from agents.auth.prefilter import UDP_HEADER, prefilter_data


def test_capture_frames_have_valid_checksums_and_distinct_sources(tmp_path: Path) -> None:
    path = tmp_path / "f.pcap"
    assert flood_capture(path, "garbage", 300, bytes.fromhex("020000000001"), "10.192.0.1") == 300
    frames = rdpcap(str(path))
    assert len({f[IP].src for f in frames}) == 300
    for f in frames[:50]:
        again = Ether(bytes(f))
        del again[IP].chksum
        del again[UDP].chksum
        rebuilt = Ether(bytes(again))
        assert (f[IP].chksum, f[UDP].chksum) == (rebuilt[IP].chksum, rebuilt[UDP].chksum)
        assert f[UDP].dport == 7411 and f[IP].dst == "10.192.0.1"
        assert f[Ether].dst == "02:00:00:00:00:01"


def test_spoofed_sources_are_in_the_flood_range() -> None:
    sources = spoofed_sources(1000)
    assert len(set(sources)) == 1000
    assert all(ip[0] == 10 and ip[1] & 0xF0 == 208 and mac[0] == 2 for mac, ip in sources)


def test_forged_auths_reach_the_mac_check_and_fail_there() -> None:
    async def main() -> None:
        auth = Authenticator(AR_NAME, keystore(AR_NAME), KnownKeys(None), None,
                             limits=Limits(nonce_lifetime_s=None, per_source_rate=None))
        auth.rotate_nonce(AR_NONCE)
        for i in range(20):
            auth.prime_key(keystore(legit_name(i)).published_key())
        forged = list(payloads("forged_mac", 40))
        for data in forged:
            msg = AuthMessage.unpack(data)
            assert msg.auth_name == AR_NAME and msg.peer_name.startswith("mn")
            reply = await auth.handle(data, ("10.208.0.9", 4000))
            assert reply is not None and reply[1] == MsgType.FAILURE
        assert auth.stats["BadMac"] == 40

    asyncio.run(main())


def test_dead_auths_name_fresh_zones() -> None:
    zones = {AuthMessage.unpack(dead_auth(i, 10**15, None)).peer_name.split(".", 1)[1]
             for i in range(10)}
    assert len(zones) == 10


def test_prefilter_sizes_are_the_wire_formats() -> None:
    data = prefilter_data()
    assert data["version"] == VERSION
    auth = next(t for t in data["types"] if t["type"] == MsgType.AUTH)
    assert (auth["min"], auth["max"]) == (AUTH_MIN_LEN + UDP_HEADER, AUTH_MAX_LEN + UDP_HEADER)
    garbage = list(payloads("garbage", 200))
    assert min(map(len, garbage)) >= 1 and max(map(len, garbage)) <= 1400


def test_table_and_json_shape_when_nothing_succeeds() -> None:
    import json

    from topologies.lab.floodbench import _percentile, format_table

    assert _percentile([], 0.95) is None
    assert _percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    res = {"baseline": {"success": 1.0, "p50_ms": 2.0, "p95_ms": 3.0},
           "attacks": [{"kind": "garbage", "pps": 100000, "sources": 8000, "success": 0.0,
                        "p50_ms": None, "p95_ms": None}]}
    json.loads(json.dumps(res, allow_nan=False))
    assert format_table(res).splitlines()[2].split()[-3:] == ["0.0%", "-", "-"]
