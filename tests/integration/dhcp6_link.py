"""One access link in a private network namespace (run under ``unshare -n`` by
tests/integration/test_dhcp6_client.py): Debian's ``dhclient -6 -P`` on one end, the AR's
DHCPv6 service (agents/dhcpd6.py) on the other; prints what happened as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

from agents import dhcp6
from agents.dhcpd import client_identity
from agents.dhcpd6 import Binding6, Dhcp6Server, Dhcp6Service, Server6Config
from topologies.lab.daemons import wait_until

MN_IF, AR_IF = "mn1-acc", "ar1-acc"
MN_MAC = "02:fa:00:00:00:03"
MN_LL = IPv6Address("fe80::fa:ff:fe00:3")  # EUI-64 of MN_MAC
MN = "mn1.example"
VALID_S = 4  # T1 2 s: dhclient renews within the test
HOOK = """#!/bin/sh
echo "$reason $new_ip6_prefix $old_ip6_prefix" >> {log}
"""


class Hooks:
    """The AR around the server: the station with MN_LL authenticated as the DUID's MN (the
    session proof is the link's business, agents/linkproof.py, not this test's)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def identity_on_link(self, peer: IPv6Address, ifindex: int,
                         duid: bytes | None) -> str | None:
        return client_identity(dhcp6.duid_text(duid)) if peer == MN_LL else None

    def identity_of_prefix(self, prefix: IPv6Network, ifindex: int) -> str | None:
        return None

    def owner_of(self, prefix: IPv6Network) -> IPv6Address | None:
        return None

    def bound(self, binding: Binding6, ifindex: int, renewal: bool) -> None:
        self.events.append(("renewed" if renewal else "bound", str(binding.prefix)))

    def ended(self, binding: Binding6, reason: str) -> None:
        self.events.append((reason, str(binding.prefix)))

    def relayed(self, prefix: IPv6Network, kind: str, expires: float | None) -> None: ...


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def link_up() -> None:
    ip("link", "set", "lo", "up")
    ip("link", "add", MN_IF, "type", "veth", "peer", "name", AR_IF)
    ip("link", "set", MN_IF, "address", MN_MAC)
    for name in (MN_IF, AR_IF):
        # The plan keeps addresses unique (docs/ipv6.md): no DAD, no tentative link-local.
        Path(f"/proc/sys/net/ipv6/conf/{name}/accept_dad").write_text("0\n")
        ip("link", "set", name, "up")

    def usable() -> bool:
        out = subprocess.run(["ip", "-6", "-o", "addr", "show", "dev", MN_IF, "scope", "link"],
                             capture_output=True, text=True).stdout
        return str(MN_LL) in out and "tentative" not in out

    wait_until(usable, 5, f"{MN_LL} on {MN_IF}")


def main() -> None:
    link_up()
    hooks = Hooks()
    access = socket.if_nametoindex(AR_IF)
    config = Server6Config(dhcp6.server_duid("ar1.isp.test"), IPv6Address("2001:db8:ff::7"),
                           IPv6Network("2001:db8:4000:100::/56"), 64, 1, 255, VALID_S, 2,
                           b"ar1.isp.test/ar1-acc")
    server = Dhcp6Server(config, hooks, lambda ifindex: ifindex == access)
    loop = asyncio.new_event_loop()
    service = Dhcp6Service(server, (access,))
    loop.run_until_complete(service.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    with tempfile.TemporaryDirectory(prefix="dhcp6-") as tmp:
        run = Path(tmp)
        lease, pid, log, hook = (run / "dhclient6.leases", run / "dhclient6.pid",
                                 run / "hook.log", run / "hook.sh")
        # dhclient sends the lease file's default DUID: the lab's DUID-EN for mn1, serial 1.
        duid = dhcp6.make_duid(MN, 1)
        lease.write_text('default-duid "' + "".join(f"\\{b:03o}" for b in duid) + '";\n')
        hook.write_text(HOOK.format(log=log))
        hook.chmod(0o755)
        log.touch()
        common = ["-6", "-P", "-v", "-lf", str(lease), "-pf", str(pid), "-sf", str(hook)]
        with (run / "dhclient.out").open("wb") as out:
            proc = subprocess.Popen(["dhclient", *common, "-d", MN_IF], stdout=out, stderr=out)
        try:
            reasons = lambda: log.read_text().split()  # noqa: E731
            wait_until(lambda: "BOUND6" in reasons(), 15, "dhclient's BOUND6")
            wait_until(lambda: "RENEW6" in reasons(), 15, "dhclient's RENEW6")
            # dhclient -r stops the client named by the pid file and releases its prefix.
            subprocess.run(["dhclient", *common, "-r", MN_IF], check=True, timeout=15,
                           capture_output=True)
            wait_until(lambda: any(e[0] == "release" for e in hooks.events), 10,
                       "the release at the server")
            wait_until(lambda: proc.poll() is not None, 10, "dhclient to stop")
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(5)
            hook_log = log.read_text().splitlines()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    print(json.dumps({"events": hooks.events, "hook": hook_log,
                      "counters": server.counters, "bindings": len(server.bindings)}))


if __name__ == "__main__":
    main()
