"""Macro-mobility in the Figure-2/3 lab (draft 2.4): the BGP-speaking Home Agent, the
visited network on the Internet router, the MN's Binding Update with the one-message
protocol. Real FRR, ExaBGP, BIND, Unbound, dnsmasq and udhcpc; one lab for the module.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from topologies import model
from topologies.lab.daemons import wait_until
from topologies.lab.lab import Lab

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]
MN = "mn3"
MN1 = "10.64.0.10"  # mn1's provisioned address: not mn3's to claim


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    topo = model.load(ROOT / "topologies" / "figure2.yaml")
    with Lab(topo, ready_timeout=120) as running:
        answer = running.control(MN).request({"cmd": "prepare_ha"}, timeout=30)
        assert answer.get("ok"), answer
        yield running


def mn(lab: Lab, cmd: str, **args: Any) -> dict[str, Any]:
    answer = lab.control(MN).request({"cmd": cmd, **args}, timeout=30)
    assert answer.get("ok"), answer
    return answer


def ha_status(lab: Lab) -> dict[str, Any]:
    return dict(json.loads((lab.rundir("ha") / "agent.status.json").read_text()))


def host_route(lab: Lab, node: str, address: str) -> list[dict[str, Any]]:
    out = lab.execs[node].check(["ip", "-j", "-4", "route", "show", "exact", f"{address}/32"])
    return list(json.loads(out or "[]"))


def reaches(lab: Lab, address: str) -> bool:
    return lab.execs["cn"].run(["ping", "-c", "1", "-W", "1", address]).returncode == 0


def path_from_cn(lab: Lab, address: str) -> str:
    """traceroute from the CN, one probe a hop: a probe lost on a busy machine shows as '*',
    so callers look for a hop through a wait, not in one run."""
    return lab.execs["cn"].run(["traceroute", "-n", "-q", "1", "-w", "1", address],
                               timeout=30).stdout


def run_in(lab: Lab, node: str, code: str) -> dict[str, Any]:
    res = lab.execs[node].run([sys.executable, "-c", code], timeout=30)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def test_leaving_binds_at_the_home_agent_and_returning_withdraws_it(lab: Lab) -> None:
    home = mn(lab, "status")["address"]
    ha = lab.topo.service("ha")
    rec = lab.handoff(MN, "inet")
    assert rec["ok"], rec
    assert rec["tunnel"] in ("ipip", "vxlan") and rec["rerouted"] == [f"{home}/32"]
    assert lab.topo.outside_net is not None
    assert IPv4Address(rec["care_of"]) in lab.topo.outside_net  # from dnsmasq
    # The HA announced the /32 with itself as next hop; the core routes it there.
    wait_until(lambda: any(r.get("gateway") for r in host_route(lab, "core1", home)), 10,
               "core1 to route the home address to the HA")
    # agent.status.json is rewritten every 0.5 s: the core can hear the route before it.
    wait_until(lambda: home in ha_status(lab)["mobility"]["attached"]
               and ha_status(lab)["tunnel"]["care_of"] == {home: rec["care_of"]}, 10,
               "the HA's status to show the binding")
    wait_until(lambda: reaches(lab, home), 10, "the CN to reach the MN through the HA")
    # The path goes through the Home Agent.
    wait_until(lambda: str(ha.interfaces[0].address) in path_from_cn(lab, home), 30,
               "a traceroute through the HA")
    # Back home: the AR's newer LOCAL_PREF makes the HA withdraw and tear the tunnel down.
    back = lab.handoff(MN, "ar3")
    assert back["ok"] and back["rerouted"] == [f"{home}/32"], back
    wait_until(lambda: ha_status(lab)["mobility"]["attached"] == {}
               and ha_status(lab)["tunnel"]["devices"] == {}, 10, "the HA to drop the binding")
    wait_until(lambda: not host_route(lab, "core1", home), 10, "no host route left at core1")
    wait_until(lambda: reaches(lab, home), 10, "the CN to reach the MN at home")
    assert "hat" not in lab.execs["ha"].check(["ip", "-o", "link"])


def test_an_explicit_deregistration_ends_the_binding(lab: Lab) -> None:
    home = mn(lab, "status")["address"]
    assert lab.handoff(MN, "inet")["ok"]
    wait_until(lambda: home in ha_status(lab)["mobility"]["attached"], 10, "the binding")
    assert mn(lab, "deregister")["deregistered"] == [f"{home}/32"]
    wait_until(lambda: ha_status(lab)["mobility"]["attached"] == {}
               and ha_status(lab)["tunnel"]["devices"] == {}, 10, "the HA to drop it")
    wait_until(lambda: not any(r.get("gateway") == str(lab.topo.service("ha").interfaces[0]
                                                      .address)
                               for r in host_route(lab, "core2", home)), 10,
               "core2 to forget the HA's /32")
    back = lab.handoff(MN, "ar3")
    assert back["ok"] and back["rerouted"] == [f"{home}/32"], back
    wait_until(lambda: reaches(lab, home), 10, "the MN reachable at home again")


FORGED = r'''
import asyncio, json
from pathlib import Path
from agents.auth import AuthError, KeyStore, Peer, StaticDirectory
from agents.dns import DnssecKeyResolver, ValidatingResolver
async def main():
    key = await DnssecKeyResolver(ValidatingResolver("{resolver}")).resolve("ha.isp.test")
    ks = {keystore}
    try:
        s = await Peer(ks, StaticDirectory([key])).authenticate(
            ("{ha}", 7411), "ha.isp.test", [{claims}], ar_key=key, timeout={timeout},
            retries=1, local_addr=("{own}", 0))
        print(json.dumps({{"accepted": True, "rerouted": [str(p) for p in s.rerouted],
                          "not": [str(p) for p in s.not_rerouted]}}))
    except AuthError as exc:
        print(json.dumps({{"accepted": False, "error": type(exc).__name__}}))
asyncio.run(main())
'''


def _forged(lab: Lab, keystore: str, claims: str, timeout: float) -> dict[str, Any]:
    assert lab.dns is not None
    return run_in(lab, MN, FORGED.format(
        resolver=lab.dns.resolver_address, ha=lab.topo.service("ha").interfaces[0].address,
        own=mn(lab, "status")["address"], keystore=keystore, claims=claims, timeout=timeout))


def test_a_forged_binding_update_is_refused_and_nothing_announced(lab: Lab) -> None:
    own = mn(lab, "status")["address"]
    before = ha_status(lab)["auth"].get("BadMac", 0)
    # mn3's name, another key: the HMAC cannot verify.
    got = _forged(lab, 'KeyStore.generate("mn3.example")', f'"{own}/32"', timeout=0.3)
    assert got["accepted"] is False
    wait_until(lambda: ha_status(lab)["auth"].get("BadMac", 0) > before, 5,
               "the HA to count the bad MAC")
    # mn3's own key, but mn1's address: authenticated, and the claim refused by DNS.
    pem = lab.rundir(MN) / "identity.pem"
    # The HA answers once DNS refused the claim: give it the time a busy machine needs.
    got = _forged(lab, f'KeyStore.from_pem("mn3.example", Path("{pem}").read_bytes())',
                  f'"{MN1}/32"', timeout=5.0)
    assert got["accepted"] is True and got["rerouted"] == [] and got["not"] == [f"{MN1}/32"]
    st = ha_status(lab)
    assert st["mobility"]["attached"] == {} and st["mobility"]["announced"] == {}
    assert not any(r.get("gateway") for r in host_route(lab, "core1", MN1))


REPLAY = r'''
import json, os, socket, time, asyncio
from pathlib import Path
from agents.auth import KeyStore
from agents.auth.protocol import build_auth
from agents.dns import DnssecKeyResolver, ValidatingResolver
key = asyncio.run(DnssecKeyResolver(ValidatingResolver("{resolver}")).resolve("ha.isp.test"))
ks = KeyStore.from_pem("mn3.example", Path("{pem}").read_bytes())
nonce = key.usable_nonce(time.time()) or bytes(16)
data, _, _ = build_auth(ks, key, timestamp_us=int(time.time() * 1e6), peer_nonce=os.urandom(16),
                        auth_nonce=nonce, addresses=(), mobility=True)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("{own}", 0))
out = {{}}
# The first is answered, however busy the HA; the replay must not be: a second is enough to
# see a reply come back from an HA that already answered once.
for attempt, wait in (("first", 10.0), ("replay", 1.0)):
    s.settimeout(wait)
    s.sendto(data, ("{ha}", 7411))
    try:
        out[attempt] = s.recv(2048)[1]
    except socket.timeout:
        out[attempt] = None
print(json.dumps(out))
'''


def test_a_replayed_binding_update_is_refused(lab: Lab) -> None:
    assert lab.dns is not None
    before = ha_status(lab)["auth"].get("Replay", 0)
    got = run_in(lab, MN, REPLAY.format(
        resolver=lab.dns.resolver_address, pem=lab.rundir(MN) / "identity.pem",
        ha=lab.topo.service("ha").interfaces[0].address, own=mn(lab, "status")["address"]))
    from agents.auth.messages import MsgType

    assert got["first"] == int(MsgType.AUTH_REPLY)
    assert got["replay"] != int(MsgType.AUTH_REPLY)
    wait_until(lambda: ha_status(lab)["auth"].get("Replay", 0) > before, 5,
               "the HA to count the replay")
