"""`flatarch capture` on a running lab, and the Wireshark dissector on its live capture of a
handoff: the pcap decodes to what the agents logged, tcpdump reads it, and Ctrl-C or a closed
pipe stops the verb with nothing left running. One lab for the module.

UPDATE_CAPTURE_DATA=1 also writes that capture and the agents' record of the handoff to
tests/data/handoff.pcap and handoff.json, which tests/unit/test_dissector.py reads.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dissector import TSHARK_MISSING, check_handoff, decode, handoff_record, have_tshark
from tests.integration.labs import events, figure2_lab
from topologies import model
from topologies.lab.capture import CAPTURE_DIR
from topologies.lab.daemons import proc_comm, read_pid, wait_until
from topologies.lab.lab import Lab

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from figure2_lab()


def capture(args: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
    """`flatarch capture ...` in its own process group, as a shell runs it from a terminal."""
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "topologies.cli", "capture", *args],
                                stdin=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                cwd=ROOT, **kw)
    wait_until(lambda: b"capturing in" in log.read_bytes() or proc.poll() is not None, 30,
               "flatarch capture to start")
    assert proc.poll() is None, log.read_text()
    return proc


def tcpdump_pid(lab: Lab, node: str) -> int:
    found = [read_pid(p) for p in (lab.dir / CAPTURE_DIR).glob(f"{node}-*.pid")]
    pids = [p for p in found if p is not None and proc_comm(p) == "tcpdump"]
    assert len(pids) == 1, found
    return pids[0]


@pytest.mark.skipif(not have_tshark(), reason=TSHARK_MISSING)
def test_capture_of_a_handoff_decodes_and_ctrl_c_leaves_nothing_running(
        lab: Lab, tmp_path: Path) -> None:
    pcap = tmp_path / "handoff.pcap"
    proc = capture(["ar2", "-f", "udp port 7411", "-w", str(pcap)], tmp_path / "capture.log")
    tcpdump = tcpdump_pid(lab, "ar2")
    answer = lab.handoff("mn1", "ar2")
    assert answer["ok"], answer
    wait_until(lambda: any(e["ev"] == "redirect_acked" for e in events(lab, "ar2")), 10,
               "ar2's redirect to be acknowledged")
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
    assert proc.wait(20) == 0, (tmp_path / "capture.log").read_text()
    assert proc_comm(tcpdump) is None
    assert not list((lab.dir / CAPTURE_DIR).glob("ar2-*.pid"))

    read = subprocess.run(["tcpdump", "-n", "-r", str(pcap)], capture_output=True, text=True,
                          check=False)
    assert read.returncode == 0, read.stderr
    lines = read.stdout.splitlines()
    assert sum(".7411" in line for line in lines) >= 4, (
        read.stdout, read.stderr, (tmp_path / "capture.log").read_text())
    names = {"mn": model.fqdn("mn", "mn1"), "from": model.fqdn("ar", "ar1"),
             "to": model.fqdn("ar", "ar2")}
    logged = handoff_record(answer, events(lab, "ar2"), events(lab, "ar1"), names,
                            str(lab.topo.nodes["ar1"].loopback))
    check_handoff(decode(pcap), logged)
    if os.environ.get("UPDATE_CAPTURE_DATA"):
        shutil.copyfile(pcap, DATA / "handoff.pcap")
        (DATA / "handoff.json").write_text(json.dumps(logged, indent=1, sort_keys=True) + "\n")


def test_capture_to_a_pipe_stops_when_the_reader_closes_it(lab: Lab, tmp_path: Path) -> None:
    proc = capture(["ar1", "-f", "udp port 7411"], tmp_path / "pipe.log", stdout=subprocess.PIPE)
    assert proc.stdout is not None
    tcpdump = tcpdump_pid(lab, "ar1")
    # tcpdump -U writes the pcap header with the first packet: the MN's AUTH back home.
    answer = lab.handoff("mn1", "ar1")
    assert answer["ok"], answer
    header = proc.stdout.read(24)
    assert header[:4] in (bytes.fromhex("d4c3b2a1"), bytes.fromhex("a1b2c3d4"))
    proc.stdout.close()  # the reader goes away, as when Wireshark quits
    assert proc.wait(20) == 0, (tmp_path / "pipe.log").read_text()
    assert proc_comm(tcpdump) is None
