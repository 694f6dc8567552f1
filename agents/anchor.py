"""The anchored baseline's processes (draft Figure 1): `mme` (with the P-GW's bearer switch),
`hss` (the home subscriber server; its distance is the lab's home link), `enb` (the S1
relay on an AR) and `ue` (the MN's side, driven over a control socket). docs/baseline.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, TextIO, cast

from agents import epc
from agents.epc import Kind, Message

log = logging.getLogger("anchor")


class EventLog:
    """One JSON object per line, flushed at once: the scenario reads it while we run."""

    def __init__(self, path: str | None) -> None:
        self._out: TextIO | None = open(path, "a", buffering=1) if path else None  # noqa: SIM115

    def __call__(self, ev: str, **kw: Any) -> None:
        if self._out is not None:
            self._out.write(json.dumps({"t": time.time(), "ev": ev, **kw}, sort_keys=True) + "\n")


def _load(path: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(Path(path).read_text())
    return doc


# --------------------------------------------------------------------------- HSS


class Hss(asyncio.DatagramProtocol):
    """Answers AUTH_INFO_REQUEST with a fresh vector at once: the round trip to the home
    network is in the packet path (the topology's `home:` distance, topologies/lab/shaping.py),
    not in this process."""

    def __init__(self, keys: dict[str, bytes], events: EventLog) -> None:
        self.keys = keys
        self.events = events
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = epc.decode(data)
        except epc.EpcError as exc:
            self.events("malformed", error=str(exc))
            return
        if msg.kind is not Kind.AUTH_INFO_REQUEST:
            return
        self.events("rx", kind=msg.kind.name, imsi=msg.imsi, seq=msg.seq)
        key = self.keys.get(msg.imsi)
        if key is None:
            return  # an unknown subscriber gets no answer; the MME times out and rejects
        rand = os.urandom(epc.RAND_LEN)
        answer = epc.encode(Message(Kind.AUTH_INFO_ANSWER, msg.seq, imsi=msg.imsi, rand=rand,
                                    res=epc.response(key, rand)))
        self._send(answer, addr, msg)

    def _send(self, answer: bytes, addr: tuple[str, int], msg: Message) -> None:
        if self.transport is not None:
            self.transport.sendto(answer, addr)
            self.events("tx", kind="AUTH_INFO_ANSWER", imsi=msg.imsi, seq=msg.seq)


# --------------------------------------------------------------------------- MME


@dataclass
class Procedure:
    imsi: str
    seq: int
    cell: str
    enb: tuple[str, int]
    ue: tuple[IPv4Address, int]
    t_start: float
    vector: asyncio.Future[Message]
    answer: asyncio.Future[Message]
    counts: dict[str, int] = field(default_factory=lambda: {"s1": 0, "s6a": 0})


class Bearers:
    """The anchor's per-MN state: a /32 route into the tunnel toward the serving AR (the
    role of a GTP bearer's TEID). Switching it is the whole data-plane side of a handoff."""

    def __init__(self, dev: str) -> None:
        # The flat AR's own rtnetlink client (agents/netlink.py): both architectures pay the
        # same price for a route change.
        from agents.netlink import Netlink

        self._nl = Netlink()
        oif = self._nl.link_index(dev)
        if oif is None:
            raise SystemExit(f"mme: no tunnel device {dev}")
        self.oif = oif

    def switch(self, address: IPv4Address, endpoint: str,
               prefix6: IPv6Network | None = None, endpoint6: str | None = None) -> None:
        """Both of a session's bearers, the IPv4 /32 and a dual-stack session's /64 (via the
        AR's tunnel link-local), toward the serving AR."""
        self._nl.route_replace(dst=IPv4Network(f"{address}/32"), oif=self.oif,
                               gateway=IPv4Address(endpoint))
        if prefix6 is not None and endpoint6 is not None:
            self._nl.route_replace(dst=prefix6, oif=self.oif, gateway=IPv6Address(endpoint6))


class Mme(asyncio.DatagramProtocol):
    """Runs the attach/handover procedure for every UE that arrives at a cell: one round
    trip to the HSS, a challenge and response with the UE through the new eNB, then the
    bearer switch at the co-located anchor and the old eNB's context release."""

    def __init__(self, conf: dict[str, Any], events: EventLog, bearers: Bearers | None) -> None:
        self.cells: dict[str, dict[str, Any]] = conf["cells"]  # name -> endpoint, enb address
        self.subscribers: dict[str, IPv4Address] = {
            k: IPv4Address(v) for k, v in conf["subscribers"].items()}
        self.subscribers6: dict[str, IPv6Network] = {
            k: IPv6Network(v) for k, v in (conf.get("subscribers6") or {}).items()}
        self.hss = (str(conf["hss"]), int(conf["hss_port"]))
        self.timeout_s = float(conf.get("hss_timeout_s", 5.0))
        self.events = events
        self.bearers = bearers
        self.serving: dict[str, str] = {}  # imsi -> cell
        self.pending: dict[str, Procedure] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def _send(self, msg: Message, addr: tuple[str, int], iface: str,
              proc: Procedure | None, **extra: Any) -> None:
        assert self.transport is not None
        self.transport.sendto(epc.encode(msg), addr)
        if proc is not None:
            proc.counts[iface] += 1
        self.events("tx", kind=msg.kind.name, iface=iface, imsi=msg.imsi, seq=msg.seq, **extra)

    def _downlink(self, proc: Procedure, nas: Message) -> None:
        wrapped = Message(Kind.S1_DOWNLINK, nas.seq, cell=proc.cell, ue_addr=proc.ue[0],
                          ue_port=proc.ue[1], nas=epc.encode(nas))
        self._send(wrapped, proc.enb, "s1", proc, nas=nas.kind.name)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = epc.decode(data)
        except epc.EpcError as exc:
            self.events("malformed", error=str(exc), peer=addr[0])
            return
        if msg.kind is Kind.AUTH_INFO_ANSWER:
            self.events("rx", kind=msg.kind.name, iface="s6a", imsi=msg.imsi, seq=msg.seq)
            proc = self.pending.get(msg.imsi)
            if proc is not None and proc.seq == msg.seq and not proc.vector.done():
                proc.counts["s6a"] += 1
                proc.vector.set_result(msg)
            return
        if msg.kind is not Kind.S1_UPLINK or msg.ue_addr is None or msg.ue_port is None:
            return
        nas = epc.decode(msg.nas)
        self.events("rx", kind=nas.kind.name, iface="s1", imsi=nas.imsi, seq=nas.seq,
                    cell=msg.cell)
        if nas.kind is Kind.ATTACH_REQUEST:
            proc = Procedure(nas.imsi, nas.seq, msg.cell, addr, (msg.ue_addr, msg.ue_port),
                             time.time(), asyncio.get_running_loop().create_future(),
                             asyncio.get_running_loop().create_future())
            proc.counts["s1"] += 1
            old = self.pending.pop(nas.imsi, None)
            if old is not None:
                for fut in (old.vector, old.answer):
                    if not fut.done():
                        fut.cancel()
            self.pending[nas.imsi] = proc
            asyncio.get_running_loop().create_task(self._attach(proc))
        elif nas.kind is Kind.AUTH_RESPONSE:
            proc = self.pending.get(nas.imsi)
            if proc is not None and proc.seq == nas.seq and not proc.answer.done():
                proc.counts["s1"] += 1
                proc.answer.set_result(nas)

    def _reject(self, proc: Procedure, cause: int) -> None:
        self._downlink(proc, Message(Kind.ATTACH_REJECT, proc.seq, imsi=proc.imsi, cause=cause))
        self.events("procedure", imsi=proc.imsi, seq=proc.seq, cell=proc.cell, ok=False,
                    cause=cause, **proc.counts)

    async def _attach(self, proc: Procedure) -> None:
        try:
            await self._run(proc)
        except asyncio.CancelledError:
            self.events("superseded", imsi=proc.imsi, seq=proc.seq)
        finally:
            if self.pending.get(proc.imsi) is proc:
                del self.pending[proc.imsi]

    async def _run(self, proc: Procedure) -> None:
        address = self.subscribers.get(proc.imsi)
        if address is None:
            self._reject(proc, epc.CAUSE_UNKNOWN_SUBSCRIBER)
            return
        if proc.cell not in self.cells:
            self._reject(proc, epc.CAUSE_UNKNOWN_CELL)
            return
        # The round trip to the home network: every time, as the draft describes for a
        # symmetric-key system whose keys stay at home (docs/baseline.md says when LTE skips it).
        t_hss = time.time()
        self._send(Message(Kind.AUTH_INFO_REQUEST, proc.seq, imsi=proc.imsi), self.hss, "s6a",
                   proc)
        try:
            vector = await asyncio.wait_for(asyncio.shield(proc.vector), self.timeout_s)
        except TimeoutError:
            self._reject(proc, epc.CAUSE_HSS_UNREACHABLE)
            return
        t_vector = time.time()
        self._downlink(proc, Message(Kind.AUTH_REQUEST, proc.seq, imsi=proc.imsi,
                                     rand=vector.rand))
        try:
            reply = await asyncio.wait_for(asyncio.shield(proc.answer), self.timeout_s)
        except TimeoutError:
            self._reject(proc, epc.CAUSE_AUTH_FAILED)
            return
        if not reply.res or reply.res != vector.res:
            self._reject(proc, epc.CAUSE_AUTH_FAILED)
            return
        t_auth = time.time()
        previous = self.serving.get(proc.imsi)
        prefix6 = self.subscribers6.get(proc.imsi)
        cell = self.cells[proc.cell]
        if self.bearers is not None:
            self.bearers.switch(address, str(cell["endpoint"]), prefix6,
                                str(cell["endpoint6"]) if "endpoint6" in cell else None)
        t_bearer = time.time()
        self.serving[proc.imsi] = proc.cell
        self.events("bearer", imsi=proc.imsi, cell=proc.cell, previous=previous,
                    address=str(address), prefix6=str(prefix6) if prefix6 else None)
        if previous is not None and previous != proc.cell:
            old = self.cells[previous]
            self._send(Message(Kind.CONTEXT_RELEASE, proc.seq, imsi=proc.imsi, cell=previous),
                       (str(old["enb"]), epc.ENB_PORT), "s1", proc)
        self._downlink(proc, Message(Kind.ATTACH_ACCEPT, proc.seq, imsi=proc.imsi,
                                     cell=proc.cell, address=address, prefix6=prefix6))
        self.events("procedure", imsi=proc.imsi, seq=proc.seq, cell=proc.cell, ok=True,
                    previous=previous, home_round_trips=1, t_start=proc.t_start,
                    hss_ms=round((t_vector - t_hss) * 1000, 3),
                    auth_ms=round((t_auth - proc.t_start) * 1000, 3),
                    bearer_ms=round((t_bearer - t_auth) * 1000, 3), t_bearer=t_bearer,
                    **proc.counts)


# --------------------------------------------------------------------------- eNB


def run_enb(conf: dict[str, Any], events: EventLog) -> int:
    """The S1 relay on an AR: a UE's NAS goes up to the MME stamped with this cell; the MME's
    downlink NAS goes to the UE's address and port. It holds no per-UE state."""
    cell = str(conf["cell"])
    mme = (str(conf["mme"]), int(conf["mme_port"]))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", epc.ENB_PORT))
    stop = _stop_flag()
    while not stop:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if not ready:
            continue
        data, (host, port) = sock.recvfrom(epc.MAX_MESSAGE + 64)
        try:
            msg = epc.decode(data)
        except epc.EpcError as exc:
            events("malformed", error=str(exc), peer=host)
            continue
        if host == mme[0]:
            if msg.kind is Kind.S1_DOWNLINK and msg.ue_addr is not None and msg.ue_port:
                sock.sendto(msg.nas, (str(msg.ue_addr), msg.ue_port))
                events("relay_down", kind=epc.decode(msg.nas).kind.name, seq=msg.seq)
            elif msg.kind is Kind.CONTEXT_RELEASE:
                events("context_release", imsi=msg.imsi, seq=msg.seq)
            continue
        if msg.kind in (Kind.ATTACH_REQUEST, Kind.AUTH_RESPONSE):
            up = Message(Kind.S1_UPLINK, msg.seq, cell=cell, ue_addr=IPv4Address(host),
                         ue_port=port, nas=data)
            sock.sendto(epc.encode(up), mme)
            events("relay_up", kind=msg.kind.name, imsi=msg.imsi, seq=msg.seq)
    return 0


def _stop_flag() -> list[bool]:
    """A list that becomes truthy on SIGTERM or SIGINT (a loop condition)."""
    flag: list[bool] = []

    def handler(signum: int, frame: object) -> None:
        flag.append(True)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return flag


# --------------------------------------------------------------------------- UE


class Ue:
    """The MN's side: attach at whatever cell the radio joined, through that cell's eNB."""

    def __init__(self, conf: dict[str, Any], events: EventLog) -> None:
        self.imsi = str(conf["imsi"])
        self.key = bytes.fromhex(str(conf["key"]))
        self.address = str(conf["address"])
        self.enb = (str(conf["enb"]), int(conf.get("enb_port", epc.ENB_PORT)))
        self.timeout_s = float(conf.get("timeout_s", 3.0))
        self.attempts = int(conf.get("attempts", 3))
        self.events = events
        self.seq = int.from_bytes(os.urandom(2), "big")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.address, 0))

    def _await(self, kinds: set[Kind], seq: int, deadline: float) -> Message | None:
        while (left := deadline - time.time()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                return None
            data, _ = self.sock.recvfrom(epc.MAX_MESSAGE)
            try:
                msg = epc.decode(data)
            except epc.EpcError:
                continue
            if msg.kind in kinds and msg.seq == seq and msg.imsi == self.imsi:
                return msg
        return None

    def _step(self, msg: Message, wanted: Kind, air: dict[str, int]) -> Message | None:
        """Send one NAS message and wait for ``wanted`` or a reject with the same seq."""
        self.sock.sendto(epc.encode(msg), self.enb)
        air["tx"] += 1
        answer = self._await({wanted, Kind.ATTACH_REJECT}, msg.seq,
                             time.time() + self.timeout_s)
        if answer is not None:
            air["rx"] += 1
        return answer

    def attach(self) -> dict[str, Any]:
        t0 = time.time()
        air = {"tx": 0, "rx": 0}
        for attempt in range(1, self.attempts + 1):
            self.seq = (self.seq + 1) & 0xFFFFFFFF
            seq = self.seq
            t_sent = time.time()
            challenge = self._step(Message(Kind.ATTACH_REQUEST, seq, imsi=self.imsi),
                                   Kind.AUTH_REQUEST, air)
            if challenge is None:
                continue
            if challenge.kind is Kind.ATTACH_REJECT:
                return {"ok": False, "error": f"rejected, cause {challenge.cause}", **air}
            res = epc.response(self.key, challenge.rand)
            t_challenge = time.time()
            done = self._step(Message(Kind.AUTH_RESPONSE, seq, imsi=self.imsi, res=res),
                              Kind.ATTACH_ACCEPT, air)
            if done is None:
                continue
            if done.kind is Kind.ATTACH_REJECT:
                return {"ok": False, "error": f"rejected, cause {done.cause}", **air}
            t_done = time.time()
            self.events("attached", cell=done.cell, seq=seq, attempt=attempt)
            return {"ok": True, "cell": done.cell, "address": str(done.address),
                    "prefix6": str(done.prefix6) if done.prefix6 is not None else None,
                    "attempts": attempt, "t_sent": t_sent, "t_challenge": t_challenge,
                    "t_accept": t_done, "attach_ms": round((t_done - t0) * 1000, 3),
                    "air_tx": air["tx"], "air_rx": air["rx"]}
        return {"ok": False, "error": f"no answer after {self.attempts} attempts", **air}


def run_ue(conf: dict[str, Any], events: EventLog) -> int:
    ue = Ue(conf, events)
    path = Path(str(conf["control"]))
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    stop = _stop_flag()
    try:
        while not stop:
            ready, _, _ = select.select([server], [], [], 0.2)
            if not ready:
                continue
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5.0)
                buf = b""
                with contextlib.suppress(OSError):
                    while not buf.endswith(b"\n"):
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        buf += chunk
                try:
                    req = json.loads(buf or b"{}")
                    answer = ue.attach() if req.get("cmd") == "attach" else {
                        "ok": False, "error": f"unknown command {req.get('cmd')!r}"}
                except (ValueError, OSError) as exc:
                    answer = {"ok": False, "error": str(exc)}
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(answer).encode() + b"\n")
    finally:
        path.unlink(missing_ok=True)
    return 0


# --------------------------------------------------------------------------- main


async def _serve(protocol: asyncio.DatagramProtocol, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def finish() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, finish)
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol,
                                                       local_addr=("0.0.0.0", port))
    try:
        await stop
    finally:
        transport.close()


# What each role reads from its configuration, with the type it must have: the dry-run.
REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "hss": {"port": int, "subscribers": dict},
    "mme": {"port": int, "cells": dict, "subscribers": dict, "hss": str, "hss_port": int},
    "enb": {"cell": str, "mme": str, "mme_port": int},
    "ue": {"imsi": str, "key": str, "address": str, "enb": str, "control": str},
}


def check_config(role: str, path: str) -> int:
    """The role's configuration has every field it reads, each of the right type."""
    try:
        conf = _load(path)
    except (OSError, ValueError) as exc:
        print(f"agents.anchor: {path}: {exc}", file=sys.stderr)
        return 1
    for key, tp in REQUIRED[role].items():
        if key not in conf:
            print(f"agents.anchor: {path}: {key}: missing", file=sys.stderr)
            return 1
        if isinstance(conf[key], bool) or not isinstance(conf[key], tp):
            print(f"agents.anchor: {path}: {key}: wrong type {type(conf[key]).__name__}",
                  file=sys.stderr)
            return 1
    six = conf.get("subscribers6") or {}
    try:
        if not isinstance(six, dict):
            raise ValueError("expected an object of IMSI -> IPv6 prefix")
        for imsi, prefix in six.items():
            IPv6Network(str(prefix))
            if imsi not in conf.get("subscribers", {}):
                raise ValueError(f"{imsi}: an IPv6 prefix but no IPv4 address")
    except ValueError as exc:
        print(f"agents.anchor: {path}: subscribers6: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="agents.anchor", description=__doc__)
    ap.add_argument("role", choices=["mme", "hss", "enb", "ue"])
    ap.add_argument("--config", required=True)
    ap.add_argument("--events")
    ap.add_argument("--check", action="store_true", help="validate the config, then exit")
    args = ap.parse_args(argv)
    if args.check:
        return check_config(args.role, args.config)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"{args.role} %(levelname)s %(message)s")
    conf = _load(args.config)
    events = EventLog(args.events)
    events("start", role=args.role, pid=os.getpid())
    if args.role == "hss":
        keys = {k: bytes.fromhex(v) for k, v in conf["subscribers"].items()}
        asyncio.run(_serve(Hss(keys, events), int(conf["port"])))
    elif args.role == "mme":
        bearers = Bearers(str(conf["tunnel_dev"])) if conf.get("tunnel_dev") else None
        asyncio.run(_serve(Mme(conf, events, bearers), int(conf["port"])))
    elif args.role == "enb":
        return run_enb(conf, events)
    else:
        return run_ue(conf, events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
