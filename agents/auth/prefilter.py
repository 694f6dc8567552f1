"""The AR's kernel pre-filter for the authentication port (issue 19, defect 5): the plain
data configs/nft/ar.nft.j2 renders into nftables rules, so that datagrams that cannot succeed
and floods from one source or one /24 are dropped before they reach the socket.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .messages import (
    AUTH_MAX_LEN,
    AUTH_MIN_LEN,
    REMSK_ACK_LEN,
    REMSK_LEN,
    VERSION,
    MsgType,
)

UDP_HEADER = 8  # nft's `udp length` counts the header


@dataclass(frozen=True)
class PrefilterRates:
    """Meter rates for sources that are not yet authenticated on the access link.

    An MN sends one AUTH per attachment, up to three with a cookie round and a retry: a few a
    second per host is plenty, and what the flood gets through per spoofed host is what the
    Python service must absorb. A /24 carries many MNs, so it gets more.
    """

    host_per_s: int = 2
    host_burst: int = 6
    net_per_s: int = 400
    net_burst: int = 800
    table_size: int = 65536
    timeout_s: int = 30


def prefilter_data(rates: PrefilterRates | None = None) -> dict[str, Any]:
    """The template's `auth_filter` block: message sizes by type, the version, the meters."""
    return {
        "version": VERSION,
        # (type, lowest and highest UDP length) of every message an access link may send.
        "types": [
            {"type": int(MsgType.AUTH), "min": AUTH_MIN_LEN + UDP_HEADER,
             "max": AUTH_MAX_LEN + UDP_HEADER},
            {"type": int(MsgType.REMSK), "min": REMSK_LEN + UDP_HEADER,
             "max": REMSK_LEN + UDP_HEADER},
            {"type": int(MsgType.REMSK_ACK), "min": REMSK_ACK_LEN + UDP_HEADER,
             "max": REMSK_ACK_LEN + UDP_HEADER},
        ],
        **asdict(rates or PrefilterRates()),
    }


__all__ = ["PrefilterRates", "UDP_HEADER", "prefilter_data"]
