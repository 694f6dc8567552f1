"""The MN agent's control protocol, client side: one JSON request per line on a Unix
socket, one JSON answer per line. The lab's radio and the udhcpc event script both use it.

Standard library only: the event script imports it with site-packages skipped (-S).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


class ControlError(OSError):
    """The agent could not be reached, or closed without answering."""


def request(path: Path | str, req: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            s.sendall(json.dumps(req).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError as exc:
            raise ControlError(f"agent at {path}: {exc}") from None
    if not buf:
        raise ControlError(f"agent at {path} closed without answering")
    try:
        answer = json.loads(buf)
    except ValueError as exc:
        raise ControlError(f"agent at {path} answered no JSON: {exc}") from None
    if not isinstance(answer, dict):
        raise ControlError(f"agent at {path} answered {type(answer).__name__}, not an object")
    return answer
