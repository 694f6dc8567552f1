"""The DNSSEC plane with the real daemons: BIND signs, Unbound validates, agents query and update.

A two-host Mininet network (the dns node and one client standing where core1 would be) is
built per module; every test polls toward a deadline and the finalizer leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import dns.name
import dns.rdataset
import dns.rdatatype
import dns.zone
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from agents.auth.keys import Suite, spki_of
from tests.integration.labs import strip_dnssec
from topologies.analysis.stats import percentile
from topologies.lab.daemons import NodeExec, proc_comm, wait_until
from topologies.lab.dnsplane import RECORD_TTL, DnsPlane
from topologies.model import Role, load
from topologies.render.identities import Identity

pytestmark = [pytest.mark.root, pytest.mark.timeout(90)]
ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("named", "unbound", "unbound-control", "dig", "mnexec", "dnssec-keygen")
NONCE_EXPIRES = int(time.time()) + 3600


def p256() -> bytes:
    return spki_of(ec.generate_private_key(ec.SECP256R1()).public_key())


def x25519_spki() -> bytes:
    return spki_of(x25519.X25519PrivateKey.generate().public_key())


@dataclass
class DnsLab:
    plane: DnsPlane
    dns: NodeExec
    client: NodeExec
    ids: dict[str, Identity]
    tmp: Path

    def agent(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """agents.dns's command line, run inside the client node."""
        argv = [sys.executable, "-m", "agents.dns", "--resolver",
                str(self.plane.resolver_address), *args]
        return self.client.run(argv, timeout=timeout)

    def agent_json(self, *args: str) -> object:
        res = self.agent(*args)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def update(self, cmd: str, tsig: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
        extra = ["--tsig", str(tsig)] if tsig else []
        return self.agent(cmd, "--server", str(self.plane.update_address),
                          "--server-port", str(self.plane.update_port), *extra, *args)

    def dig(self, *args: str, via_named: bool = False) -> tuple[str, str, list[str]]:
        """(status, flags, answer lines) of one query, through Unbound unless via_named."""
        if via_named:
            argv = ["dig", "@127.0.0.1", "-p", str(self.plane.update_port), "+norec"]
            ex = self.dns
        else:
            argv = ["dig", f"@{self.plane.resolver_address}"]
            ex = self.client
        out = ex.check([*argv, "+dnssec", "+tries=1", "+time=2", *args])
        status = out.split("status: ", 1)[1].split(",", 1)[0]
        flags = out.split(";; flags:", 1)[1].split(";", 1)[0]
        answer: list[str] = []
        if ";; ANSWER SECTION:" in out:
            section = out.split(";; ANSWER SECTION:\n", 1)[1].split("\n\n", 1)[0]
            answer = section.splitlines()
        return status, flags, answer


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsLab]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {missing}")
    from mininet.log import setLogLevel
    from mininet.net import Mininet

    setLogLevel("warning")
    topo = load(ROOT / "topologies" / "figure2.yaml")
    ids = {
        "mn1": Identity("mn1.example", Suite.P256, p256(), "mn",
                        address=IPv4Address("10.64.0.10")),
        "mn2": Identity("mn2.example", Suite.X25519, x25519_spki(), "mn",
                        address=IPv4Address("10.64.1.20")),
        "mn3": Identity("mn3.example", Suite.P256, p256(), "mn",
                        address=IPv4Address("10.65.0.30")),
        "ha": Identity("ha.isp.test", Suite.P256, p256(), "ha", nonce=os.urandom(16),
                       nonce_expires=NONCE_EXPIRES),
    }
    for ar in topo.by_role(Role.AR):
        ids[ar.name] = Identity(f"{ar.name}.isp.test", Suite.P256, p256(), "ar",
                                nonce=os.urandom(16), nonce_expires=NONCE_EXPIRES)
    tmp = tmp_path_factory.mktemp("dnsplane")
    plane = DnsPlane(topo, tmp / "run", list(ids.values()))
    plane.prepare()

    # Unique node names: other labs may run on this machine at the same time.
    tag = f"{os.getpid() % 10000}"
    net = Mininet(topo=None, controller=None, build=False, autoSetMacs=False)
    hosts = []
    started = False
    try:
        hdns = net.addHost(f"zd{tag}", inNamespace=True)
        hcli = net.addHost(f"zc{tag}", inNamespace=True)
        hosts = [hdns, hcli]
        net.addLink(hdns, hcli)
        dns_if = plane.node.interfaces[0]
        dns_ex, cli_ex = NodeExec(hdns.name, hdns.pid), NodeExec(hcli.name, hcli.pid)
        for ex, host, addr in ((dns_ex, hdns, dns_if.cidr),
                               (cli_ex, hcli, f"{plane.node.gateway}/{dns_if.network.prefixlen}")):
            ex.check(["ip", "addr", "flush", "dev", f"{host.name}-eth0"])
            ex.check(["ip", "addr", "add", addr, "dev", f"{host.name}-eth0"])
            ex.check(["ip", "link", "set", f"{host.name}-eth0", "up"])
            ex.check(["ip", "link", "set", "lo", "up"])
        started = True
        t0 = time.monotonic()
        plane.start(dns_ex)
        print(f"\nDNS plane up in {time.monotonic() - t0:.2f}s ({len(plane.zone_names)} zones)")
        yield DnsLab(plane, dns_ex, cli_ex, ids, tmp)
    finally:
        pids = [d.pid() for d in plane.daemons()] if started else []
        if started:
            plane.stop()
        shell_pids = [h.pid for h in hosts]
        net.stop()
        leftovers = [p for p in pids if p is not None and proc_comm(p) in ("named", "unbound")]
        leftovers += [p for p in shell_pids if proc_comm(p) is not None]
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True,
                               text=True).stdout
        assert not leftovers, f"processes left behind: {leftovers}"
        assert f"zd{tag}-eth0" not in links and f"zc{tag}-eth0" not in links


def tsig(lab: DnsLab, who: str) -> Path:
    return lab.plane.tsig_path(lab.ids[who].name)


def test_ad_flag_on_key_address_and_ptr(lab: DnsLab) -> None:
    for args, rtype in ((["_flatarch.mn1.example", "TLSA"], "TLSA"),
                        (["mn1.example", "A"], "A"),
                        (["-x", "10.64.0.1"], "PTR")):
        status, flags, answer = lab.dig(*args)
        assert status == "NOERROR", (args, status)
        assert " ad" in flags, f"no AD bit for {args}: {flags}"
        types = {ln.split()[3] for ln in answer}
        assert {rtype, "RRSIG"} <= types, answer


def test_published_keys_resolve_validated(lab: DnsLab) -> None:
    for who in ("mn1", "mn2", "ar1", "ha"):
        ident = lab.ids[who]
        got = lab.agent_json("key", ident.name)
        assert isinstance(got, dict)
        assert got["suite"] == ident.suite.name and got["spki"] == ident.spki.hex()
        if ident.nonce is not None:
            assert got["nonce"] == ident.nonce.hex()
            assert got["nonce_expires"] == ident.nonce_expires
        else:
            assert got["nonce"] is None
    res = lab.agent("key", "nobody.example")
    assert res.returncode == 2
    assert "KeyResolutionError" in res.stderr and "NXDOMAIN" in res.stderr


def test_wrong_or_missing_tsig_is_refused(lab: DnsLab) -> None:
    forged = lab.tmp / "forged.json"
    forged.write_text(json.dumps({"name": "mn1.example", "algorithm": "hmac-sha256",
                                  "secret": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}))
    attempts = {
        "unsigned": lab.update("update-addrs", None, "mn1.example", "10.66.6.6"),
        "other MN's key": lab.update("update-addrs", tsig(lab, "mn2"), "mn1.example",
                                     "10.66.6.6"),
        "forged secret": lab.update("update-addrs", forged, "mn1.example", "10.66.6.6"),
        "AR outside its pool": lab.update("update-ptr", tsig(lab, "ar2"), "10.64.0.10",
                                          "mn2.example"),
        "MN writing a PTR": lab.update("update-ptr", tsig(lab, "mn1"), "10.64.0.10",
                                       "mn1.example"),
    }
    for what, res in attempts.items():
        assert res.returncode == 2, f"{what} was accepted"
        assert "DnsUpdateRefused" in res.stderr, (what, res.stderr)
    assert "REFUSED" in attempts["unsigned"].stderr
    assert "REFUSED" in attempts["other MN's key"].stderr
    assert "TSIG" in attempts["forged secret"].stderr
    # Nothing changed at the primary.
    assert [ln.split()[-1] for ln in lab.dig("mn1.example", "A", via_named=True)[2]
            if ln.split()[3] == "A"] == ["10.64.0.10"]
    # The provisioned PTR (mn1 was assigned 10.64.0.10 by ar1) still names mn1 only.
    status, _, answer = lab.dig("-x", "10.64.0.10", via_named=True)
    assert status == "NOERROR"
    assert [ln.split()[-1] for ln in answer if ln.split()[3] == "PTR"] == ["mn1.example."]


def test_newest_address_first_and_reverse_check(lab: DnsLab) -> None:
    # mn1 got 10.64.0.10 from ar1, then moves to ar2 and gets 10.64.1.30 (draft 2.3).
    assert lab.update("update-ptr", tsig(lab, "ar1"), "10.64.0.10", "mn1.example").returncode == 0
    assert lab.update("update-ptr", tsig(lab, "ar2"), "10.64.1.30", "mn1.example").returncode == 0
    res = lab.update("update-addrs", tsig(lab, "mn1"), "mn1.example", "10.64.1.30", "10.64.0.10")
    assert res.returncode == 0, res.stderr
    want = ["10.64.1.30", "10.64.0.10"]  # numerically reversed: the order is not DNS's own
    wait_until(lambda: lab.agent_json("addrs", "mn1.example") == want, 3 * RECORD_TTL + 5,
               "mn1's addresses newest first")
    # The raw A answer is deterministic too (BIND order none, Unbound no round-robin).
    firsts = {tuple(ln.split()[-1] for ln in lab.dig("mn1.example", "A")[2]
                    if ln.split()[3] == "A") for _ in range(3)}
    assert len(firsts) == 1
    # Draft 2.2: the target AR checks each address against the ISP's reverse zone.
    for addr in want:
        def reverse_ok(a: str = addr) -> bool:
            return lab.agent("check", "mn1.example", a).returncode == 0

        wait_until(reverse_ok, 2 * RECORD_TTL + 5, f"PTR {addr} -> mn1.example")
    res = lab.agent("check", "mn2.example", "10.64.1.30")
    assert res.returncode == 2 and "DnsReverseMismatch" in res.stderr


def test_key_and_nonce_rollover_through_dns(lab: DnsLab) -> None:
    new_key = p256()
    t0 = time.monotonic()
    res = lab.update("update-key", tsig(lab, "mn1"), "mn1.example", new_key.hex())
    assert res.returncode == 0, res.stderr
    new_nonce = os.urandom(16)
    res = lab.update("update-nonce", tsig(lab, "ar1"), "ar1.isp.test", new_nonce.hex(),
                     str(NONCE_EXPIRES + 60))
    assert res.returncode == 0, res.stderr

    def rolled() -> bool:
        mn = lab.agent_json("key", "mn1.example")
        ar = lab.agent_json("key", "ar1.isp.test")
        assert isinstance(mn, dict) and isinstance(ar, dict)
        return bool(mn["spki"] == new_key.hex() and ar["nonce"] == new_nonce.hex())

    wait_until(rolled, 3 * RECORD_TTL + 5, "the rolled key and nonce to resolve")
    print(f"\nrollover visible through Unbound after {time.monotonic() - t0:.1f}s "
          f"(record TTL {RECORD_TTL}s)")
    # An MN cannot roll an AR's key.
    res = lab.update("update-key", tsig(lab, "mn1"), "ar1.isp.test", new_key.hex())
    assert res.returncode == 2 and "REFUSED" in res.stderr


def _snapshot_zone(lab: DnsLab, zone: str) -> dns.zone.Zone:
    out = lab.dns.check(["dig", "@127.0.0.1", "-p", str(lab.plane.update_port), "+onesoa",
                         zone, "AXFR"])
    return dns.zone.from_text(out, origin=zone + ".", relativize=False)


def _tampered(zone: dns.zone.Zone, how: str, evil_spki: bytes) -> str:
    if how == "unsigned":
        strip_dnssec(zone)
    else:
        # The signatures stay; the data they cover does not (an attacker's key, a new address).
        assert zone.origin is not None
        key_owner = dns.name.from_text("_flatarch." + zone.origin.to_text())
        zone.replace_rdataset(key_owner, dns.rdataset.from_text(
            "IN", "TLSA", 5, f"3 1 0 {evil_spki.hex()}"))
        zone.replace_rdataset(zone.origin, dns.rdataset.from_text("IN", "A", 5, "10.66.6.6"))
    return zone.to_text(relativize=False)


@pytest.mark.parametrize("how", ["changed", "unsigned"])
def test_tampered_zone_fails_closed(lab: DnsLab, how: str) -> None:
    name = lab.ids["mn3"].name
    good = lab.agent_json("key", name)
    assert isinstance(good, dict) and good["spki"] == lab.ids["mn3"].spki.hex()
    evil = p256()
    lab.plane.serve_verbatim(name, _tampered(_snapshot_zone(lab, name), how, evil))
    try:
        lab.plane.restart_named(lab.dns)
        lab.plane.flush(name)
        if how == "changed":
            # BIND really serves the attacker's key; only validation stands in the way.
            served = lab.dig(f"_flatarch.{name}", "TLSA", via_named=True)[2]
            assert any(evil.hex().upper()[:40] in ln.replace(" ", "") for ln in served)
        status, flags, answer = lab.dig(f"_flatarch.{name}", "TLSA")
        assert status == "SERVFAIL" and answer == []
        assert lab.dig(name, "A")[0] == "SERVFAIL"
        res = lab.agent("key", name)
        assert res.returncode == 2
        assert "KeyResolutionError" in res.stderr and "SERVFAIL" in res.stderr
        assert "DNSSEC" in res.stderr, res.stderr
        reasons = lab.plane.validation_failures(f"_flatarch.{name}")
        expect = "signature crypto failed" if how == "changed" else "No DNSKEY"
        assert any(expect in r for r in reasons), reasons
        print(f"\n[{how}] {res.stderr.strip()}\n[{how}] unbound: {reasons[-1]}")
    finally:
        lab.plane.serve_verbatim(name, None)
        lab.plane.restart_named(lab.dns)
        lab.plane.flush(name)
    wait_until(lambda: lab.agent("key", name).returncode == 0, 15,
               f"{name} to validate again once the genuine zone is back")


def test_bench_resolution(lab: DnsLab) -> None:
    result = lab.plane.bench_resolution(lab.client, ["mn2.example", "ar2.isp.test"], rounds=20)
    (lab.tmp / "bench.json").write_text(json.dumps(result))
    print(f"\nresolution latency: {json.dumps(result)}")
    assert percentile(result["cold_ms"], 0.5) > percentile(result["cached_ms"], 0.5) > 0
