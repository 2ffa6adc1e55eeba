"""A run: an immutable, sorted slice of the needle map in compact numpy arrays.

Entries are sorted by (key, alt_key) and grouped by key, struct-of-arrays:

    keys     u64[K]      distinct keys, ascending
    starts   u32[K+1]    entries of keys[i] are [starts[i], starts[i+1])
    alts     u8|u16|u32[N]  alternate keys: the narrowest type that holds the run's largest,
                 or u8 codes into alt_table when the run's largest needs more than a byte
                 and it has at most 256 distinct alt keys
    alt_table u32[T]    (optional) the run's distinct alt keys, ascending: code i is
                 alt_table[i], so codes sort as their keys do
    offsets  u32[N]      needle offset in offset units; 0 marks a tombstone
    len_lo   u16[N]      needle length in offset units, low 16 bits
    len_hi   u8[N]       ... high 8 bits (24 bits: 512 MiB needles at 32-byte units)

Per needle: 1 + 4 + 2 + 1 = 8 bytes; per key: 12 bytes. With nine variants per photo that is
8 + 12/9 = 9.3 bytes per needle. A photo's ladder uses alt keys `rendition << 8 | format`
(common/photo.py) up to the 1080 square's 2,836,483, which would need u32 alts (11 bytes per
needle, 11.5 with 25 needles per photo); a volume of photos has a few dozen distinct alt keys,
so its runs keep u8 codes into a table of them: 8 + 12/25 = 8.5 bytes per needle
(`bytes_per_needle`). The same arrays are the body of the index file.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from typing import Final

import numpy as np

TOMBSTONE_OFFSET: Final = 0

_ALT_BITS: Final = 32
_LEN_BITS: Final = 24
_ALT_MASK: Final = (1 << _ALT_BITS) - 1
_LEN_MASK: Final = (1 << _LEN_BITS) - 1

U64 = np.ndarray  # of uint64
U32 = np.ndarray  # of uint32


# The RAM a run spends per needle besides its alt key (offsets u32, len_lo u16, len_hi u8)
# and per distinct key (keys u64, starts u32), in bytes: what capacity planning reads.
NEEDLE_BYTES_BESIDES_ALT: Final = (
    np.dtype(np.uint32).itemsize + np.dtype(np.uint16).itemsize + np.dtype(np.uint8).itemsize
)
KEY_BYTES: Final = np.dtype(np.uint64).itemsize + np.dtype(np.uint32).itemsize


# A run whose largest alt key needs more than a byte keeps u8 codes into a table of its
# distinct alt keys when it has at most this many.
ALT_TABLE_MAX: Final = 256


def alt_code_bytes(*, max_alt: int, distinct_alts: int) -> int:
    """The bytes of one needle's alt key in a run with these alt keys."""
    if max_alt >= 2**8 and distinct_alts <= ALT_TABLE_MAX:
        return 1
    return alt_dtype_for(max_alt).itemsize


def bytes_per_needle(*, max_alt: int, needles_per_key: float, distinct_alts: int) -> float:
    """RAM per needle of a run whose largest alt key is `max_alt` among `distinct_alts`
    distinct ones, with `needles_per_key` needles per distinct key on average (a photo and
    its variants share one key); the alt table's few bytes are left out."""
    if needles_per_key < 1:
        raise ValueError("needles_per_key must be >= 1")
    alt = alt_code_bytes(max_alt=max_alt, distinct_alts=distinct_alts)
    return alt + NEEDLE_BYTES_BESIDES_ALT + KEY_BYTES / needles_per_key


def alt_dtype_for(max_alt: int) -> np.dtype[np.unsignedinteger]:
    if max_alt < 2**8:
        return np.dtype(np.uint8)
    if max_alt < 2**16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def _native_view(a: np.ndarray) -> memoryview:
    """A memoryview that indexes to Python ints: native byte order and aligned (memoryview
    cannot index '<I' or unaligned '=I' formats). The index file keeps its arrays aligned,
    so on a little-endian machine this copies nothing."""
    native = np.require(a, dtype=a.dtype.newbyteorder("="), requirements=["C", "A"])
    return native.data


class Run:
    __slots__ = (
        "_alts_mv",
        "_code_of",
        "_keys_mv",
        "_len_hi_mv",
        "_len_lo_mv",
        "_offsets_mv",
        "_starts_mv",
        "alt_table",
        "alts",
        "key_max",
        "key_min",
        "keys",
        "len_hi",
        "len_lo",
        "offsets",
        "starts",
    )

    def __init__(
        self,
        *,
        keys: np.ndarray,
        starts: np.ndarray,
        alts: np.ndarray,
        offsets: np.ndarray,
        len_lo: np.ndarray,
        len_hi: np.ndarray,
        alt_table: np.ndarray | None = None,
    ) -> None:
        n = len(offsets)
        if not (len(alts) == len(len_lo) == len(len_hi) == n and len(starts) == len(keys) + 1):
            raise ValueError("run arrays disagree in length")
        if alt_table is not None and (
            len(alt_table) > ALT_TABLE_MAX or alts.dtype.itemsize != 1 or not len(alt_table)
        ):
            raise ValueError("an alt table holds 1 to 256 keys, indexed by u8 codes")
        self.alt_table = alt_table
        # alt key -> its code (None: the alts are the keys themselves).
        self._code_of = (
            None if alt_table is None else {a: code for code, a in enumerate(alt_table.tolist())}
        )
        self.keys = keys
        self.starts = starts
        self.alts = alts
        self.offsets = offsets
        self.len_lo = len_lo
        self.len_hi = len_hi
        self.key_min = int(keys[0]) if len(keys) else 1
        self.key_max = int(keys[-1]) if len(keys) else 0
        # Lookups index single entries: memoryviews hand back Python ints directly, where
        # numpy would box scalars first (2.7 us -> 1.1 us per lookup at 140k keys).
        self._keys_mv = _native_view(keys)
        self._starts_mv = _native_view(starts)
        self._alts_mv = _native_view(alts)
        self._offsets_mv = _native_view(offsets)
        self._len_lo_mv = _native_view(len_lo)
        self._len_hi_mv = _native_view(len_hi)

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def nbytes(self) -> int:
        return sum(
            a.nbytes
            for a in (self.keys, self.starts, self.alts, self.offsets, self.len_lo, self.len_hi)
        ) + (self.alt_table.nbytes if self.alt_table is not None else 0)

    def _alt_keys(self, codes: np.ndarray) -> U32:
        """The alt keys of a slice of `alts`, as u32."""
        keys: U32 = (codes if self.alt_table is None else self.alt_table[codes]).astype(np.uint32)
        return keys

    def alt_at(self, i: int) -> int:
        """The alt key of entry i."""
        code = int(self.alts[i])
        return code if self.alt_table is None else int(self.alt_table[code])

    def get(self, key: int, alt_key: int) -> tuple[int, int] | None:
        """(offset_units, length_units) of the entry, tombstones included (offset 0)."""
        if key < self.key_min or key > self.key_max:
            return None
        if self._code_of is not None:
            code = self._code_of.get(alt_key)
            if code is None:
                return None
            alt_key = code
        keys = self._keys_mv
        i = bisect_left(keys, key)
        if keys[i] != key:
            return None
        starts = self._starts_mv
        start, end = starts[i], starts[i + 1]
        alts = self._alts_mv
        if end - start == 1:
            if alts[start] != alt_key:
                return None
            j = start
        else:
            try:
                j = start + alts[start:end].tolist().index(alt_key)
            except ValueError:
                return None
        return self._offsets_mv[j], self._len_lo_mv[j] | (self._len_hi_mv[j] << 16)

    def alts_of(self, key: int) -> list[tuple[int, int]]:
        """[(alt_key, offset_units)] of every entry of `key` (tombstones have offset 0)."""
        if key < self.key_min or key > self.key_max:
            return []
        i = bisect_left(self._keys_mv, key)
        if self._keys_mv[i] != key:
            return []
        s, e = self._starts_mv[i], self._starts_mv[i + 1]
        alts = self._alt_keys(self.alts[s:e]).tolist()
        return list(zip(alts, self.offsets[s:e].tolist(), strict=True))

    def expanded(self) -> tuple[U64, U32, U32, U32]:
        """Per-entry (keys, alts, offsets, lengths) arrays."""
        counts = np.diff(self.starts)
        keys = np.repeat(self.keys, counts)
        lengths = self.len_lo.astype(np.uint32) | (self.len_hi.astype(np.uint32) << 16)
        return keys, self._alt_keys(self.alts), self.offsets, lengths

    def iter_live(self) -> Iterator[tuple[int, int, int, int]]:
        keys, alts, offsets, lengths = self.expanded()
        live = offsets != TOMBSTONE_OFFSET
        yield from zip(
            keys[live].tolist(),
            alts[live].tolist(),
            offsets[live].tolist(),
            lengths[live].tolist(),
            strict=True,
        )

    def live_length_units(self) -> int:
        live = self.offsets != TOMBSTONE_OFFSET
        lo = self.len_lo[live].sum(dtype=np.uint64)
        hi = self.len_hi[live].sum(dtype=np.uint64)
        return int(lo) + (int(hi) << 16)

    def live_count(self) -> int:
        return int(np.count_nonzero(self.offsets != TOMBSTONE_OFFSET))


def empty_run() -> Run:
    return Run(
        keys=np.zeros(0, np.uint64),
        starts=np.zeros(1, np.uint32),
        alts=np.zeros(0, np.uint8),
        offsets=np.zeros(0, np.uint32),
        len_lo=np.zeros(0, np.uint16),
        len_hi=np.zeros(0, np.uint8),
    )


def run_from_sorted(keys: U64, alts: U32, offsets: U32, lengths: U32) -> Run:
    """Builds a run from per-entry arrays already sorted by (key, alt) without duplicates."""
    n = len(keys)
    if n == 0:
        return empty_run()
    if n >= 2**32:
        raise ValueError("a run holds fewer than 2**32 entries")
    if int(lengths.max()) > _LEN_MASK:
        raise ValueError("needle length exceeds 24 bits of offset units")
    boundaries = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    starts = np.empty(len(boundaries) + 2, np.uint32)
    starts[0] = 0
    starts[1:-1] = boundaries
    starts[-1] = n
    codes, table = _encode_alts(alts)
    return Run(
        keys=np.ascontiguousarray(keys[starts[:-1]]),
        starts=starts,
        alts=codes,
        alt_table=table,
        offsets=np.ascontiguousarray(offsets, dtype=np.uint32),
        len_lo=(lengths & 0xFFFF).astype(np.uint16),
        len_hi=(lengths >> 16).astype(np.uint8),
    )


def _encode_alts(alts: U32) -> tuple[np.ndarray, U32 | None]:
    """The alts array of a run and its table: the keys themselves in the narrowest type, or
    u8 codes into the sorted distinct keys when that is narrower."""
    max_alt = int(alts.max())
    if max_alt < 2**8:
        return alts.astype(np.uint8), None
    table = np.unique(alts)
    if len(table) > ALT_TABLE_MAX:
        return alts.astype(alt_dtype_for(max_alt)), None
    codes = np.searchsorted(table, alts).astype(np.uint8)
    return codes, table.astype(np.uint32)


def run_from_entries(entries: Mapping[int, int]) -> Run:
    """Builds a run from a memtable: packed (key << 32 | alt) -> (offset << 24 | length)."""
    n = len(entries)
    keys = np.fromiter((k >> _ALT_BITS for k in entries), dtype=np.uint64, count=n)
    alts = np.fromiter((k & _ALT_MASK for k in entries), dtype=np.uint32, count=n)
    packed_values = np.fromiter(entries.values(), dtype=np.uint64, count=n)
    order = np.lexsort((alts, keys))
    values = packed_values[order]
    return run_from_sorted(
        keys[order],
        alts[order],
        (values >> np.uint64(_LEN_BITS)).astype(np.uint32),
        (values & np.uint64(_LEN_MASK)).astype(np.uint32),
    )


def merge_runs(runs: Sequence[Run], *, drop_tombstones: bool) -> Run:
    """Merges runs given newest first; for a (key, alt) present in several, the newest wins.
    Tombstones are dropped when the result becomes the oldest run (nothing left to hide)."""
    runs = [r for r in runs if len(r)]
    if not runs:
        return empty_run()
    if len(runs) == 1 and not drop_tombstones:
        return runs[0]
    parts = [r.expanded() for r in runs]
    keys = np.concatenate([p[0] for p in parts])
    alts = np.concatenate([p[1] for p in parts])
    offsets = np.concatenate([p[2] for p in parts])
    lengths = np.concatenate([p[3] for p in parts])
    del parts
    if len(runs) > 1:
        # lexsort is stable: among equal (key, alt), the newest run's entry comes first.
        order = np.lexsort((alts, keys))
        keys, alts, offsets, lengths = keys[order], alts[order], offsets[order], lengths[order]
        del order
        first = np.ones(len(keys), bool)
        first[1:] = (keys[1:] != keys[:-1]) | (alts[1:] != alts[:-1])
        if not first.all():
            keys, alts, offsets, lengths = keys[first], alts[first], offsets[first], lengths[first]
    if drop_tombstones:
        live = offsets != TOMBSTONE_OFFSET
        if not live.all():
            keys, alts, offsets, lengths = keys[live], alts[live], offsets[live], lengths[live]
    return run_from_sorted(keys, alts, offsets, lengths)
