"""Sealed Haystack volumes and small f4 cells on real files, for the f4 tests."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from f4 import sidecar
from f4.block_store import Buffer, block_name, sidecar_of
from f4.encoder import Migration, MigrationStats
from f4.errors import BlockMissing
from f4.keystore import KeyStore
from f4.local_block_store import LocalBlockStore, LocalBlockWriter
from f4.needle_source import NeedleSource
from store.storage import OsStorage
from store.volume_config import VolumeLimits
from store.volume_loading import create_volume
from store.volume_state import sealed

SMALL_BLOCK = 16 * 1024
LIMITS = VolumeLimits(size_bytes_max=64 * 1024 * 1024, memtable_entries_max=64)

Blobs = dict[tuple[int, int], tuple[int, bytes]]  # (key, alt) -> (cookie, data)


def random_blobs(rng: random.Random, count: int, size_max: int = 3000) -> Blobs:
    blobs: Blobs = {}
    for i in range(count):
        data = rng.randbytes(rng.randint(1, size_max))
        blobs[(1000 + i, rng.randint(0, 5) << 8 | 1)] = (rng.getrandbits(64), data)
    return blobs


def sealed_volume(directory: Path, vid: int, blobs: Blobs, deleted: Blobs | None = None) -> Path:
    """Writes `blobs` (and `deleted`, which are written and then deleted) into a new
    Haystack volume and seals it."""
    storage = OsStorage(directory)
    vol = create_volume(storage, vid, LIMITS)
    try:
        for (key, alt), (cookie, data) in {**blobs, **(deleted or {})}.items():
            vol.put(key, alt, cookie, data).result()
        for key, alt in deleted or {}:
            vol.delete(key, alt).result()
        vol.set_state(sealed("test"))
    finally:
        vol.close()
    return directory


@dataclass
class Cell:
    root: Path
    store: LocalBlockStore
    keys: KeyStore
    work: Path

    def migrate(
        self, volumes_dir: Path, vid: int, on_step: Callable[[str], None] | None = None
    ) -> MigrationStats:
        source = NeedleSource(volumes_dir, vid)
        try:
            return Migration(
                source, self.store, self.keys, self.work, block_bytes=SMALL_BLOCK, on_step=on_step
            ).run()
        finally:
            source.close()

    def block_files(self) -> list[Path]:
        return sorted(self.root.glob("blocks/*/*.blk"))


def make_cell(root: Path, nodes: int = 16, keys: KeyStore | None = None) -> Cell:
    root.mkdir(parents=True, exist_ok=True)
    (root / "work").mkdir(exist_ok=True)
    store = LocalBlockStore(root / "blocks", [f"n{i:02d}" for i in range(nodes)])
    return Cell(root, store, keys or KeyStore(root / "keys.db"), root / "work")


@dataclass
class LosingStore:
    """A block store that loses chosen blocks (as missing) without touching the files: lets a
    test try every loss pattern quickly. Tests only."""

    inner: LocalBlockStore
    lost: set[tuple[int, int]] = field(default_factory=set)  # (stripe, block)

    def _is_lost(self, name: str) -> bool:
        return any(
            name.startswith(block_name(v, s, b).removesuffix(".blk") + ".")
            for v in (1, 2, 3)
            for s, b in self.lost
        )

    def nodes(self) -> list[str]:
        return self.inner.nodes()

    def get_range(self, node: str, name: str, offset: int, length: int) -> bytes:
        if self._is_lost(name):
            raise BlockMissing(name)
        return self.inner.get_range(node, name, offset, length)

    def get_checked_range(self, node: str, block: str, offset: int, length: int) -> bytes:
        if self._is_lost(block):
            raise BlockMissing(block)
        return self.inner.get_checked_range(node, block, offset, length)

    def get(self, node: str, name: str) -> bytes:
        if self._is_lost(name):
            raise BlockMissing(name)
        return self.inner.get(node, name)

    def exists(self, node: str, name: str) -> bool:
        return not self._is_lost(name) and self.inner.exists(node, name)

    def size(self, node: str, name: str) -> int:
        if self._is_lost(name):
            raise BlockMissing(name)
        return self.inner.size(node, name)

    def put(self, node: str, name: str, pieces: Iterable[Buffer]) -> None:
        self.inner.put(node, name, pieces)

    def open_writer(self, node: str, name: str) -> LocalBlockWriter:
        return self.inner.open_writer(node, name)

    def delete(self, node: str, name: str) -> None:
        self.inner.delete(node, name)

    def list(self, node: str) -> list[str]:
        return self.inner.list(node)


def put_block_with_sidecar(root: Path, node: str, block: str, data: bytes) -> None:
    """`block` on `node` under `root` with its sidecar of chunk sums, as a migration writes
    them (through LocalBlockStore, committed)."""
    sums = sidecar.SidecarBuilder()
    sums.update(data)
    LocalBlockStore(root, [node]).put(node, block, [data])
    LocalBlockStore(root, [node]).put(node, sidecar_of(block), [sums.encode()])
