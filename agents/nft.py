"""nftables from inside an agent, through libnftables (no `nft` process per change).

The AR's ruleset is rendered from a template at bring-up; at run time the agent only adds
and deletes elements of its `mn_sources` set, which takes well under a millisecond here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import re
import threading
from collections.abc import Callable

from .contract import NFT_SOURCES_SET, NFT_TABLE

TABLE = f"ip {NFT_TABLE}"
TABLE6 = f"ip6 {NFT_TABLE}6"  # a dual-stack AR's MN prefixes (issue 18), the same set name
SOURCES_SET = NFT_SOURCES_SET
Source = ipaddress.IPv4Address | ipaddress.IPv6Network  # an MN's /32, or its IPv6 prefix
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class NftError(RuntimeError):
    """libnftables refused a command; the message is nft's own."""


class Nft:
    """A libnftables context in the caller's network namespace."""

    def __init__(self) -> None:
        path = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise NftError(f"libnftables not available ({exc}); install nftables") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self._lib = lib
        self._ctx = lib.nft_ctx_new(0)
        if not self._ctx:
            raise NftError("nft_ctx_new failed")
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)
        self._lock = threading.Lock()  # a context is not thread-safe

    def run(self, command: str) -> str:
        with self._lock:
            if not self._ctx:
                raise NftError("nft context closed")
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, command.encode())
            out = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
            err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        if rc != 0:
            raise NftError(f"nft {command!r}: {err.decode(errors='replace').strip()}")
        return bytes(out).decode(errors="replace")

    def close(self) -> None:
        with self._lock:
            if self._ctx:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None


def _element(ifname: str, address: Source) -> str:
    if not _IFNAME.match(ifname):
        raise NftError(f"bad interface name {ifname!r}")
    value = (ipaddress.IPv6Network(address) if isinstance(address, ipaddress.IPv6Network)
             else ipaddress.IPv4Address(address))
    return f'{{ "{ifname}" . {value} }}'


def _table(address: Source) -> str:
    return TABLE6 if isinstance(address, ipaddress.IPv6Network) else TABLE


class SourceFilter:
    """Draft 2.3: an access interface accepts only the addresses authenticated on it."""

    def __init__(self, nft: Nft, changed: Callable[[Source], None] | None = None) -> None:
        self._nft = nft
        # What we added, so a revocation needs no listing of the set (a handoff step).
        self._allowed: dict[Source, set[str]] = {}
        # Told each address whose members changed (the agent's journal); any thread.
        self._changed = changed or (lambda address: None)

    def allow(self, ifname: str, address: Source) -> None:
        self._nft.run(f"add element {_table(address)} {SOURCES_SET} {_element(ifname, address)}")
        self._allowed.setdefault(address, set()).add(ifname)
        self._changed(address)

    def revoke(self, ifname: str, address: Source) -> None:
        self._allowed.get(address, set()).discard(ifname)
        self._changed(address)
        try:
            self._nft.run(f"delete element {_table(address)} {SOURCES_SET} "
                          f"{_element(ifname, address)}")
        except NftError as exc:
            if "No such file" not in str(exc) and "does not exist" not in str(exc):
                raise

    def members(self) -> dict[ipaddress.IPv4Address, tuple[str, ...]]:
        """What this filter allowed in IPv4: address -> its interfaces (the agent's saved
        state; IPv6 prefixes are not saved yet and are re-authenticated after a restart)."""
        return {a: tuple(sorted(names)) for a, names in list(self._allowed.items())
                if names and isinstance(a, ipaddress.IPv4Address)}

    def names(self, address: Source) -> tuple[str, ...]:
        """The interfaces ``address`` is allowed on, sorted (one entry of ``members``)."""
        return tuple(sorted(self._allowed.get(address, ())))

    def adopt(self, ifname: str, address: ipaddress.IPv4Address) -> None:
        """A member a previous agent added: known, so that revoking it works."""
        self._allowed.setdefault(address, set()).add(ifname)
        self._changed(address)

    def flush(self) -> None:
        """Empty the IPv4 set: after a restart that could not say what the set holds."""
        self._nft.run(f"flush set {TABLE} {SOURCES_SET}")
        for a in [a for a in self._allowed if isinstance(a, ipaddress.IPv4Address)]:
            del self._allowed[a]
            self._changed(a)

    def flush6(self) -> None:
        """Empty the IPv6 set: a restarted agent re-allows the /64s it recovers, and no
        other (IPv6 members are saved as the /64 attachments, agents/arstate.py)."""
        self._nft.run(f"flush set {TABLE6} {SOURCES_SET}")
        for p in [p for p in self._allowed if isinstance(p, ipaddress.IPv6Network)]:
            del self._allowed[p]

    def revoke_address(self, address: Source) -> None:
        """Drop every (interface, address) pair this filter allowed for ``address``."""
        for ifname in sorted(self._allowed.pop(address, set())):
            self.revoke(ifname, address)
        self._changed(address)
