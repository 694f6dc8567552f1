"""Address management in the Figure-2/3 lab (draft 2.3), with the real daemons and a
standard DHCP client: busybox udhcpc on the MN, the AR agents' DHCP server and relay, BIND
and Unbound for the records, FRR and ExaBGP for the host routes. One lab for the module.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from tests.integration.labs import events, figure2_lab, mn_request, status
from topologies import model
from topologies.lab.daemons import wait_until
from topologies.lab.lab import Lab

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]
MN = "mn3"  # the figure-2 MN that uses DHCP; its home is ar3
NAME = "mn3.example"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from figure2_lab(mode=None)


def mn(lab: Lab, cmd: str, **args: Any) -> dict[str, Any]:
    return mn_request(lab, MN, cmd, **args)


def mn_events(lab: Lab) -> list[dict[str, Any]]:
    return events(lab, MN)


def counters(lab: Lab, ar: str) -> dict[str, int]:
    return dict(status(lab, ar)["dhcp"]["counters"])


def lease_end(lab: Lab, ar: str, address: str) -> str | None:
    """Why ``ar`` ended its lease of ``address``, from its event log, written as it happens
    (agent.status.json is a snapshot rewritten every 0.5 s: read it only through a wait)."""
    return next((e["reason"] for e in events(lab, ar)
                 if e.get("ev") == "lease_ended" and e.get("addr") == address), None)


def dns(lab: Lab, *args: str) -> Any:
    """agents.dns run in an AR (Unbound serves the AS): every answer validated."""
    assert lab.dns is not None
    res = lab.execs["ar1"].run([sys.executable, "-m", "agents.dns", "--resolver",
                               str(lab.dns.resolver_address), *args], timeout=20)
    return json.loads(res.stdout) if res.returncode == 0 else None


def forward(lab: Lab) -> list[str] | None:
    got = dns(lab, "addrs", NAME)
    return list(got) if isinstance(got, list) else None


def ptr_ok(lab: Lab, address: str) -> bool:
    return dns(lab, "check", NAME, address) is not None


def host_route(lab: Lab, node: str, address: str) -> bool:
    out = lab.execs[node].check(["ip", "-j", "-4", "route", "show", "exact", f"{address}/32"])
    return bool(json.loads(out or "[]"))


def test_standard_client_gets_an_address_with_validated_records(lab: Lab) -> None:
    st = mn(lab, "status")
    ar3 = lab.topo.node("ar3")
    address = IPv4Address(st["address"])
    assert ar3.pool is not None and address in ar3.pool
    assert int(address) - int(ar3.pool.network_address) >= lab.topo.dhcp.first
    lease = st["dhcp"]["leases"][0]
    assert lease["server"] == str(ar3.loopback)
    # The client is busybox udhcpc, a process of its own, not our code.
    comm = Path(f"/proc/{lease['pid']}/comm").read_text().strip()
    assert comm in ("busybox", "udhcpc")
    assert st["dhcp"]["home_agent"] == model.fqdn("ha", "ha")  # DHCP option 224
    # The MN registered its forward name, the AR the PTR; both validate.
    wait_until(lambda: forward(lab) == [str(address)], 20, "mn3's A record")
    wait_until(lambda: ptr_ok(lab, str(address)), 20, "the PTR of mn3's address")
    wait_until(lambda: str(address) in status(lab, "ar3")["mobility"]["attached"], 10,
               "ar3's status to show mn3 attached")


def test_rotation_keeps_the_old_connection_and_new_ones_take_the_new_address(lab: Lab) -> None:
    old = mn(lab, "status")["address"]
    cn_addr = str(lab.topo.service("cn").interfaces[0].address)
    out = lab.dir / "test-addresses"
    out.mkdir(exist_ok=True)
    with lab.background("cn", ["iperf3", "-s", "-1", "-p", "5301", "-J", "-i", "0.1"],
                        out / "server.json"), \
            lab.background("cn", ["iperf3", "-s", "-1", "-p", "5302"], out / "server2.log"):
        wait_until(lambda: ":5301" in lab.execs["cn"].run(["ss", "-ltn"]).stdout
                   and ":5302" in lab.execs["cn"].run(["ss", "-ltn"]).stdout, 10,
                   "iperf3 servers")
        with lab.background(MN, ["iperf3", "-c", cn_addr, "-p", "5301", "-t", "10", "-b", "1M",
                                 "-i", "0.2", "-J"], out / "client.json") as client:
            wait_until(lambda: mn(lab, "in_use")["in_use"].get(old, 0) >= 1, 10,
                       "the long-lived stream on the old address")
            rot = mn(lab, "rotate")
            new = rot["address"]
            assert new != old and rot["addresses"] == [new, old]  # newest first
            assert mn(lab, "in_use")["in_use"][old] >= 1
            # A new connection, opened as any application would, leaves from the new address.
            res = lab.execs[MN].run([sys.executable, "-c", (
                "import socket,sys; s=socket.create_connection((sys.argv[1], 5302), 5); "
                "print(s.getsockname()[0])"), cn_addr])
            assert res.returncode == 0, res.stderr
            assert res.stdout.strip() == new
            wait_until(lambda: forward(lab) == [new, old], 20, "both addresses, newest first")
            assert client.wait(25) == 0
        doc = json.loads((out / "client.json").read_text())
        assert "error" not in doc, doc.get("error")
        assert doc["start"]["connected"][0]["local_host"] == old
        received = doc["end"]["sum_received"]["bytes"]
        assert received > 1_000_000 * 9 / 8 * 0.8  # the stream ran its 10 s through rotation
    # No connection uses the old address any more: released, out of DNS, PTR gone.
    wait_until(lambda: mn(lab, "status")["addresses"] == [new], 10, f"{old} released")
    wait_until(lambda: forward(lab) == [new], 20, "the old address out of DNS")
    # A RELEASE is never answered: the owner ends the lease when one arrives, and the MN sends
    # it again while the owner's PTR stays. Whatever the timing, the owner ends it within the
    # lease; in this lab nothing drops a datagram, so by the RELEASE.
    wait_until(lambda: lease_end(lab, "ar3", old) is not None, lab.topo.dhcp.lease_s + 10,
               f"ar3 to end the lease of {old}")
    assert lease_end(lab, "ar3", old) == "release"
    wait_until(lambda: any(e.get("ev") == "release_confirmed" and e.get("addr") == old
                           for e in mn_events(lab)), 10, "the MN to see the lease ended")
    wait_until(lambda: counters(lab, "ar3").get("release", 0) >= 1, 10,
               "ar3's status to count the release")
    wait_until(lambda: not ptr_ok(lab, old), 20, "the old PTR deleted")


def test_option82_on_the_wire_and_the_remote_renewal_limit(lab: Lab) -> None:
    held = mn(lab, "status")["address"]
    owner = "ar3"
    far = "ar5"  # another cluster: the held address needs a host route everywhere
    pcap = lab.dir / "test-addresses" / "owner.pcap"
    pcap.parent.mkdir(exist_ok=True)
    with lab.background(owner, ["tcpdump", "-n", "-U", "-i", "any", "-w", str(pcap),
                                "udp", "port", "67"], pcap.with_suffix(".log")):
        wait_until(lambda: pcap.exists() and pcap.stat().st_size > 0, 10, "tcpdump running")
        rec = lab.handoff(MN, far)
        assert rec["ok"] and rec["rerouted"] == [f"{held}/32"], rec
        wait_until(lambda: host_route(lab, "core1", held), 10, "the /32 at the core")
        limit = lab.topo.dhcp.remote_renewals
        lease = lab.topo.dhcp.lease_s

        def naked() -> bool:
            return any(e.get("ev") == "dhcp_nak" and e.get("addr") == held
                       for e in mn_events(lab))

        wait_until(naked, lease * (limit + 2) + 10, f"the owner's NAK for {held}", 0.5)
    # On the wire at the owner: relayed REQUESTs with the MN's name as Agent Remote ID.
    from scapy.layers.dhcp import BOOTP, DHCP
    from scapy.utils import rdpcap

    ar5 = lab.topo.node(far)
    remote_ids = []
    for pkt in rdpcap(str(pcap)):
        if BOOTP in pkt and DHCP in pkt and pkt[BOOTP].op == 1:
            for opt in pkt[DHCP].options:
                if isinstance(opt, tuple) and opt[0] == "relay_agent_information":
                    remote_ids.append((pkt[BOOTP].giaddr, bytes(opt[1])))
    assert remote_ids, "no relayed request with option 82 captured at the owner"
    assert all(gi == str(ar5.loopback) for gi, _ in remote_ids)
    assert all(b"\x02" + bytes([len(NAME)]) + NAME.encode() in raw for _, raw in remote_ids)
    # The owner counted before it sent the NAK; its status file shows it within 0.5 s.
    wait_until(lambda: counters(lab, owner).get("nak_limit") == 1, 10, "the owner's count")
    assert counters(lab, owner).get("renew_remote", 0) == limit
    # The refused address is gone everywhere; the MN took a fresh one where it is.
    wait_until(lambda: held not in mn(lab, "status")["addresses"] and
               bool(mn(lab, "status")["addresses"]), 15, "a fresh lease after the NAK")
    fresh = IPv4Address(mn(lab, "status")["address"])
    assert ar5.pool is not None and fresh in ar5.pool
    routers = [n.name for n in lab.topo.routers]
    wait_until(lambda: not any(host_route(lab, r, held) and r != far for r in routers), 15,
               f"no host route for {held} left")
