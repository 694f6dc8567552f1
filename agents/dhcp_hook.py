"""udhcpc's event script (rendered as configs/dhcp/udhcpc.hook.j2): passes the event and the
lease's variables to the MN agent's control socket and waits until the agent has acted.

udhcpc runs the script with the event name as its argument and the lease in its environment.
"""

from __future__ import annotations

import os
import sys

from agents import control

# The variables udhcpc 1.35 exports that the MN agent uses; opt224 is the Home Agent option.
FIELDS = ("ip", "subnet", "router", "serverid", "lease", "dns", "opt224", "message")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("agents.dhcp_hook: udhcpc passes the event as the first argument", file=sys.stderr)
        return 2
    sock_path = os.environ.get("FLATARCH_MN_SOCK")
    serial = os.environ.get("FLATARCH_LEASE_SERIAL")
    if not sock_path or not serial:
        print("agents.dhcp_hook: not started by the MN agent (no FLATARCH_MN_SOCK)",
              file=sys.stderr)
        return 2
    req = {"cmd": "dhcp", "event": args[0], "serial": int(serial),
           "env": {k: os.environ[k] for k in FIELDS if k in os.environ}}
    try:
        answer = control.request(sock_path, req, timeout=15)
    except control.ControlError as exc:
        print(f"agents.dhcp_hook: MN {exc}", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"agents.dhcp_hook: {args[0]}: {answer.get('error')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
