"""A byte-bounded LRU of needle bodies, keyed by (vid, key, alt, cookie).

Bounds: the sum of ``charge(entry)`` over the entries stays <= ``bytes_max``, where an
entry's charge is its body length plus ``ENTRY_OVERHEAD_BYTES`` (the dict slot, key tuple
and entry object), so a flood of tiny bodies is bounded too. A body over
``item_bytes_max`` is never stored. Inserting evicts least-recently-used entries until the
new one fits.

``forget(vid, key)`` drops every variant (alt, cookie) of a key through a secondary index,
in time proportional to the variants, not the cache size.

All methods are synchronous and O(1) (amortised); the cache lives on one event loop.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

__all__ = ["ENTRY_OVERHEAD_BYTES", "CachedNeedle", "LruStatistics", "NeedleKey", "NeedleLru"]

NeedleKey = tuple[int, int, int, int]  # (vid, key, alt, cookie)

# Measured roughly: OrderedDict slot + 4-tuple of ints + CachedNeedle + bytes header + the
# secondary index's set slot.
ENTRY_OVERHEAD_BYTES: Final = 400


@dataclass(slots=True)
class CachedNeedle:
    """A cached body and its ETag. ``hit_lines`` is the HTTP layer's memo: the header lines
    of a hit answer for this entry (cache.http_api fills it at the first hit), so a hit
    encodes nothing per request. Nothing else changes an entry after it is made."""

    data: bytes
    etag: str  # quoted, as the store sent it
    hit_lines: bytes = b""


@dataclass(frozen=True, slots=True)
class LruStatistics:
    items: int
    bytes: int  # charged bytes (bodies + per-entry overhead)
    data_bytes: int  # body bytes only
    bytes_max: int
    item_bytes_max: int
    inserts: int
    evictions: int
    rejected_too_large: int
    forgotten: int


class NeedleLru:
    def __init__(self, *, bytes_max: int, item_bytes_max: int) -> None:
        if bytes_max < 1 or item_bytes_max < 0:
            raise ValueError("bytes_max must be positive and item_bytes_max not negative")
        self.bytes_max = bytes_max
        self.item_bytes_max = item_bytes_max
        self._entries: OrderedDict[NeedleKey, CachedNeedle] = OrderedDict()
        self._variants: dict[tuple[int, int], set[NeedleKey]] = {}
        self._bytes = 0
        self._data_bytes = 0
        self._inserts = 0
        self._evictions = 0
        self._rejected = 0
        self._forgotten = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, k: NeedleKey) -> CachedNeedle | None:
        """The entry, now most recently used; None when absent."""
        entry = self._entries.get(k)
        if entry is not None:
            self._entries.move_to_end(k)
        return entry

    def fits(self, size: int) -> bool:
        return size <= self.item_bytes_max and size + ENTRY_OVERHEAD_BYTES <= self.bytes_max

    def put(self, k: NeedleKey, entry: CachedNeedle) -> bool:
        """Stores ``entry`` (replacing any entry under ``k``), evicting LRU entries until it
        fits. False (nothing stored) when the body is over item_bytes_max."""
        size = len(entry.data)
        if not self.fits(size):
            self._rejected += 1
            return False
        self._remove(k)
        charge = size + ENTRY_OVERHEAD_BYTES
        entries = self._entries
        while self._bytes + charge > self.bytes_max and entries:
            old_key, _ = next(iter(entries.items()))
            self._remove(old_key)
            self._evictions += 1
        entries[k] = entry
        self._variants.setdefault((k[0], k[1]), set()).add(k)
        self._bytes += charge
        self._data_bytes += size
        self._inserts += 1
        return True

    def forget(self, vid: int, key: int) -> int:
        """Drops every variant of (vid, key); how many entries were dropped."""
        variants = self._variants.get((vid, key))
        if not variants:
            return 0
        n = 0
        for k in list(variants):
            n += self._remove(k)
        self._forgotten += n
        return n

    def _remove(self, k: NeedleKey) -> int:
        entry = self._entries.pop(k, None)
        if entry is None:
            return 0
        size = len(entry.data)
        self._bytes -= size + ENTRY_OVERHEAD_BYTES
        self._data_bytes -= size
        group = (k[0], k[1])
        variants = self._variants[group]
        variants.discard(k)
        if not variants:
            del self._variants[group]
        return 1

    def statistics(self) -> LruStatistics:
        return LruStatistics(
            items=len(self._entries),
            bytes=self._bytes,
            data_bytes=self._data_bytes,
            bytes_max=self.bytes_max,
            item_bytes_max=self.item_bytes_max,
            inserts=self._inserts,
            evictions=self._evictions,
            rejected_too_large=self._rejected,
            forgotten=self._forgotten,
        )
