"""The MME and HSS of the anchored baseline (agents/anchor.py) over loopback UDP, without a
lab: a handoff costs one HSS round trip (delayed by the home distance), a challenge through
the eNB, and a context release to the previous cell; a wrong response is rejected."""

from __future__ import annotations

import asyncio
import json
import socket
from ipaddress import IPv4Address
from pathlib import Path

from agents import anchor, epc
from agents.epc import Kind, Message

KEY = bytes(range(16))
UE = (IPv4Address("100.64.0.10"), 40000)


async def _procedure(tmp: Path, responses: list[bytes | None]) -> list[dict[str, object]]:
    loop = asyncio.get_running_loop()
    events = anchor.EventLog(str(tmp / "mme.events"))
    hss_t, _ = await loop.create_datagram_endpoint(
        lambda: anchor.Hss({"mn1": KEY}, anchor.EventLog(None)),
        local_addr=("127.0.0.1", 0))
    hss_port = hss_t.get_extra_info("sockname")[1]
    conf = {"cells": {"ar1": {"endpoint": "169.254.4.2", "enb": "127.0.0.1"},
                      "ar3": {"endpoint": "169.254.4.4", "enb": "127.0.0.1"}},
            "subscribers": {"mn1": "100.64.0.10"}, "hss": "127.0.0.1", "hss_port": hss_port}
    mme_t, _ = await loop.create_datagram_endpoint(
        lambda: anchor.Mme(conf, events, None), local_addr=("127.0.0.1", 0))
    mme = mme_t.get_extra_info("sockname")
    enb = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    enb.bind(("127.0.0.1", 0))
    enb.setblocking(False)
    got: list[Message] = []
    try:
        for seq, (cell, res) in enumerate(zip(["ar1", "ar3"], responses, strict=True), 1):
            nas = epc.encode(Message(Kind.ATTACH_REQUEST, seq, imsi="mn1"))
            await loop.sock_sendto(enb, epc.encode(Message(
                Kind.S1_UPLINK, seq, cell=cell, ue_addr=UE[0], ue_port=UE[1], nas=nas)), mme)
            down = epc.decode(await asyncio.wait_for(loop.sock_recv(enb, 2048), 2))
            challenge = epc.decode(down.nas)
            assert challenge.kind is Kind.AUTH_REQUEST and (down.ue_addr, down.ue_port) == UE
            answer = res if res is not None else epc.response(KEY, challenge.rand)
            reply = epc.encode(Message(Kind.AUTH_RESPONSE, seq, imsi="mn1", res=answer))
            await loop.sock_sendto(enb, epc.encode(Message(
                Kind.S1_UPLINK, seq, cell=cell, ue_addr=UE[0], ue_port=UE[1], nas=reply)), mme)
            got.append(epc.decode(epc.decode(
                await asyncio.wait_for(loop.sock_recv(enb, 2048), 2)).nas))
    finally:
        enb.close()
        mme_t.close()
        hss_t.close()
    return [json.loads(line) for line in (tmp / "mme.events").read_text().splitlines()] + \
        [{"reply": m.kind.name, "cell": m.cell} for m in got]


def test_handoff_costs_one_home_round_trip(tmp_path: Path) -> None:
    out = asyncio.run(_procedure(tmp_path, [None, None]))
    replies = [e for e in out if "reply" in e]
    assert replies == [{"reply": "ATTACH_ACCEPT", "cell": "ar1"},
                       {"reply": "ATTACH_ACCEPT", "cell": "ar3"}]
    procs = [e for e in out if e.get("ev") == "procedure"]
    assert [p["home_round_trips"] for p in procs] == [1, 1]
    assert all(float(str(p["hss_ms"])) >= 0.0 for p in procs)  # the distance is the link's
    assert [p["s6a"] for p in procs] == [2, 2]
    # First attach: ATTACH, challenge, response, accept on S1; the handoff adds the release.
    assert [p["s1"] for p in procs] == [4, 5]
    assert procs[1]["previous"] == "ar1"


def test_wrong_response_is_rejected(tmp_path: Path) -> None:
    out = asyncio.run(_procedure(tmp_path, [bytes(16), None]))
    replies = [e["reply"] for e in out if "reply" in e]
    assert replies == ["ATTACH_REJECT", "ATTACH_ACCEPT"]
    procs = [e for e in out if e.get("ev") == "procedure"]
    assert procs[0]["ok"] is False and procs[0]["cause"] == epc.CAUSE_AUTH_FAILED
