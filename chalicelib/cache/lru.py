"""L1: a small in-process LRU with per-entry expiry, safe to share between threads.

Entries carry the version tag they were cached under; the two-level cache
compares that tag with the current one in Redis before trusting an entry, so
this class never decides freshness on its own beyond the TTL.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Entry:
    tag: bytes
    value: Any
    expires_at: float
    #: the value can never change (e.g. a finished task); see TwoLevelCache.fetch(immutable=...).
    immutable: bool = False


class LocalLRU:
    def __init__(self, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[Hashable, Entry] = OrderedDict()
        # One lock for everything: operations are a few dict moves, contention is negligible.
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Entry | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry.expires_at <= self._clock():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return entry

    def put(self, key: Hashable, tag: bytes, value: Any, ttl: float, *, immutable: bool = False) -> None:
        entry = Entry(tag, value, self._clock() + ttl, immutable)
        with self._lock:
            self._data[key] = entry
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._data.pop(key, None)

    def discard_where(self, predicate: Callable[[Hashable], bool]) -> int:
        with self._lock:
            doomed = [k for k in self._data if predicate(k)]
            for key in doomed:
                del self._data[key]
            return len(doomed)

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)
