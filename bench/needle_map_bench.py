"""RAM per needle and reopen time of a volume with many needles.

Run as a subprocess (`python -m bench.needle_map_bench PHASE DIR NEEDLES`) so that each
phase measures its own RSS growth from a clean process:

- build:  creates volume 1 in DIR and writes NEEDLES needles through the real write path
          (Volume.put: group commit, needle map, merges), with a realistic mix of about nine
          variants per photo and time-ordered photo ids. Reports the RSS growth of the map
          built by writes, then closes the volume (final index checkpoint).
- reopen: opens the volume (index checkpoint + tail scan) and reports the time and the RSS
          growth: the steady state of a node after a restart.

Prints one JSON line.
"""

from __future__ import annotations

import gc
import itertools
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Final

import psutil

from store.memory import trim_heap, tune_allocator
from store.storage import OsStorage
from store.volume_config import VolumeLimits
from store.volume_loading import create_volume, open_volume
from store.volume_write import write_all

VARIANTS_PER_PHOTO: Final = 9
EPOCH_MS: Final = 1_700_000_000_000
IN_FLIGHT_MAX: Final = 8192


def _rss() -> int:
    gc.collect()
    trim_heap()
    return int(psutil.Process().memory_info().rss)


def photo_keys(count: int, seed: int = 7) -> list[int]:
    """Instagram-style ids: 41 bits of ms, 13 bits of shard, 10 bits of sequence; ascending
    in time as uploads are."""
    rnd = random.Random(seed)
    ms = EPOCH_MS
    keys = []
    for _ in range(count):
        ms += rnd.randrange(0, 3)
        keys.append((ms << 23) | (rnd.randrange(8192) << 10) | rnd.randrange(1024))
    return sorted(set(keys))


def build(directory: Path, needles: int) -> dict[str, Any]:
    limits = VolumeLimits(size_bytes_max=needles * 64 + 10**9)
    storage = OsStorage(directory)
    photos = photo_keys(-(-needles // VARIANTS_PER_PHOTO) + 1000)
    base = _rss()
    vol = create_volume(storage, 1, limits)
    t0 = time.monotonic()
    items = (
        (key, alt, 0x5EED, b"v%d" % alt) for key in photos for alt in range(VARIANTS_PER_PHOTO)
    )
    written = write_all(vol, itertools.islice(items, needles), in_flight_max=IN_FLIGHT_MAX)
    write_s = time.monotonic() - t0
    vol.generation.map.wait_for_merges()
    grown = _rss() - base
    stats = vol.generation.map.statistics()
    vol.close()  # writes the final index checkpoint
    return {
        "needles": written,
        "photos": len(photos),
        "write_s": round(write_s, 2),
        "writes_per_s": round(written / write_s),
        "ram_bytes_per_needle_written": round(grown / written, 2),
        "map_runs": stats.runs,
        "map_array_bytes_per_needle": round(stats.run_bytes / written, 2),
    }


def reopen(directory: Path) -> dict[str, Any]:
    storage = OsStorage(directory)
    base = _rss()
    t0 = time.monotonic()
    vol = open_volume(storage, 1, VolumeLimits())
    reopen_s = time.monotonic() - t0
    grown = _rss() - base
    needles = vol.needles_live
    # Lookups stay in the microseconds: time a sample of random hits.
    keys, alts, _, _ = vol.generation.map.snapshot().expanded()
    rnd = random.Random(3)
    sample = [rnd.randrange(len(keys)) for _ in range(100_000)]
    pairs = [(int(keys[i]), int(alts[i])) for i in sample]
    del keys, alts
    m = vol.generation.map
    t0 = time.perf_counter()
    for k, a in pairs:
        m.get(k, a)
    lookup_us = (time.perf_counter() - t0) / len(pairs) * 1e6
    vol.close(checkpoint=False)
    return {
        "needles": needles,
        "reopen_s": round(reopen_s, 3),
        "ram_bytes_per_needle": round(grown / needles, 2),
        "lookup_us": round(lookup_us, 2),
    }


def main(argv: list[str]) -> None:
    phase, directory, needles = argv[0], Path(argv[1]), int(argv[2])
    tune_allocator()
    result = build(directory, needles) if phase == "build" else reopen(directory)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
