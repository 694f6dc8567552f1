"""A stand-in for Kathará's network plugin, for tests on machines without registry access
only (real users get the upstream kathara/katharanp_vde): a Docker network driver that
makes one Linux bridge per network (collision domain) and one veth per endpoint.

It runs inside a managed Docker plugin (network type host) and answers Docker's network
driver protocol on /run/docker/plugins/katharanp.sock; standard library only.
"""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import subprocess
from typing import Any

SOCKET = "/run/docker/plugins/katharanp.sock"
HOST_END_MTU = 9000  # above any MTU a device sets on its end


def bridge(network_id: str) -> str:
    return f"kt{network_id[:12]}"


def veth(endpoint_id: str) -> tuple[str, str]:
    """(the bridge's end, the container's end) of one endpoint."""
    return f"ke{endpoint_id[:12]}", f"kc{endpoint_id[:12]}"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def quiet(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True)


def handle(path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path == "/Plugin.Activate":
        return {"Implements": ["NetworkDriver"]}
    if path == "/NetworkDriver.GetCapabilities":
        return {"Scope": "local", "ConnectivityScope": "local"}
    if path == "/NetworkDriver.CreateNetwork":
        name = bridge(body["NetworkID"])
        ip("link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        ip("link", "set", name, "up")
        return {}
    if path == "/NetworkDriver.DeleteNetwork":
        quiet("link", "del", bridge(body["NetworkID"]))
        return {}
    if path == "/NetworkDriver.Join":
        host_end, container_end = veth(body["EndpointID"])
        # The host end takes any frame its device sends: the devices set their own MTUs
        # (1600 on the backbone, for the VXLAN redirect), and a host end left at 1500 drops
        # every larger frame. ar7's and ar8's BGP sessions then expired every 10 s: their
        # keepalives were stuck behind a full-size UPDATE segment that never got through.
        ip("link", "add", host_end, "mtu", str(HOST_END_MTU), "type", "veth", "peer", "name",
           container_end)
        ip("link", "set", host_end, "master", bridge(body["NetworkID"]))
        ip("link", "set", host_end, "up")
        # No gateway service: Docker would otherwise add a docker_gwbridge leg to every
        # device, in the host's namespace.
        return {"InterfaceName": {"SrcName": container_end, "DstPrefix": "eth"},
                "DisableGatewayService": True}
    if path == "/NetworkDriver.Leave":
        quiet("link", "del", veth(body["EndpointID"])[0])
        return {}
    if path == "/NetworkDriver.EndpointOperInfo":
        return {"Value": {}}
    # CreateEndpoint, DeleteEndpoint, Discover*, *ExternalConnectivity, Allocate/FreeNetwork
    return {}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}") or {}
            out: dict[str, Any] = handle(self.path, body)
            code = 200
        except Exception as exc:  # noqa: BLE001 - Docker reads the error from the reply
            out, code = {"Err": str(exc)}, 500
        data = json.dumps(out).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def address_string(self) -> str:
        return "docker"


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main() -> None:
    os.makedirs(os.path.dirname(SOCKET), exist_ok=True)
    if os.path.exists(SOCKET):
        os.unlink(SOCKET)
    with Server(SOCKET, Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
