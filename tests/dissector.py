"""Decoding pcaps with tshark and the flatarch Wireshark dissector (docs/wireshark/flatarch.lua)
for the unit and integration tests, and writing crafted datagrams into a pcap.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agents.auth import DEFAULT_PORT
from agents.auth.messages import AuthMessage, to_prefix

ROOT = Path(__file__).resolve().parents[1]
DISSECTOR = ROOT / "docs" / "wireshark" / "flatarch.lua"
TSHARK_MISSING = "tshark is not installed (Debian package tshark; `make deps` installs it)"
FIELDS = (
    "frame.number", "ip.src", "ip.dst", "udp.srcport", "udp.dstport", "udp.length",
    "flatarch.type_name", "flatarch.length", "flatarch.flags.set", "flatarch.suite",
    "flatarch.timestamp", "flatarch.peer_name", "flatarch.auth_name", "flatarch.previous",
    "flatarch.origin",
    "flatarch.addr", "flatarch.tal", "flatarch.session_id", "flatarch.peer_nonce",
    "flatarch.auth_nonce", "flatarch.nonce", "flatarch.echo", "flatarch.cookie", "flatarch.tag",
    "flatarch.staple",
    "flatarch.malformed", "_ws.expert.message",
    "flatarch.dhcp.home_agent", "flatarch.dhcp.malformed", "flatarch.dhcp.remote_id",
)

Frame = dict[str, list[str]]


def have_tshark() -> bool:
    return shutil.which("tshark") is not None


def decode(pcap: Path, display_filter: str = "flatarch") -> list[Frame]:
    """One dict per matching frame: field name → every value it has in that frame."""
    cmd = ["tshark", "-n", "-X", f"lua_script:{DISSECTOR}", "-r", str(pcap),
           "-Y", display_filter, "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
           "-E", "aggregator=|", "-E", "quote=n"]
    for f in FIELDS:
        cmd += ["-e", f]
    # An empty HOME: a copy of the plugin installed for the user would register twice.
    with tempfile.TemporaryDirectory() as home:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                             env={"HOME": home, "PATH": "/usr/bin:/bin"})
    if res.returncode != 0 or "Lua: Error" in res.stderr:
        raise AssertionError(f"tshark failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    frames = []
    for line in res.stdout.splitlines():
        values = line.split("\t")
        frames.append({f: v.split("|") if v else [] for f, v in zip(FIELDS, values, strict=True)})
    return frames


def write_datagrams(path: Path, payloads: Iterable[bytes], sport: int = 40000,
                    dport: int = DEFAULT_PORT) -> None:
    """One IPv4/UDP packet per payload, to the protocol's port, as a pcap at ``path``."""
    from scapy.layers.inet import IP, UDP
    from scapy.packet import Raw
    from scapy.utils import wrpcap

    wrpcap(str(path), [IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=sport, dport=dport)
                       / Raw(p) for p in payloads])


def handoff_record(answer: dict[str, Any], new_events: list[dict[str, Any]],
                   old_events: list[dict[str, Any]], names: dict[str, str],
                   previous_loopback: str) -> dict[str, Any]:
    """What the MN and both ARs logged for one redirect-mode handoff: the MN's answer, the
    new AR's `verified` and `redirect_acked`, the previous AR's `redirect_received`."""
    def last(events: list[dict[str, Any]], ev: str) -> dict[str, Any]:
        found = [e for e in events if e["ev"] == ev]
        assert found, f"no {ev} event"
        return found[-1]

    return {"mn": answer["mn"], "from": answer["from"], "to": answer["to"],
            "mn_name": names["mn"], "ar_name": names["to"], "previous_name": names["from"],
            "previous_loopback": previous_loopback,
            "rerouted": answer["rerouted"], "not_rerouted": answer["not_rerouted"],
            "verified": last(new_events, "verified"),
            "redirect_acked": last(new_events, "redirect_acked"),
            "redirect_received": last(old_events, "redirect_received")}


def auth_len(peer: str, auth: str, addresses: list[str], previous: str | None = None,
             origin_us: int | None = None) -> int:
    """The length of an AUTH with these names and host addresses, as messages.py packs it."""
    return len(AuthMessage(1, 0, bytes(16), bytes(16), peer, auth,
                           tuple(to_prefix(a) for a in addresses), True, None, bytes(16),
                           previous, origin_us=origin_us).pack())


def check_handoff(frames: list[Frame], logged: dict[str, Any]) -> None:
    """The MN's AUTH at the new AR and its reply, the new AR's redirect AUTH to the previous
    AR and that AR's reply, each decoded to what the agents logged."""
    mn, new, old = logged["mn_name"], logged["ar_name"], logged["previous_name"]
    verified, acked = logged["verified"], logged["redirect_acked"]
    assert all(not f["flatarch.malformed"] for f in frames)
    for f in frames:  # the dissector's length is the UDP payload's
        assert f["flatarch.length"] == [str(int(f["udp.length"][0]) - 8)]
    names = [(f["flatarch.type_name"], f["flatarch.peer_name"], f["flatarch.auth_name"])
             for f in frames]
    auth = frames[names.index((["AUTH"], [mn], [new]))]
    assert verified["mn"] == mn and verified["previous"] == old
    assert auth["flatarch.flags.set"] == ["M,P"] and auth["flatarch.previous"] == [old]
    assert auth["flatarch.addr"] == [f"{a}/32" for a in verified["claimed"]]
    assert auth["flatarch.length"] == [str(auth_len(mn, new, verified["claimed"], old))]
    reply = next(f for f in frames if f["flatarch.type_name"] == ["AUTH_REPLY"]
                 and f["flatarch.peer_nonce"] == auth["flatarch.peer_nonce"])
    assert reply["ip.dst"] == auth["ip.src"] and reply["udp.srcport"] == [str(DEFAULT_PORT)]
    assert reply["flatarch.flags.set"][0].split(",")[0] == "M"
    assert reply["flatarch.addr"] == [str(ipaddress.ip_network(p)) for p in logged["rerouted"]]
    assert new in reply["flatarch.tal"]  # an AR's Tracking Area List holds the AR itself
    redirect = frames[names.index((["AUTH"], [new], [old]))]
    # Flag O: the redirect carries the time of the MN's AUTH it follows.
    assert redirect["flatarch.flags.set"] == ["M,O"]
    assert redirect["flatarch.origin"] == auth["flatarch.timestamp"]
    assert redirect["flatarch.addr"] == [f"{acked['addr']}/32"]
    assert redirect["flatarch.addr"] == [f"{a}/32" for a in logged["redirect_received"]["addrs"]]
    assert redirect["ip.dst"] == [logged["previous_loopback"]]
    assert redirect["flatarch.length"] == [str(auth_len(new, old, [acked["addr"]],
                                                        origin_us=0))]
    assert redirect["udp.dstport"] == [str(DEFAULT_PORT)]
    back = next(f for f in frames if f["flatarch.type_name"] == ["AUTH_REPLY"]
                and f["flatarch.peer_nonce"] == redirect["flatarch.peer_nonce"])
    assert back["ip.src"] == redirect["ip.dst"] and back["ip.dst"] == redirect["ip.src"]
    assert back["flatarch.addr"] == [f"{a}/32" for a in acked["rerouted"]]
