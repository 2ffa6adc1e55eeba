"""The in-RAM needle map: (key, alt_key) -> (offset_units, length_units).

Memory is the point of Haystack: a read must cost one disk access, so the whole index lives
in RAM, and it must be small. This map is a tiny log-structured merge tree:

- a memtable (dict) takes new entries; when it reaches `memtable_entries_max` it is frozen
  and turned into a sorted, immutable run;
- runs hold entries grouped by key in numpy arrays (see store/needle_run.py): about
  8 bytes per needle plus 12 bytes per distinct key, so ~9.3 bytes per needle with nine
  variants per photo;
- runs of similar size are merged (size-tiered), newest entry winning, so a map of N
  needles has O(log N) runs and a lookup checks only the runs whose key range holds the key.

Deletes are tombstones (offset 0: the superblock, never a needle) until a merge into the
oldest run drops them.

Threading: one writer thread mutates (put/delete/flush/merge); any number of reader
threads (the event loop) look up without locks. Each mutation publishes new state with a
single attribute assignment, in an order that never hides an entry from a reader.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from store.memory import trim_heap
from store.needle_run import TOMBSTONE_OFFSET, Run, merge_runs, run_from_entries

MEMTABLE_ENTRIES_MAX: Final = 32 * 1024
# After merging a run at least this large, free heap memory goes back to the system.
TRIM_AFTER_MERGE_ENTRIES_MIN: Final = 1 << 20
# Two runs are merged once the newer one has grown to this fraction of the older one.
MERGE_SIZE_RATIO_MIN: Final = 0.5

_ALT_BITS: Final = 32
_LEN_BITS: Final = 24
_LEN_MASK: Final = (1 << _LEN_BITS) - 1
_ALT_MASK: Final = (1 << _ALT_BITS) - 1


def _pack_key(key: int, alt_key: int) -> int:
    return (key << _ALT_BITS) | alt_key


def _pack_value(offset_units: int, length_units: int) -> int:
    return (offset_units << _LEN_BITS) | length_units


@dataclass(frozen=True, slots=True)
class NeedleMapStatistics:
    memtable_entries: int
    frozen_memtables: int
    runs: int
    run_entries: int
    run_bytes: int


class NeedleMap:
    def __init__(
        self, *, memtable_entries_max: int = MEMTABLE_ENTRIES_MAX, background_merges: bool = True
    ) -> None:
        if memtable_entries_max < 1:
            raise ValueError("memtable_entries_max must be positive")
        self._memtable_entries_max = memtable_entries_max
        self._background_merges = background_merges
        self._merger_lock = threading.Lock()
        self._merger: threading.Thread | None = None
        self._merge_requested = False
        self._mem: dict[int, int] = {}
        self._frozen: tuple[dict[int, int], ...] = ()  # newest first
        self._runs: tuple[Run, ...] = ()  # newest first
        self._write_lock = threading.Lock()

    @classmethod
    def from_run(
        cls,
        run: Run,
        *,
        memtable_entries_max: int = MEMTABLE_ENTRIES_MAX,
        background_merges: bool = True,
    ) -> NeedleMap:
        m = cls(memtable_entries_max=memtable_entries_max, background_merges=background_merges)
        if len(run):
            m._runs = (run,)
        return m

    # -- reads (lock-free) --------------------------------------------------------------

    def get(self, key: int, alt_key: int) -> tuple[int, int] | None:
        """(offset_units, length_units) of the live needle, or None."""
        packed = (key << _ALT_BITS) | alt_key
        value = self._mem.get(packed)
        if value is None:
            for frozen in self._frozen:
                value = frozen.get(packed)
                if value is not None:
                    break
            else:
                for run in self._runs:
                    found = run.get(key, alt_key)
                    if found is not None:
                        return None if found[0] == TOMBSTONE_OFFSET else found
                return None
        offset = value >> _LEN_BITS
        if offset == TOMBSTONE_OFFSET:
            return None
        return offset, value & _LEN_MASK

    def alt_keys(self, key: int) -> list[int]:
        """Alternate keys with a live needle under `key`, ascending."""
        seen: dict[int, bool] = {}  # alt -> live; newest source decides
        for source in (self._mem, *self._frozen):
            lo, hi = key << _ALT_BITS, ((key + 1) << _ALT_BITS) - 1
            for packed, value in list(source.items()):
                if lo <= packed <= hi:
                    seen.setdefault(packed & _ALT_MASK, (value >> _LEN_BITS) != TOMBSTONE_OFFSET)
        for run in self._runs:
            for alt, offset in run.alts_of(key):
                seen.setdefault(alt, offset != TOMBSTONE_OFFSET)
        return sorted(alt for alt, live in seen.items() if live)

    def __len__(self) -> int:
        """Live entries. O(size): for statistics and tests, not the data path."""
        return sum(1 for _ in self.items())

    def items(self) -> Iterator[tuple[int, int, int, int]]:
        """Live (key, alt_key, offset_units, length_units), sorted by (key, alt_key)."""
        run = self.snapshot()
        yield from run.iter_live()

    def snapshot(self) -> Run:
        """One merged run of the whole map (tombstones dropped): for checkpoints and
        compaction. Costs a merge; call it off the event loop."""
        # Read newest to oldest: an entry moving between them during the reads is seen twice
        # (same value), never missed. dict.copy() is atomic under the GIL.
        mem = self._mem.copy()
        frozen = self._frozen
        runs = self._runs
        sources = [run_from_entries(mem)] if mem else []
        sources += [run_from_entries(f) for f in frozen]
        sources += list(runs)
        return merge_runs(sources, drop_tombstones=True)

    def statistics(self) -> NeedleMapStatistics:
        runs = self._runs
        return NeedleMapStatistics(
            memtable_entries=len(self._mem),
            frozen_memtables=len(self._frozen),
            runs=len(runs),
            run_entries=sum(len(r) for r in runs),
            run_bytes=sum(r.nbytes for r in runs),
        )

    # -- writes (one writer thread) ------------------------------------------------------

    def put(self, key: int, alt_key: int, offset_units: int, length_units: int) -> None:
        if offset_units == TOMBSTONE_OFFSET:
            raise ValueError("offset 0 is the superblock")
        if not 0 < length_units <= _LEN_MASK:
            raise ValueError(f"length out of range: {length_units} units")
        self._mem[_pack_key(key, alt_key)] = _pack_value(offset_units, length_units)
        self._maybe_flush()

    def delete(self, key: int, alt_key: int) -> None:
        self._mem[_pack_key(key, alt_key)] = _pack_value(TOMBSTONE_OFFSET, 0)
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self._mem) >= self._memtable_entries_max:
            self.flush()

    def flush(self) -> None:
        """Turns the memtable into a run; merges of similar-sized runs follow in the
        background (or at once when background merges are off)."""
        with self._write_lock:
            mem = self._mem
            if not mem:
                return
            # Publish the frozen memtable before emptying the live one, and the run before
            # dropping the frozen memtable, so a reader always finds the entry somewhere.
            self._frozen = (mem, *self._frozen)
            self._mem = {}
            run = run_from_entries(mem)
            self._runs = (run, *self._runs)
            self._frozen = tuple(f for f in self._frozen if f is not mem)
        self._schedule_merges()

    def _merge_candidate(self) -> tuple[Run, Run, bool] | None:
        runs = self._runs
        for i in range(len(runs) - 1):
            if len(runs[i]) >= MERGE_SIZE_RATIO_MIN * len(runs[i + 1]):
                return runs[i], runs[i + 1], i + 2 == len(runs)
        return None

    def _merge_once(self) -> bool:
        candidate = self._merge_candidate()
        if candidate is None:
            return False
        newer, older, into_oldest = candidate
        # Runs are immutable and only merges remove them, so the merge is computed without
        # the lock and published with one assignment.
        merged = merge_runs([newer, older], drop_tombstones=into_oldest)
        with self._write_lock:
            runs = list(self._runs)
            i = next(i for i, r in enumerate(runs) if r is newer)
            assert runs[i + 1] is older
            runs[i : i + 2] = [merged] if len(merged) else []
            self._runs = tuple(runs)
        del newer, older, candidate
        if len(merged) >= TRIM_AFTER_MERGE_ENTRIES_MIN:
            trim_heap()
        return True

    def _schedule_merges(self) -> None:
        if not self._background_merges:
            while self._merge_once():
                pass
            return
        with self._merger_lock:
            if self._merger is not None and self._merger.is_alive():
                self._merge_requested = True
                return
            self._merge_requested = False
            self._merger = threading.Thread(
                target=self._merge_loop, name="needle-map-merge", daemon=True
            )
            self._merger.start()

    def _merge_loop(self) -> None:
        while True:
            while self._merge_once():
                pass
            with self._merger_lock:
                if not self._merge_requested:
                    self._merger = None
                    return
                self._merge_requested = False

    def wait_for_merges(self) -> None:
        """Blocks until background merges are done (tests, benchmarks, shutdown)."""
        while True:
            with self._merger_lock:
                merger = self._merger
            if merger is None:
                return
            merger.join()

    def compact_all(self) -> None:
        """Merges everything into one run (after a bulk load, before a checkpoint)."""
        self.wait_for_merges()
        with self._write_lock:
            mem = self._mem
            if mem:
                self._frozen = (mem, *self._frozen)
                self._mem = {}
            sources = [run_from_entries(f) for f in self._frozen] + list(self._runs)
            merged = merge_runs(sources, drop_tombstones=True)
            self._runs = (merged,) if len(merged) else ()
            self._frozen = ()

    def memory_bytes(self) -> int:
        """Approximate bytes held by runs plus memtables (dict entries at ~100 bytes)."""
        entries = len(self._mem) + sum(len(f) for f in self._frozen)
        return sum(r.nbytes for r in self._runs) + 100 * entries
