"""The backbone side of issue 19 in the Figure-2/3 lab, with the real daemons: forged relayed
DHCP RELEASEs and REQUESTs from a host that is not an AR change nothing at the owner; a
genuine relayed renewal still goes through; every BGP session runs under TCP-MD5, and one
whose key is wrong at one end never comes up while the others stay Established.
One lab for the module.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from agents.dhcp import OPT_CLIENT_ID, OPT_SERVER_ID, DhcpMessage, MessageType, RelayAgentInfo
from agents.dhcpd import client_parts, make_client_id
from tests.integration.labs import figure2_lab, mn_request
from topologies import model
from topologies.lab.daemons import vtysh, wait_until
from topologies.lab.health import bgp_peers
from topologies.lab.lab import Lab
from topologies.render.bgpkeys import read_lab_secret, session_key
from topologies.render.configs import daemons_for

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]
MN = "mn3"  # the figure-2 MN that uses DHCP
NAME = "mn3.example"
ATTACKER = "dns"  # a host inside the AS, on the backbone, that is not an AR


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from figure2_lab(mode=None)


def mn(lab: Lab, cmd: str, **args: Any) -> dict[str, Any]:
    return mn_request(lab, MN, cmd, **args)


def dhcp_status(lab: Lab, ar: str) -> dict[str, Any]:
    return dict(json.loads((lab.rundir(ar) / "agent.status.json").read_text())["dhcp"])


def counter(lab: Lab, ar: str, name: str) -> int:
    return int(dhcp_status(lab, ar)["counters"].get(name, 0))


def owner_of(lab: Lab, address: str) -> str:
    """The AR whose pool holds ``address``: the lease's owner."""
    return next(n.name for n in lab.topo.by_role(model.Role.AR)
                if n.pool is not None and IPv4Address(address) in n.pool)


def victim_lease(lab: Lab, address: str) -> dict[str, Any]:
    owner = owner_of(lab, address)
    [lease] = [x for x in dhcp_status(lab, owner)["leases"] if x["address"] == address]
    return dict(lease)


def ptr_ok(lab: Lab, address: str) -> bool:
    assert lab.dns is not None
    res = lab.execs["ar1"].run([sys.executable, "-m", "agents.dns", "--resolver",
                               str(lab.dns.resolver_address), "check", NAME, address],
                               timeout=20)
    return res.returncode == 0


# Runs in a station on the access link: broadcasts each DHCP datagram (hex) from port 68.
STATION = r"""
import socket, sys
ifname, *packets = sys.argv[1:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
s.bind(("0.0.0.0", 68))
for p in packets:
    s.sendto(bytes.fromhex(p), ("255.255.255.255", 67))
print("sent", flush=True)
"""


def test_a_station_copying_the_mns_client_identifier_gets_no_lease(lab: Lab) -> None:
    """Issue 19 defect 8: another station on the MN's link, even one that delivered the MN's
    AUTH or copies its client identifier, cannot lease in the MN's name."""
    wait_until(lambda: bool(mn(lab, "status").get("address")), 30, "mn3's first lease")
    status = mn(lab, "status")
    home = owner_of(lab, status["address"])
    mn(lab, "attach", ar=home)  # authenticate afresh where it is: the MN is on the link now
    assert lab.radio is not None
    if lab.radio.where.get("mn1") != home:  # the other station, authenticated as itself
        assert lab.handoff("mn1", home)["ok"]
    pid = status["dhcp"]["leases"][0]["pid"]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    copied = bytes.fromhex(argv[argv.index(b"-x") + 1].decode().split(":", 1)[1])
    parts = client_parts(copied)
    assert parts is not None and parts[0] == NAME and parts[2] is not None  # it has a proof
    mac = lab.execs["mn1"].check(["cat", "/sys/class/net/mn1-eth0/address"]).strip()
    chaddr = bytes.fromhex(mac.replace(":", ""))
    # agent.status.json is a snapshot rewritten every 0.5 s: read it once it shows the lease.
    seen: dict[str, Any] = {}

    def shows_lease() -> bool:
        seen.update(dhcp_status(lab, home))
        return any(x["mn"] == NAME for x in seen.get("leases", []))

    wait_until(shows_lease, 10, f"{home}'s status to show mn3's lease")
    before = dict(seen)
    packets = [DhcpMessage(1, 0x77000001 + i, chaddr, MessageType.DISCOVER,
                           options={OPT_CLIENT_ID: cid}).pack().hex()
               for i, cid in enumerate((copied, make_client_id(NAME, 9)))]
    res = lab.execs["mn1"].run([sys.executable, "-c", STATION, "mn1-eth0", *packets])
    assert res.returncode == 0, res.stderr
    wait_until(lambda: counter(lab, home, "refused") >= before["counters"].get("refused", 0)
               + len(packets), 20, "the AR refusing both DISCOVERs")
    after = dhcp_status(lab, home)
    assert after["counters"].get("offer", 0) == before["counters"].get("offer", 0)
    assert {x["address"] for x in after["leases"] if x["mn"] == NAME} == {
        x["address"] for x in before["leases"] if x["mn"] == NAME}


# Runs in the attacker's namespace: sends each datagram (hex) to the owner's port 67 from
# port 67, then keeps listening until the test creates the stop file, and prints how many
# datagrams came back (a server that believed the forged giaddr would answer there).
SENDER = r"""
import os, select, socket, sys
dst, stop, *packets = sys.argv[1:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 67))
for p in packets:
    s.sendto(bytes.fromhex(p), (dst, 67))
print("sent", flush=True)
got = 0
while not os.path.exists(stop):
    if select.select([s], [], [], 0.1)[0]:
        s.recv(2048)
        got += 1
print("replies", got, flush=True)
"""

# The same with a forged IP source (another AR's loopback), through a raw socket.
SPOOFER = r"""
import socket, struct, sys
src, dst, *packets = sys.argv[1:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for p in packets:
    payload = bytes.fromhex(p)
    udp = struct.pack("!HHHH", 67, 67, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    s.sendto(ip + udp, (dst, 0))
print("sent", flush=True)
"""


def forged(address: IPv4Address, giaddr: IPv4Address, owner: IPv4Address,
           kind: MessageType, xid: int) -> str:
    """A relayed message naming the victim in option 82, as an attacker would write it."""
    opts = {OPT_CLIENT_ID: make_client_id(NAME, 1)}
    if kind is MessageType.RELEASE:
        opts[OPT_SERVER_ID] = owner.packed
    msg = DhcpMessage(1, xid, bytes.fromhex("02fa00000003"), kind, ciaddr=address,
                      giaddr=giaddr, hops=1, options=opts,
                      relay=RelayAgentInfo(b"ar5.isp.test/ar5-acc", NAME.encode()))
    return msg.pack().hex()


def test_forged_relayed_release_and_requests_from_a_host_that_is_no_ar_change_nothing(
        lab: Lab) -> None:
    wait_until(lambda: bool(mn(lab, "status").get("address")), 30, "mn3's first lease")
    address = mn(lab, "status")["address"]
    wait_until(lambda: ptr_ok(lab, address), 20, "the victim's PTR")
    before = victim_lease(lab, address)
    owner_ar = owner_of(lab, address)
    assert before["bound"] and before["mn"] == NAME and before["remote_renewals"] == 0
    owner = lab.topo.node(owner_ar).loopback
    other_ar = next(n.loopback for n in lab.topo.by_role(model.Role.AR) if n.name != owner_ar)
    cn = lab.topo.service(ATTACKER).interfaces[0].address
    assert owner is not None and other_ar is not None
    victim = IPv4Address(address)
    release_counter = counter(lab, owner_ar, "release")
    refused = counter(lab, owner_ar, "relay_refused")
    unsigned = counter(lab, owner_ar, "relay_refused_unsigned")

    # From the attacker's own address, giaddr naming itself or a real AR: one RELEASE and
    # three REQUESTs each (three would use up the remote-renewal limit of 2).
    packets = [forged(victim, gi, owner, MessageType.RELEASE, 0x66000001 + i)
               for i, gi in enumerate((cn, other_ar))]
    packets += [forged(victim, gi, owner, MessageType.REQUEST, 0x66000010 + i)
                for i in range(3) for gi in (cn, other_ar)]
    stop = lab.dir / "test-backbone-auth.stop"
    stop.unlink(missing_ok=True)
    out = lab.dir / "test-backbone-auth.sender.log"
    with lab.background(ATTACKER, [sys.executable, "-c", SENDER, str(owner), str(stop),
                                   *packets], out) as sender:
        wait_until(lambda: counter(lab, owner_ar, "relay_refused") >= refused + len(packets),
                   20,
                   "the owner refusing every forged datagram")
        # Spoofed from another AR's loopback: it passes the source check, not the
        # authenticator.
        spoofed = [forged(victim, other_ar, owner, kind, 0x66000100 + i)
                   for i, kind in enumerate((MessageType.RELEASE, MessageType.REQUEST,
                                             MessageType.REQUEST, MessageType.REQUEST))]
        res = lab.execs[ATTACKER].run([sys.executable, "-c", SPOOFER, str(other_ar),
                                       str(owner), *spoofed])
        assert res.returncode == 0, res.stderr
        wait_until(lambda: counter(lab, owner_ar, "relay_refused_unsigned")
                   >= unsigned + len(spoofed), 20,
                   "the owner refusing the spoofed, unsigned datagrams")
        stop.touch()
        assert sender.wait(10) == 0
    assert "replies 0" in out.read_text(), out.read_text()  # nothing to the forged giaddr
    counters = dhcp_status(lab, owner_ar)["counters"]
    assert counters.get("relay_refused_not_an_ar", 0) >= len(packets)
    # Nothing changed: the lease, its renewal count, its PTR, and the MN still holds it.
    assert counter(lab, owner_ar, "release") == release_counter
    after = victim_lease(lab, address)
    assert after["bound"] and after["remote_renewals"] == 0 and after["mn"] == NAME
    assert ptr_ok(lab, address)
    assert address in mn(lab, "status")["addresses"]
    assert all(e.get("remote_id") != NAME or e.get("giaddr") != str(cn)
               for e in dhcp_status(lab, owner_ar)["option82_seen"])


def test_a_genuine_relayed_renewal_still_goes_through(lab: Lab) -> None:
    address = mn(lab, "status")["address"]
    owner_ar = owner_of(lab, address)
    far = next(n.name for n in lab.topo.by_role(model.Role.AR)
               if n.name != owner_ar and not set(lab.topo.ar_parents(n.name))
               & set(lab.topo.ar_parents(owner_ar)))  # another cluster
    start = counter(lab, owner_ar, "renew_remote")
    rec = lab.handoff(MN, far)
    assert rec["ok"] and rec["rerouted"] == [f"{address}/32"], rec
    # The MN renews at T1 through ar5; the owner takes it only with ar5's authenticator.
    wait_until(lambda: counter(lab, owner_ar, "renew_remote") > start,
               lab.topo.dhcp.lease_s + 15, "a relayed renewal acknowledged by the owner", 0.5)
    assert counter(lab, far, "relay_refused") == 0
    assert victim_lease(lab, address)["remote_renewals"] >= 1


# --- TCP-MD5 on every BGP session -----------------------------------------------------------


def md5_failures(lab: Lab, node: str) -> int:
    """Segments the node's kernel dropped for a wrong or missing TCP-MD5 signature."""
    text = lab.execs[node].check(["cat", "/proc/net/netstat"])
    lines = [line.split() for line in text.splitlines() if line.startswith("TcpExt:")]
    fields = dict(zip(lines[0][1:], lines[1][1:], strict=True))
    return int(fields.get("TCPMD5Failure", 0)) + int(fields.get("TCPMD5NotFound", 0)) + \
        int(fields.get("TCPMD5Unexpected", 0))


def established(lab: Lab, node: str) -> dict[str, bool]:
    return {a: s == "Established" for a, s in bgp_peers(lab.execs[node], lab.rundir(node)).items()}


def test_every_session_is_up_with_tcp_md5_keys(lab: Lab) -> None:
    health = lab.check_health()
    assert health.converged, health.problems
    secret = read_lab_secret(lab.dir)
    frr = [n.name for n in lab.topo.nodes.values() if "bgpd" in daemons_for(n, lab.topo)]
    for node in frr:
        out = vtysh(lab.execs[node], lab.rundir(node), "show running-config")
        peers = [line.split()[1:4:2] for line in out.splitlines()
                 if line.startswith(" neighbor ") and " description " in line]
        assert peers, node
        for _address, peer in peers:
            # The key the daemon runs with is the one derived for this pair, at both ends.
            assert f" password {session_key(secret, node, peer)}" in out, (node, peer)


@pytest.mark.parametrize("node, peer", [("core1", "agg1"), ("agg1", "ar1")],
                         ids=["frr-frr", "frr-exabgp"])
def test_a_wrong_key_keeps_the_session_down_while_the_others_stay_up(
        lab: Lab, node: str, peer: str) -> None:
    address = str(lab.topo.node(peer).loopback)
    asn = lab.topo.asn
    rd, ex = lab.rundir(node), lab.execs[node]
    others = {a for a, up in established(lab, node).items() if up and a != address}
    assert established(lab, node)[address] and others
    failures = md5_failures(lab, node) + md5_failures(lab, peer)

    def set_key(key: str) -> None:
        vtysh(ex, rd, "configure terminal", f"router bgp {asn}",
              f"neighbor {address} password {key}")

    set_key("not-the-session-key-" + "x" * 12)
    try:
        wait_until(lambda: not established(lab, node)[address], 20, f"{node}-{peer} down")
        # Each reconnect attempt (every 2 s) dies in the kernel on its signature; after
        # several of them the session has still never come back.
        for n in range(1, 4):
            def refused(n: int = n) -> bool:
                return md5_failures(lab, node) + md5_failures(lab, peer) >= failures + n

            wait_until(refused, 30, f"reconnect attempt {n} refused by TCP-MD5")
            assert not established(lab, node)[address]
        now = established(lab, node)
        assert all(now[a] for a in others), now
    finally:
        set_key(session_key(read_lab_secret(lab.dir), node, peer))
    wait_until(lambda: established(lab, node)[address], 60, f"{node}-{peer} back with its key")
