"""Migration, reads (healthy, degraded, absent), deletes, corruption and rebuild on real
files: a sealed Haystack volume migrated into a 16-node local cell."""

from __future__ import annotations

import itertools
import random
import shutil
from pathlib import Path

import pytest

from common.jobs.local import Throttle
from f4 import index as index_file
from f4.blob import BlobId
from f4.block_store import block_name
from f4.encoder import Migration, stripe_nodes
from f4.erasure import DATA_BLOCKS, STRIPE_BLOCKS
from f4.errors import BlobAbsent, StripeUnrecoverable, VolumeNotSealed
from f4.needle_source import NeedleSource
from f4.reader import Reader, delete
from f4.rebuild import RebuildProgress, rebuild, verify
from store.storage import OsStorage
from store.volume_loading import create_volume
from store.volume_state import sealed
from tests.f4.helpers import (
    LIMITS,
    Blobs,
    Cell,
    LosingStore,
    make_cell,
    random_blobs,
    sealed_volume,
)

VID = 1


@pytest.fixture
def blobs() -> Blobs:
    return random_blobs(random.Random(7), 120)


@pytest.fixture
def cell(tmp_path: Path, blobs: Blobs) -> Cell:
    rng = random.Random(8)
    deleted = {(5000 + i, 1): (rng.getrandbits(64), rng.randbytes(500)) for i in range(5)}
    sealed_volume(tmp_path / "vols", VID, blobs, deleted)
    c = make_cell(tmp_path / "cell")
    stats = c.migrate(tmp_path / "vols", VID)
    assert stats.blobs == len(blobs)
    assert stats.stripes >= 2
    return c


def _read_all(reader: Reader, blobs: Blobs) -> None:
    for (key, alt), (cookie, data) in blobs.items():
        assert reader.read(VID, key, alt, cookie) == data


def _block_path(cell: Cell, stripe: int, block: int) -> Path:
    idx = index_file.load(cell.store, VID)
    return cell.store.root / idx.stripes[stripe].nodes[block] / block_name(VID, stripe, block)


def test_round_trip_and_absent_answers(cell: Cell, blobs: Blobs) -> None:
    reader = Reader(cell.store, cell.keys)
    _read_all(reader, blobs)
    assert reader.counter.degraded_reads == 0
    (key, alt), (cookie, _) = next(iter(blobs.items()))
    for args in ((key, alt, cookie ^ 1), (key, alt + 1, cookie), (5000, 1, 0)):
        with pytest.raises(BlobAbsent):
            reader.read(VID, *args)
    assert verify(cell.store, VID).ok


def test_migration_needs_a_sealed_volume(tmp_path: Path) -> None:
    vol = create_volume(OsStorage(tmp_path), 3, LIMITS)
    vol.close()
    with pytest.raises(VolumeNotSealed):
        NeedleSource(tmp_path, 3)


def test_delete_is_immediate_and_leaves_no_plaintext(cell: Cell, blobs: Blobs) -> None:
    reader = Reader(cell.store, cell.keys)
    (key, alt), (cookie, data) = max(blobs.items(), key=lambda kv: len(kv[1][1]))
    blob_key = cell.keys.get(BlobId(VID, key, alt))
    assert blob_key is not None
    assert delete(cell.keys, VID, key, alt)
    with pytest.raises(BlobAbsent):
        reader.read(VID, key, alt, cookie)
    with pytest.raises(BlobAbsent):
        reader.degraded_read(VID, key, alt, cookie)
    everything = b"".join(p.read_bytes() for p in cell.root.rglob("*") if p.is_file())
    assert data[:64] not in everything  # blocks hold ciphertext only
    key_files = b"".join(p.read_bytes() for p in cell.keys.files())
    assert blob_key.secret not in key_files
    assert not delete(cell.keys, VID, key, alt)


@pytest.mark.parametrize(
    "lost",
    [(0, 1, 2, 3), (10, 11, 12, 13), (0, 5, 11, 13), (9, 8, 12, 1)],
    ids=["data-only", "parity-only", "mixed", "mixed-2"],
)
def test_four_lost_blocks_read_exact_then_rebuild(
    cell: Cell, blobs: Blobs, lost: tuple[int, ...]
) -> None:
    originals = {b: _block_path(cell, 0, b).read_bytes() for b in range(STRIPE_BLOCKS)}
    for b in lost:
        if b % 2:
            _block_path(cell, 0, b).unlink()
        else:  # corrupt one byte in the middle
            path = _block_path(cell, 0, b)
            raw = bytearray(path.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            path.write_bytes(bytes(raw))
    reader = Reader(cell.store, cell.keys)
    _read_all(reader, blobs)
    assert (reader.counter.degraded_reads > 0) == any(b < DATA_BLOCKS for b in lost)
    report = verify(cell.store, VID)
    assert {(d.stripe, d.block) for d in report.damage} == {(0, b) for b in lost}
    seen: list[RebuildProgress] = []
    stats = rebuild(cell.store, VID, throttle=Throttle(None), on_progress=seen.append)
    assert stats.blocks_rebuilt == 4
    assert seen[-1].blocks_done == seen[-1].blocks_total == 4
    assert verify(cell.store, VID).ok
    for b in range(STRIPE_BLOCKS):
        assert _block_path(cell, 0, b).read_bytes() == originals[b]
    fresh = Reader(cell.store, cell.keys)
    _read_all(fresh, blobs)
    assert fresh.counter.degraded_reads == 0


def test_rebuild_moves_blocks_of_a_lost_node(cell: Cell, blobs: Blobs) -> None:
    idx = index_file.load(cell.store, VID)
    node = idx.stripes[0].nodes[3]
    shutil.rmtree(cell.store.root / node)  # the whole failure domain is gone
    reader = Reader(cell.store, cell.keys)
    _read_all(reader, blobs)
    assert reader.counter.degraded_reads > 0
    stats = rebuild(cell.store, VID)
    degraded = reader.counter.degraded_reads
    _read_all(reader, blobs)  # the reader finds the moved blocks through a newer index
    assert reader.counter.degraded_reads == degraded
    assert stats.blocks_rebuilt >= 1
    after = index_file.load(cell.store, VID)
    assert after.generation > idx.generation
    assert all(node not in s.nodes for s in after.stripes)
    assert all(len(set(s.nodes)) == STRIPE_BLOCKS for s in after.stripes)
    (cell.store.root / node).mkdir()  # the node comes back empty
    if node in index_file.index_nodes(cell.store, VID):
        assert not verify(cell.store, VID).ok  # its index copy is missing
        assert rebuild(cell.store, VID).blocks_rebuilt == 0
    assert verify(cell.store, VID).ok
    _read_all(Reader(cell.store, cell.keys), blobs)


def test_reads_of_a_lost_block_decode_the_index_only_when_it_changed(
    cell: Cell, blobs: Blobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx = index_file.load(cell.store, VID)
    shutil.rmtree(cell.store.root / idx.stripes[0].nodes[3])
    loads: list[int] = []
    real_load = index_file.load

    def counting_load(
        store: object, volume: int, *, racks: index_file.RackOf | None = None
    ) -> index_file.VolumeIndex:
        loads.append(volume)
        return real_load(cell.store, volume, racks=racks)

    monkeypatch.setattr(index_file, "load", counting_load)
    reader = Reader(cell.store, cell.keys)
    _read_all(reader, blobs)
    _read_all(reader, blobs)
    assert reader.counter.degraded_reads > 0
    assert loads == [VID]  # the first read's load; lost-block reads peek at headers only
    rebuild(cell.store, VID)
    loads.clear()
    degraded = reader.counter.degraded_reads
    _read_all(reader, blobs)
    assert loads == [VID]  # the rebuild's newer generation, loaded once
    assert reader.counter.degraded_reads == degraded


def test_five_losses_are_unrecoverable(cell: Cell, blobs: Blobs) -> None:
    losing = LosingStore(cell.store, {(0, b) for b in range(5)})
    reader = Reader(losing, cell.keys)
    idx = index_file.load(cell.store, VID)
    (key, alt), entry = next((k, e) for k, e in idx.entries.items() if e.stripe == 0)
    with pytest.raises(StripeUnrecoverable):
        reader.read(VID, key, alt, entry.cookie)


def test_every_four_loss_combination_reads_byte_exact(cell: Cell, blobs: Blobs) -> None:
    idx = index_file.load(cell.store, VID)
    by_block: dict[int, tuple[int, int]] = {}
    for k, e in idx.entries.items():
        if e.stripe == 0:
            by_block.setdefault(e.block, k)
    assert len(by_block) == DATA_BLOCKS
    losing = LosingStore(cell.store)
    reader = Reader(losing, cell.keys)
    for lost in itertools.combinations(range(STRIPE_BLOCKS), 4):
        losing.lost = {(0, b) for b in lost}
        for b in lost:
            if b < DATA_BLOCKS:
                key, alt = by_block[b]
                cookie, data = blobs[(key, alt)]
                assert reader.read(VID, key, alt, cookie) == data, lost
    assert reader.counter.degraded_reads == 1001 * 4 * DATA_BLOCKS // STRIPE_BLOCKS


def test_degraded_read_amplification(tmp_path: Path) -> None:
    """Bytes read per byte served when the blob's block is lost, by blob size."""
    rng = random.Random(3)
    sizes = [10_000, 20_000, 40_000, 100_000]
    blobs = {(i, 1): (rng.getrandbits(64), rng.randbytes(s)) for i, s in enumerate(sizes)}
    sealed_volume(tmp_path / "vols", VID, blobs)
    cell = make_cell(tmp_path / "cell")
    source = NeedleSource(tmp_path / "vols", VID)
    Migration(source, cell.store, cell.keys, cell.work, block_bytes=1 << 20).run()
    source.close()
    ratios = {}
    for (key, alt), (cookie, data) in blobs.items():
        reader = Reader(cell.store, cell.keys)
        assert reader.degraded_read(VID, key, alt, cookie) == data
        ratios[len(data)] = reader.counter.bytes_read / reader.counter.bytes_served
        healthy = Reader(cell.store, cell.keys)
        healthy.read(VID, key, alt, cookie)
        assert healthy.counter.bytes_read <= len(data) + 2048 + 64
    assert ratios[20_000] <= 11.0 and ratios[40_000] <= 10.6 and ratios[100_000] <= 10.3
    assert all(r >= 10.0 for r in ratios.values())


def test_placement_uses_distinct_nodes(cell: Cell) -> None:
    idx = index_file.load(cell.store, VID)
    for s, info in enumerate(idx.stripes):
        assert info.nodes == stripe_nodes(cell.store.nodes(), s)
        assert len(set(info.nodes)) == STRIPE_BLOCKS


class RecordingThrottle:
    def __init__(self) -> None:
        self.paid = 0

    def wait(self, nbytes: int) -> None:
        self.paid += nbytes


def test_rebuild_pays_the_throttle_for_every_byte(cell: Cell) -> None:
    idx = index_file.load(cell.store, VID)
    for b in (0, 12):
        _block_path(cell, 1, b).unlink()
    throttle = RecordingThrottle()
    stats = rebuild(cell.store, VID, throttle=throttle)
    assert stats.blocks_rebuilt == 2
    assert throttle.paid == stats.bytes_written == 2 * idx.stripes[1].block_length


def test_source_takes_the_newest_live_needle(tmp_path: Path) -> None:
    storage = OsStorage(tmp_path)
    vol = create_volume(storage, 4, LIMITS)
    vol.put(1, 1, 11, b"old").result()
    vol.put(1, 1, 12, b"new").result()
    vol.put(2, 1, 13, b"gone").result()
    vol.delete(2, 1).result()
    vol.put(3, 1, 14, b"kept").result()
    vol.set_state(sealed("test"))
    vol.close()
    source = NeedleSource(tmp_path, 4)
    refs = source.live_needles()
    assert [(r.key, r.cookie) for r in refs] == [(1, 12), (3, 14)]
    assert [source.read(r) for r in refs] == [b"new", b"kept"]
    source.close()
