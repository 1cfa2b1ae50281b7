"""L1: a small in-process LRU with per-entry expiry, safe to share between threads.

Bounded in entries and in bytes: each entry carries its size (the caller passes the
length of its serialized form: the JSON stored in L2), the total is kept under
`max_bytes` by evicting the least recently used, and an entry over `max_entry_bytes`
is not kept at all (one large value must not push out hundreds of small ones; it
stays in L2). Sizes are of the serialized form: the objects in memory take a few
times more, so set `max_bytes` with that margin.

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
    size: int = 0


class LocalLRU:
    def __init__(self, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic, *,
                 max_bytes: int = 8 * 1024 * 1024, max_entry_bytes: int = 256 * 1024) -> None:
        if max_entries < 1 or max_bytes < 1 or max_entry_bytes < 1:
            raise ValueError("max_entries, max_bytes and max_entry_bytes must be at least 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self._clock = clock
        self._data: OrderedDict[Hashable, Entry] = OrderedDict()
        self._bytes = 0
        self.skipped = 0  # entries refused for their size
        # One lock for everything: operations are a few dict moves, contention is negligible.
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Entry | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry.expires_at <= self._clock():
                self._pop(key)
                return None
            self._data.move_to_end(key)
            return entry

    def put(self, key: Hashable, tag: bytes, value: Any, ttl: float, *, immutable: bool = False,
            size: int = 0) -> None:
        """Keep `value` (of `size` bytes serialized); over `max_entry_bytes` it is not kept (and an older
        entry under `key` goes: it is stale)."""
        entry = Entry(tag, value, self._clock() + ttl, immutable, size)
        with self._lock:
            self._pop(key)
            if size > self.max_entry_bytes:
                self.skipped += 1
                return
            self._data[key] = entry
            self._bytes += size
            while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= evicted.size

    def _pop(self, key: Hashable) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= old.size

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._pop(key)

    def discard_where(self, predicate: Callable[[Hashable], bool]) -> int:
        with self._lock:
            doomed = [k for k in self._data if predicate(k)]
            for key in doomed:
                self._pop(key)
            return len(doomed)

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)
