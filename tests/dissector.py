"""Decoding pcaps with tshark and the flatarch Wireshark dissector (docs/wireshark/flatarch.lua)
for the unit and integration tests, and writing crafted datagrams into a pcap.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from agents.auth import DEFAULT_PORT

ROOT = Path(__file__).resolve().parents[1]
DISSECTOR = ROOT / "docs" / "wireshark" / "flatarch.lua"
TSHARK_MISSING = "tshark is not installed (Debian package tshark; `make deps` installs it)"
FIELDS = (
    "frame.number", "ip.src", "ip.dst", "udp.srcport", "udp.dstport",
    "flatarch.type_name", "flatarch.length", "flatarch.flags.set", "flatarch.suite",
    "flatarch.timestamp", "flatarch.peer_name", "flatarch.auth_name", "flatarch.previous",
    "flatarch.addr", "flatarch.tal", "flatarch.session_id", "flatarch.peer_nonce",
    "flatarch.auth_nonce", "flatarch.nonce", "flatarch.echo", "flatarch.cookie", "flatarch.tag",
    "flatarch.malformed", "_ws.expert.message",
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
