"""A least-recently-used map bounded by the bytes of what it holds (the readers' decoded-chunk and
shard-index caches)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Any


class ByteLRU:
    """A least-recently-used map that holds at most ``max_bytes`` of values (the newest one always)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._items)

    def get(self, key: Hashable) -> Any:
        """The value of ``key`` (now the most recent), None when absent."""
        got = self._items.get(key)
        if got is None:
            return None
        self._items.move_to_end(key)
        return got[0]

    def put(self, key: Hashable, value: object, nbytes: int) -> None:
        """Hold ``value`` (``nbytes`` large) under ``key``, dropping the least recent past ``max_bytes``."""
        old = self._items.pop(key, None)
        self.nbytes += nbytes - (old[1] if old else 0)
        self._items[key] = (value, nbytes)
        while self.nbytes > self.max_bytes and len(self._items) > 1:
            self.nbytes -= self._items.popitem(last=False)[1][1]
