"""A small bounded LRU map used for LTSS, parsed-key and resolved-key caches.

OrderedDict keeps both lookup and eviction O(1) and in C, which matters on the warm path.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """Least-recently-used map holding at most ``capacity`` entries (0 disables caching)."""

    __slots__ = ("_data", "capacity", "hits", "misses", "evictions")

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._data: OrderedDict[K, V] = OrderedDict()
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: K) -> V | None:
        data = self._data
        value = data.get(key)
        if value is None:
            self.misses += 1
            return None
        data.move_to_end(key)
        self.hits += 1
        return value

    def peek(self, key: K) -> V | None:
        """Look up without touching recency or counters."""
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        if self.capacity == 0:
            return
        data = self._data
        data[key] = value
        data.move_to_end(key)
        while len(data) > self.capacity:
            data.popitem(last=False)
            self.evictions += 1

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data
