"""The DHCP clients' event script (rendered as configs/dhcp/udhcpc.hook.j2 and, for DHCPv6,
configs/dhcp/dhclient6.hook.j2): passes the event and the lease's variables to the MN agent's
control socket and waits until the agent has acted.

udhcpc runs the script with the event name as its argument and the lease in its environment;
dhclient -6 runs it with no argument and the event in ``reason``.
"""

from __future__ import annotations

import os
import sys

from agents import control

# The variables udhcpc 1.35 exports that the MN agent uses; opt224 is the Home Agent option.
FIELDS = ("ip", "subnet", "router", "serverid", "lease", "dns", "opt224", "message")
# dhclient names its event in this variable, lowercase (dhclient-script(8)).
REASON = "reason"
# What dhclient 4.4 exports for a delegated prefix that the MN agent uses.
# Set by a process that holds many MNs' leases: which MN this client is for.
MN_NAME = "FLATARCH_MN_NAME"
FIELDS6 = ("new_ip6_prefix", "old_ip6_prefix", "new_max_life", "new_preferred_life",
           "new_renew", "new_rebind")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    six = not args and REASON in os.environ
    if not args and not six:
        print("agents.dhcp_hook: udhcpc passes the event as the first argument, dhclient -6 "
              "in $reason", file=sys.stderr)
        return 2
    sock_path = os.environ.get("FLATARCH_MN_SOCK")
    serial = os.environ.get("FLATARCH_LEASE_SERIAL")
    if not sock_path or not serial:
        print("agents.dhcp_hook: not started by the MN agent (no FLATARCH_MN_SOCK)",
              file=sys.stderr)
        return 2
    event = os.environ.get(REASON, "") if six else args[0]
    req: dict[str, object] = {
        "cmd": "dhcp6" if six else "dhcp", "event": event, "serial": int(serial),
        "env": {k: os.environ[k] for k in (FIELDS6 if six else FIELDS) if k in os.environ}}
    mn = os.environ.get(MN_NAME)
    if mn:
        req["mn"] = mn  # one process for many MNs (agents/population.py) says whose
    try:
        answer = control.request(sock_path, req, timeout=15)
    except control.ControlError as exc:
        print(f"agents.dhcp_hook: MN {exc}", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"agents.dhcp_hook: {event}: {answer.get('error')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
