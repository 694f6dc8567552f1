"""The agents' control protocol: one JSON request per line on a Unix socket, one JSON
answer per line. The MN and AR agents serve it; the lab's radio, the lab itself and the
udhcpc event script are its clients.

Standard library only: the event script imports it with site-packages skipped (-S). It
runs once per DHCP event, so the client side imports no asyncio (38 ms of a 53-ms import
here; a thousand DHCP MNs run the script tens of times a second).
"""

from __future__ import annotations

import json
import socket
import typing

if typing.TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable
    from pathlib import Path
    from typing import Any

    Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


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


async def start_control(path: Path, handler: Handler) -> asyncio.AbstractServer:
    """Serve ``handler`` on a Unix socket at ``path``; a bad request gets an error answer,
    never an exception in the agent."""
    import asyncio

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise TypeError(f"expected an object, got {type(req).__name__}")
                    answer = await handler(req)
                except (ValueError, KeyError, TypeError) as exc:
                    answer = {"ok": False, "error": f"bad request: {exc}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    path.unlink(missing_ok=True)
    return await asyncio.start_unix_server(serve, path=str(path))
