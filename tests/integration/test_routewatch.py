"""RouteWatcher against real kernel namespaces: attribution, kinds, next hops, filtering, stop.

Each namespace belongs to an `unshare -n sleep infinity` process, as a Mininet node belongs
to its shell; its veth pairs live inside it and vanish with it.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network

import pytest

from topologies.analysis.measure import RouteEvent, final_state, settled_at
from topologies.lab.daemons import wait_until
from topologies.scenarios.routewatch import RouteWatcher, _Namespace, _netlink_sockets_in

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

WITHIN = IPv4Network("10.99.0.0/16")
NO_SUCH_PID = 4194305  # above the largest pid_max Linux allows


@dataclass
class Node:
    name: str
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ip(self, *args: str) -> None:
        subprocess.run(["nsenter", "-t", str(self.pid), "-n", "ip", *args],
                       check=True, capture_output=True, timeout=10)


def spawn(name: str) -> Node:
    proc = subprocess.Popen(["unshare", "-n", "sleep", "infinity"], stdin=subprocess.DEVNULL)
    node = Node(name, proc)
    ours = os.readlink("/proc/self/ns/net")

    def in_own_netns() -> bool:
        try:
            return os.readlink(f"/proc/{proc.pid}/ns/net") != ours
        except OSError:
            return False

    try:
        wait_until(in_own_netns, 5, f"{name} to enter its own netns", interval=0.01)
        node.ip("link", "set", "lo", "up")
        node.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        node.ip("link", "add", "v2", "type", "veth", "peer", "name", "v3")
        for dev in ("v0", "v1", "v2", "v3"):
            node.ip("link", "set", dev, "up")
        node.ip("addr", "add", "192.0.2.1/24", "dev", "v0")
        node.ip("addr", "add", "198.51.100.1/24", "dev", "v2")
    except BaseException:
        kill(node)
        raise
    return node


def kill(node: Node) -> None:
    node.proc.kill()
    node.proc.wait(timeout=10)


@pytest.fixture
def nodes() -> Iterator[tuple[Node, Node]]:
    spawned: list[Node] = []
    try:
        spawned.append(spawn("n1"))
        spawned.append(spawn("n2"))
        yield spawned[0], spawned[1]
    finally:
        for node in spawned:
            kill(node)


@pytest.fixture
def watcher(nodes: tuple[Node, Node]) -> Iterator[RouteWatcher]:
    n1, n2 = nodes
    w = RouteWatcher({"n1": n1.pid, "n2": n2.pid}, WITHIN)
    try:
        yield w
    finally:
        w.stop()


def matching(**want: object) -> Callable[[list[RouteEvent]], bool]:
    def pred(events: list[RouteEvent]) -> bool:
        return any(all(getattr(e, k) == v for k, v in want.items()) for e in events)
    return pred


def await_event(w: RouteWatcher, **want: object) -> RouteEvent:
    if "dst" in want:
        want["dst"] = ip_network(str(want["dst"]))
    assert w.wait_for(matching(**want), 5.0), f"no event {want} in {w.events()}"
    return next(e for e in w.events() if matching(**want)([e]))


def test_sockets_are_bound_to_the_namespace(nodes: tuple[Node, Node]) -> None:
    """The setns'd thread's sockets see the node's links, not the root namespace's."""
    sub, req = _netlink_sockets_in(nodes[0].pid)
    ns = _Namespace("n1", nodes[0].pid, sub, req)
    try:
        ns.dump_links()
        assert sorted(name for name, _ in ns.links.values()) == ["lo", "v0", "v1", "v2", "v3"]
    finally:
        ns.close()


def test_events_per_namespace(nodes: tuple[Node, Node], watcher: RouteWatcher,
                              caplog: pytest.LogCaptureFixture) -> None:
    n1, n2 = nodes
    n1.ip("route", "add", "10.99.9.9/32", "dev", "v0", "metric", "7", "proto", "static")
    n1.ip("route", "add", "10.98.0.1/32", "dev", "v0")
    watcher.start()
    assert watcher.watching == ["n1", "n2"]

    pre = await_event(watcher, node="n1", dst="10.99.9.9/32")
    assert (pre.ts, pre.kind, pre.metric, pre.proto, pre.nexthops) == (
        watcher.started_at, "add", 7, 4, frozenset({"dev:v0"}))
    # Only that route is inside `within`; the connected /24s and 10.98.0.1 are not.
    assert [e.dst for e in watcher.events()] == [IPv4Network("10.99.9.9/32")]

    before = time.time()
    n1.ip("route", "add", "10.99.1.1/32", "dev", "v0", "metric", "100")
    ev = await_event(watcher, node="n1", dst="10.99.1.1/32", kind="add", metric=100)
    assert ev.nexthops == frozenset({"dev:v0"})
    assert before <= ev.ts < before + 1.0

    n2.ip("route", "add", "10.99.1.1/32", "via", "192.0.2.2", "metric", "50")
    ev = await_event(watcher, node="n2", dst="10.99.1.1/32", metric=50)
    assert (ev.kind, ev.nexthops) == ("add", frozenset({"192.0.2.2"}))

    n1.ip("route", "replace", "10.99.1.1/32", "via", "198.51.100.2", "metric", "100")
    await_event(watcher, node="n1", dst="10.99.1.1/32", kind="add",
                nexthops=frozenset({"198.51.100.2"}))

    n1.ip("route", "add", "10.99.2.0/24", "metric", "20",
          "nexthop", "via", "192.0.2.2", "nexthop", "via", "198.51.100.2")
    await_event(watcher, node="n1", dst="10.99.2.0/24", kind="add", metric=20,
                nexthops=frozenset({"192.0.2.2", "198.51.100.2"}))

    n1.ip("route", "add", "blackhole", "10.99.3.3/32")
    await_event(watcher, node="n1", dst="10.99.3.3/32", nexthops=frozenset({"blackhole"}))

    # A link made after start() is named by a lookup on the first miss.
    n2.ip("link", "add", "late0", "type", "veth", "peer", "name", "late1")
    n2.ip("link", "set", "late0", "up")
    n2.ip("route", "add", "10.99.7.7/32", "dev", "late0", "proto", "static")
    await_event(watcher, node="n2", dst="10.99.7.7/32", proto=4,
                nexthops=frozenset({"dev:late0"}))

    n1.ip("route", "add", "10.98.0.2/32", "dev", "v0")
    n1.ip("route", "add", "10.99.5.0/24", "dev", "v0", "table", "100")
    n1.ip("route", "del", "10.99.1.1/32", "metric", "100")
    # Netlink keeps order, so once the delete is here the ignored routes would be too.
    ev = await_event(watcher, node="n1", dst="10.99.1.1/32", kind="del")
    assert (ev.metric, ev.nexthops) == (100, frozenset({"198.51.100.2"}))
    seen = watcher.events()
    assert all(e.dst.subnet_of(WITHIN) for e in seen)
    assert IPv4Network("10.99.5.0/24") not in {e.dst for e in seen}
    assert [e.ts for e in seen] == sorted(e.ts for e in seen)

    t_end = time.time()
    assert final_state(seen, "n1", "10.99.1.1/32", t_end) is None
    assert final_state(seen, "n2", "10.99.1.1/32", t_end) == frozenset({"192.0.2.2"})
    assert settled_at(seen, "n1", "10.99.1.1/32", before, t_end) == ev.ts

    watcher.stop()
    # The loop thread ended (stop() says so when its join gives up), not a guess at how fast.
    assert "did not stop" not in caplog.text
    assert watcher.watching == []
    assert len(watcher.events()) == len(seen)  # the record outlives the sockets


def test_silent_flush_on_link_down(nodes: tuple[Node, Node], watcher: RouteWatcher) -> None:
    """The kernel drops routes over a downed link without RTM_DELROUTE; a re-dump sees it."""
    n1, _ = nodes
    n1.ip("route", "add", "10.99.4.4/32", "via", "192.0.2.2", "metric", "20")
    n1.ip("route", "add", "10.99.6.0/24", "metric", "20",
          "nexthop", "via", "192.0.2.2", "nexthop", "via", "198.51.100.2")
    watcher.start()
    await_event(watcher, node="n1", dst="10.99.6.0/24")
    before = time.time()
    n1.ip("link", "set", "v0", "down")
    ev = await_event(watcher, node="n1", dst="10.99.4.4/32", kind="del")
    assert (ev.metric, ev.nexthops) == (20, frozenset({"192.0.2.2"}))
    assert before <= ev.ts < before + 1.0
    # The multipath route loses the dead next hop instead of going away.
    ev = await_event(watcher, node="n1", dst="10.99.6.0/24", kind="add",
                     nexthops=frozenset({"198.51.100.2"}))
    assert before <= ev.ts < before + 1.0
    assert final_state(watcher.events(), "n1", "10.99.6.0/24", time.time()) == frozenset(
        {"198.51.100.2"})


def test_unwatchable_namespace_is_dropped(nodes: tuple[Node, Node]) -> None:
    n1, _ = nodes
    with RouteWatcher({"ghost": NO_SUCH_PID, "n1": n1.pid}, "10.99.0.0/16") as w:
        assert w.watching == ["n1"]
        n1.ip("route", "add", "10.99.8.8/32", "dev", "v0")
        await_event(w, node="n1", dst="10.99.8.8/32", kind="add")
    assert w.watching == []


def test_stop_closes_every_fd(nodes: tuple[Node, Node]) -> None:
    """Open sockets would keep a node's namespace alive after the lab tore it down."""
    fds_before = sorted(os.listdir("/proc/self/fd"))
    with RouteWatcher({"n1": nodes[0].pid, "n2": nodes[1].pid}, WITHIN) as w:
        assert w.watching == ["n1", "n2"]
        assert len(os.listdir("/proc/self/fd")) >= len(fds_before) + 4
    assert sorted(os.listdir("/proc/self/fd")) == fds_before


def test_both_families_are_recorded_and_ipv6_gateways_named(nodes: tuple[Node, Node]) -> None:
    """Issue 18: the IPv6 /64s' re-route time needs the IPv6 FIB too. One watcher, both
    families, each filtered by its own prefix; an IPv6 route outside it is not recorded."""
    n1, _ = nodes
    n1.ip("-6", "addr", "add", "2001:db8:1::1/64", "dev", "v0", "nodad")
    n1.ip("-6", "addr", "add", "2001:db8:2::1/64", "dev", "v2", "nodad")
    within = (IPv4Network("10.99.0.0/16"), IPv6Network("2001:db8:4000::/40"))
    with RouteWatcher({"n1": n1.pid}, within) as w:
        n1.ip("-6", "route", "add", "2001:db8:4000:1::/64", "via", "2001:db8:1::2",
              "metric", "20")
        ev = await_event(w, node="n1", dst=IPv6Network("2001:db8:4000:1::/64"), kind="add")
        assert (ev.metric, ev.nexthops) == (20, frozenset({"2001:db8:1::2"}))
        n1.ip("-6", "route", "add", "2001:db8:4000:2::/64", "metric", "30",
              "nexthop", "via", "2001:db8:1::2", "nexthop", "via", "2001:db8:2::2")
        await_event(w, node="n1", dst=IPv6Network("2001:db8:4000:2::/64"), kind="add",
                    nexthops=frozenset({"2001:db8:1::2", "2001:db8:2::2"}))
        n1.ip("-6", "route", "add", "2001:db8:4000:3::/64", "via", "fe80::2", "dev", "v0")
        await_event(w, node="n1", dst=IPv6Network("2001:db8:4000:3::/64"),
                    nexthops=frozenset({"fe80::2"}))
        n1.ip("route", "add", "10.99.1.1/32", "dev", "v0")
        await_event(w, node="n1", dst="10.99.1.1/32", kind="add")
        n1.ip("-6", "route", "add", "2001:db8:5000::/64", "via", "2001:db8:1::2")
        n1.ip("-6", "route", "del", "2001:db8:4000:1::/64", "via", "2001:db8:1::2",
              "metric", "20")
        await_event(w, node="n1", dst=IPv6Network("2001:db8:4000:1::/64"), kind="del")
        seen = w.events()
    # In order, so the route outside `within` would be here by now; the connected /64s and
    # the IPv6 link-local routes are not inside it either.
    assert {str(e.dst) for e in seen} == {"2001:db8:4000:1::/64", "2001:db8:4000:2::/64",
                                          "2001:db8:4000:3::/64", "10.99.1.1/32"}
    t_end = time.time()
    assert final_state(seen, "n1", "2001:db8:4000:1::/64", t_end) is None
    assert final_state(seen, "n1", "2001:db8:4000:2::/64", t_end) == frozenset(
        {"2001:db8:1::2", "2001:db8:2::2"})
