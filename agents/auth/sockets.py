"""Socket options the agents share: a deep receive buffer for a socket that takes bursts.

Standard library only: the auth library and the DNS client (agents/dns.py) use it.
"""

from __future__ import annotations

import contextlib
import socket

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; the module lacks the name
# What a socket that takes bursts asks for: the AR's AUTH socket and its resolver channel.
DEEP_RCVBUF = 4 << 20


def deep_receive_buffer(sock: socket.socket, size: int) -> None:
    """Ask for a receive buffer of ``size`` bytes. As root (CAP_NET_ADMIN) past rmem_max;
    otherwise as much as rmem_max allows. The kernel doubles what it grants, for its own
    bookkeeping; a socket that gets less is still usable, so nothing here raises."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
