"""The address plan of one address family: every block the lab uses, declared once, checked
for overlaps when the topology loads, and handed out by allocators that name the pool that
ran out. IPv6 is a second instance of the same class, not a second implementation.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import TopologyError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def network(value: object, where: str, version: int | None = None) -> Network:
    """A strict network (no host bits) of the expected family, or a TopologyError naming
    the field."""
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        raise TopologyError(f"{where}: {exc}") from None
    if version is not None and net.version != version:
        raise TopologyError(f"{where}: {net} is not an IPv{version} network")
    return net


@dataclass(frozen=True)
class Block:
    """A named range of the plan: a YAML range (addressing.links) or a fixed lab range
    (the MNs' link-local block)."""

    name: str
    network: Network


class Allocator:
    """Hands out subnets or hosts of one block in order, so a plan is stable across runs;
    running out raises a TopologyError that names the block and what was asked."""

    def __init__(self, block: Block) -> None:
        self.block = block
        self._subnets: dict[int, Iterator[Network]] = {}
        self._used = 0

    def subnet(self, prefixlen: int, purpose: str) -> Network:
        if prefixlen < self.block.network.prefixlen:
            raise TopologyError(f"{self.block.name} {self.block.network} is too small for a "
                                f"/{prefixlen} ({purpose})")
        if self._subnets and prefixlen not in self._subnets:
            raise TopologyError(f"{self.block.name}: one subnet size per block "
                                f"(asked /{prefixlen} for {purpose})")
        it = self._subnets.setdefault(prefixlen, self.block.network.subnets(new_prefix=prefixlen))
        net = next(it, None)
        if net is None:
            raise TopologyError(f"{self.block.name} {self.block.network} ran out: no /{prefixlen} "
                                f"left for {purpose} after {self._used}")
        self._used += 1
        return net

    def host(self, offset: int, purpose: str) -> Address:
        """The address ``offset`` into the block (offsets are the caller's numbering)."""
        net = self.block.network
        if not 0 < offset < net.num_addresses - (1 if net.version == 4 else 0):
            raise TopologyError(f"{self.block.name} {net} ran out: no host {offset} for "
                                f"{purpose} (it holds {net.num_addresses - 2} hosts)")
        return net.network_address + offset


@dataclass
class AddressPlan:
    """Every block of one family. ``declare`` refuses a block that overlaps one already
    declared, unless it is declared inside it as a child (a cluster inside the managed
    range, a pool inside its cluster)."""

    version: int
    blocks: list[Block] = field(default_factory=list)  # the top level
    mn_prefixlen: int = 32  # what each MN is given: a /32 in IPv4, a true prefix in IPv6
    _all: dict[str, Block] = field(default_factory=dict)
    _children: dict[str, list[Block]] = field(default_factory=dict)

    def declare(self, name: str, value: object, *, inside: str | None = None) -> Block:
        if name in self._all:
            raise TopologyError(f"{name} is declared twice in the address plan")
        net = network(value, name, self.version)
        block = Block(name, net)
        if inside is not None:
            parent = self.block(inside)
            if not net.subnet_of(parent.network):  # type: ignore[arg-type]
                raise TopologyError(f"{name} {net} lies outside {parent.name} {parent.network}")
            siblings = self._children.setdefault(inside, [])
        else:
            siblings = self.blocks
        _refuse_overlap(block, siblings)
        siblings.append(block)
        self._all[name] = block
        return block

    def block(self, name: str) -> Block:
        try:
            return self._all[name]
        except KeyError:
            raise TopologyError(f"the address plan has no block named {name!r}") from None

    def children(self, name: str) -> list[Block]:
        return list(self._children.get(name, []))

    def allocator(self, name: str) -> Allocator:
        return Allocator(self.block(name))

    def owner(self, address: Address) -> Block | None:
        """The top-level block an address falls in (for error messages and lookups)."""
        return next((b for b in self.blocks if address in b.network), None)


def _refuse_overlap(block: Block, others: list[Block]) -> None:
    for other in others:
        if block.network.overlaps(other.network):
            raise TopologyError(f"{block.name} {block.network} overlaps {other.name} "
                                f"{other.network}")
