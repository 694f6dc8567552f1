"""topologies/lab/capture.py without a lab: capture points, the lab state naming the pid file,
and a Capture's start, wait and stop around a stand-in for tcpdump (no root needed).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from topologies.lab.capture import (
    Capture,
    CaptureError,
    CaptureSpec,
    parse_specs,
)
from topologies.lab.daemons import LabError, NodeExec, proc_comm, read_pid
from topologies.lab.lab import teardown_dir, track_pid_file

# Behaves like `tcpdump -U -w -` as far as Capture can tell: it says it listens, writes its
# output and ends on SIGINT with its counts on stderr.
FAKE_TCPDUMP = r"""
import signal, sys, time
def done(*_):
    sys.stderr.write("3 packets captured\n")
    sys.exit(0)
signal.signal(signal.SIGINT, done)
if "fail" in sys.argv:
    sys.stderr.write("tcpdump: fail: No such device exists\n")
    sys.exit(1)
sys.stderr.write("tcpdump: listening on any, link-type LINUX_SLL2\n")
sys.stderr.flush()
sys.stdout.buffer.write(b"\xd4\xc3\xb2\xa1" + bytes(20))
sys.stdout.flush()
if "once" in sys.argv:
    sys.exit(0)
while True:
    time.sleep(1)
"""


class FakeNode(NodeExec):
    """Runs the stand-in where the lab would run tcpdump inside the node."""

    python = sys.executable

    def argv(self, cmd: Sequence[str]) -> list[str]:
        return [self.python, "-c", FAKE_TCPDUMP, *cmd]


@pytest.fixture
def labdir(tmp_path: Path) -> Path:
    (tmp_path / "state.json").write_text(json.dumps({"name": "t", "extra_pid_files": []}))
    return tmp_path


def test_capture_points_parse() -> None:
    assert CaptureSpec.parse("ar1") == CaptureSpec("ar1", "any")
    assert CaptureSpec.parse("ar2:ar2-acc") == CaptureSpec("ar2", "ar2-acc")
    assert parse_specs("ar1, ar2:ar2-acc,") == [CaptureSpec("ar1"), CaptureSpec("ar2", "ar2-acc")]
    assert CaptureSpec("ar2", "ar2-acc").stem == "ar2-ar2-acc" and CaptureSpec("cn").stem == "cn"
    for bad in ("", ":eth0", "ar1:", "ar1:a b", "../x"):
        with pytest.raises(CaptureError):
            CaptureSpec.parse(bad)


def test_track_names_the_pid_file_in_the_lab_state(labdir: Path) -> None:
    track_pid_file(labdir, labdir / "capture" / "x.pid")
    state = json.loads((labdir / "state.json").read_text())
    assert state["extra_pid_files"] == [{"pid_file": str(labdir / "capture" / "x.pid"),
                                         "marker": None}]
    with pytest.raises(LabError):
        track_pid_file(labdir / "nowhere", labdir / "x.pid")


def test_capture_writes_the_file_and_stops_its_process(labdir: Path) -> None:
    out = labdir / "out.pcap"
    cap = Capture(FakeNode("ar1", 1), labdir, CaptureSpec.parse("ar1"), out, "udp port 7411")
    with cap:
        pid = read_pid(cap.pid_file)
        assert pid is not None and proc_comm(pid) is not None
        assert cap.command()[-1] == "udp port 7411" and cap.running()
        state = json.loads((labdir / "state.json").read_text())
        assert state["extra_pid_files"][0]["pid_file"] == str(cap.pid_file)
        assert not cap.wait(0.1)
    assert not cap.running() and proc_comm(pid) is None and not cap.pid_file.exists()
    assert out.read_bytes()[:4] == bytes.fromhex("d4c3b2a1")
    assert cap.summary() == "3 packets captured"


def test_capture_that_cannot_start_raises_and_leaves_nothing(labdir: Path) -> None:
    cap = Capture(FakeNode("ar1", 1), labdir, CaptureSpec("ar1", "fail"), labdir / "o.pcap")
    with pytest.raises(CaptureError, match="No such device"), cap:
        pass
    assert not cap.running() and not cap.pid_file.exists()


def test_capture_ending_by_itself_is_seen(labdir: Path) -> None:
    with Capture(FakeNode("ar1", 1), labdir, CaptureSpec("ar1", "once"),
                 labdir / "o.pcap") as cap:
        assert cap.wait(10)
    assert cap.stop() == 0


def test_teardown_stops_a_capture_left_running(labdir: Path, tmp_path: Path) -> None:
    """`flatarch down` from the state alone stops a tcpdump whose starter died."""
    node = FakeNode("ar1", 1)
    node.python = str(tmp_path / "tcpdump")  # the process's name, which teardown checks
    Path(node.python).symlink_to(sys.executable)
    cap = Capture(node, labdir, CaptureSpec("ar1"), tmp_path / "o.pcap")
    cap.start()
    try:
        pid = read_pid(cap.pid_file)
        assert pid is not None and proc_comm(pid) == "tcpdump"
        done = teardown_dir(labdir)
        assert any(f"({pid})" in line for line in done), done
        assert cap.wait(5) and not labdir.exists()
    finally:
        cap.stop()  # a failed assertion must not leave the stand-in running
