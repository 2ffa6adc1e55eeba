"""The objects a store benchmark serves, laid out for each server: needles in a pinhole
volume, one file per photo in a hashed tree for nginx. Same bytes everywhere."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.peers.hashed_tree import write_tree
from store.client import needle_path
from store.storage import OsStorage
from store.volume_config import VolumeLimits
from store.volume_loading import create_volume
from store.volume_write import write_all

BENCH_VOLUME: Final = 1
BENCH_COOKIE: Final = 0x5EED_F00D_CAFE_BEEF
# Keys of size class i are KEY_BASE * (i + 1) + n, so classes never collide.
KEY_BASE: Final = 10**9
_NOISE_BYTES: Final = 8 * 1024 * 1024
IN_FLIGHT_MAX: Final = 2048


@dataclass(frozen=True, slots=True)
class ObjectSet:
    size_bytes: int
    keys: list[int]

    def payloads(self) -> Iterator[tuple[int, bytes]]:
        """(key, bytes) for every object: distinct, incompressible, reproducible."""
        noise = random.Random(self.size_bytes).randbytes(_NOISE_BYTES)
        span = _NOISE_BYTES - self.size_bytes
        for key in self.keys:
            start = (key * 7919) % span
            yield key, key.to_bytes(8, "little") + noise[start : start + self.size_bytes - 8]

    def store_paths(self) -> list[str]:
        return [needle_path(BENCH_VOLUME, k, 0, BENCH_COOKIE) for k in self.keys]


def object_sets(counts: dict[int, int]) -> list[ObjectSet]:
    return [
        ObjectSet(size, [KEY_BASE * (i + 1) + n for n in range(count)])
        for i, (size, count) in enumerate(sorted(counts.items()))
    ]


def load_store(data_dir: Path, sets: list[ObjectSet]) -> Path:
    """Writes every object into volume 1 under `data_dir`/volumes through the real write
    path (group commit), before the node starts. Returns the volume file."""
    total = sum(s.size_bytes * len(s.keys) for s in sets)
    storage = OsStorage(data_dir / "volumes")
    vol = create_volume(storage, BENCH_VOLUME, VolumeLimits(size_bytes_max=2 * total + 2**30))
    try:
        write_all(
            vol,
            ((key, 0, BENCH_COOKIE, data) for s in sets for key, data in s.payloads()),
            in_flight_max=IN_FLIGHT_MAX,
        )
    finally:
        vol.close()
    return Path(storage.root) / f"v{BENCH_VOLUME}.dat"


def load_tree(root: Path, s: ObjectSet) -> list[str]:
    """One file per object in a hashed directory tree; returns nginx URL paths."""
    return write_tree(root, ((str(k), d) for k, d in s.payloads()))


def shuffled_paths_file(path: Path, paths: list[str], seed: int) -> Path:
    order = list(paths)
    random.Random(seed).shuffle(order)
    path.write_text("\n".join(order) + "\n")
    return path


def disk_of(path: Path) -> str:
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
