"""`verify(parity=True)` and `pinhole f4 verify --parity` on real files: silent corruption
the sidecar sums cannot see (a flipped byte whose chunk sum was recomputed), found by
recomputing each stripe's parity row by row, blamed on the right block, and rebuilt."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from f4 import index as index_file
from f4 import sidecar
from f4.block_store import block_name, sidecar_name
from f4.encoder import ROW_BYTES, Migration
from f4.erasure import DATA_BLOCKS, STRIPE_BLOCKS
from f4.keystore import KeyStore
from f4.local_block_store import LocalBlockStore
from f4.needle_source import NeedleSource
from f4.reader import Reader
from f4.rebuild import PARITY_MISMATCH, Damage, rebuild, verify
from tests.f4.helpers import Blobs, Cell, make_cell, random_blobs, sealed_volume
from tests.f4.test_cli import Site, _site

VID = 1
BLOCK_BYTES = 4 * ROW_BYTES  # blocks of several rows, so a flip can sit in a later one


@dataclass
class CountingPacer:
    paid: list[int] = field(default_factory=list)

    def wait(self, nbytes: int = 0) -> None:
        self.paid.append(nbytes)


@pytest.fixture
def blobs() -> Blobs:
    return random_blobs(random.Random(11), 150, 12_000)


def _migrate(cell: Cell, volumes: Path, blobs: Blobs) -> None:
    sealed_volume(volumes, VID, blobs)
    source = NeedleSource(volumes, VID)
    try:
        Migration(source, cell.store, cell.keys, cell.work, block_bytes=BLOCK_BYTES).run()
    finally:
        source.close()


@pytest.fixture
def cell(tmp_path: Path, blobs: Blobs) -> Cell:
    c = make_cell(tmp_path / "cell", nodes=14)
    _migrate(c, tmp_path / "vols", blobs)
    return c


def _block_path(cell: Cell, stripe: int, block: int) -> Path:
    node = index_file.load(cell.store, VID).stripes[stripe].nodes[block]
    return cell.store.root / node / block_name(VID, stripe, block)


def silent_flip(cell: Cell, stripe: int, block: int, offset: int) -> None:
    """Flips one byte of a block and rewrites its sidecar to match: a corruption the sums
    cannot see (as a bad write path or a firmware bug that also wrote the sums would make)."""
    path = _block_path(cell, stripe, block)
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))
    car = path.with_name(sidecar_name(VID, stripe, block))
    sums = sidecar.decode(car.read_bytes())
    car.write_bytes(sidecar.encode(sidecar.sums_of(bytes(raw)), sums.block_length))


def _read_all(reader: Reader, blobs: Blobs) -> None:
    for (key, alt), (cookie, data) in blobs.items():
        assert reader.read(VID, key, alt, cookie) == data


def _late_offset(cell: Cell) -> int:
    length = index_file.load(cell.store, VID).stripes[0].block_length
    assert length > ROW_BYTES + 1024, length  # the flip sits in the second row
    return ROW_BYTES + 777


def test_a_healthy_volume_passes_and_every_row_is_paid_for(cell: Cell) -> None:
    pacer = CountingPacer()
    report = verify(cell.store, VID, parity=True, throttle=pacer)
    assert report.ok and report.parity_checked
    lengths = [s.block_length for s in index_file.load(cell.store, VID).stripes]
    assert sum(pacer.paid) == STRIPE_BLOCKS * sum(lengths)
    assert max(pacer.paid) <= STRIPE_BLOCKS * ROW_BYTES  # one row of each block at a time
    assert report.bytes_read >= sum(pacer.paid)


def test_parity_block_flip_is_seen_by_parity_only_and_rebuilt(cell: Cell, blobs: Blobs) -> None:
    offset = _late_offset(cell)
    original = _block_path(cell, 0, 12).read_bytes()
    silent_flip(cell, 0, 12, offset)

    plain = verify(cell.store, VID)
    assert plain.ok and not plain.parity_checked  # the sums cannot see it
    report = verify(cell.store, VID, parity=True)
    assert not report.ok
    assert report.damage == (Damage(0, 12, PARITY_MISMATCH),)
    assert rebuild(cell.store, VID).blocks_rebuilt == 0  # a plain rebuild finds nothing

    stats = rebuild(cell.store, VID, parity=True)
    assert stats.blocks_rebuilt == 1
    assert _block_path(cell, 0, 12).read_bytes() == original
    assert verify(cell.store, VID, parity=True).ok
    _read_all(Reader(cell.store, cell.keys), blobs)


def test_data_block_flip_is_blamed_on_that_block_and_rebuilt(cell: Cell, blobs: Blobs) -> None:
    offset = _late_offset(cell)
    original = _block_path(cell, 0, 4).read_bytes()
    silent_flip(cell, 0, 4, offset)

    assert verify(cell.store, VID).ok
    report = verify(cell.store, VID, parity=True)
    # All four parity rows disagree; only block 4's row, decoded from the other 13,
    # makes them all agree: the data block is the one that lies.
    assert report.damage == (Damage(0, 4, PARITY_MISMATCH),)
    reader = Reader(cell.store, cell.keys)
    _read_all(reader, blobs)  # the blob over the flip fails its tag and reads degraded
    assert reader.counter.degraded_reads == 1

    assert rebuild(cell.store, VID, parity=True).blocks_rebuilt == 1
    assert _block_path(cell, 0, 4).read_bytes() == original
    assert verify(cell.store, VID, parity=True).ok
    fresh = Reader(cell.store, cell.keys)
    _read_all(fresh, blobs)
    assert fresh.counter.degraded_reads == 0


def test_a_data_liar_is_found_with_a_parity_block_lost(cell: Cell) -> None:
    silent_flip(cell, 0, 7, 100)
    _block_path(cell, 0, 13).unlink()
    report = verify(cell.store, VID, parity=True)
    assert set(report.damage) == {Damage(0, 13, "missing"), Damage(0, 7, PARITY_MISMATCH)}


def test_two_lying_data_blocks_blame_the_parity(cell: Cell) -> None:
    """Beyond one lying block in a row, parity cannot say which side lies: the stripe's
    parity blocks are reported (docs/operations/f4.md says what a rebuild then does)."""
    silent_flip(cell, 0, 2, 5000)
    silent_flip(cell, 0, 6, 5000)
    report = verify(cell.store, VID, parity=True)
    assert report.damage == tuple(
        Damage(0, b, PARITY_MISMATCH) for b in range(DATA_BLOCKS, STRIPE_BLOCKS)
    )


def test_cli_verify_parity(tmp_path: Path, blobs: Blobs) -> None:
    site: Site = _site(tmp_path, ["--media-data", str(tmp_path / "media")])
    site.write_config(rebuild_mb_s=500)
    config = site.config()
    config.work_dir.mkdir(parents=True)
    store = LocalBlockStore(config.blocks_dir, [n.name for n in config.nodes])
    cell = Cell(config.cell_root, store, KeyStore(config.keys_path), config.work_dir)
    _migrate(cell, site.volumes, blobs)  # in-process: the command under test is verify
    cell.keys.close()
    silent_flip(cell, 0, 11, 3)

    plain = site.run("f4", "verify")
    assert plain.code == 0, plain
    assert "volume 1: ok, 14 blocks checked, index copies 3/3" in plain.out
    bad = site.run("f4", "verify", "--parity", "--json", "--volume", VID)
    assert bad.code == 1, bad
    doc = bad.json()
    assert doc["ok"] is False and doc["parity"] is True
    (vol,) = doc["volumes"]
    assert vol["parity_checked"] is True
    assert vol["damage"] == [{"stripe": 0, "block": 11, "problem": PARITY_MISMATCH}]

    # A plain rebuild finds nothing to do; --parity rewrites the lying block.
    plain_rebuild = site.run("f4", "rebuild", "--json", "--volume", VID, db=True)
    assert plain_rebuild.code == 0, plain_rebuild
    assert plain_rebuild.json()["volumes"] == [{"volume": VID, "outcome": "healthy"}]
    fixed = site.run("f4", "rebuild", "--parity", "--json", "--volume", VID, db=True)
    assert fixed.code == 0, fixed
    (row,) = fixed.json()["volumes"]
    assert row["outcome"] == "done" and row["blocks_rebuilt"] == 1, row
    again = site.run("f4", "verify", "--parity", "--json", "--volume", VID)
    assert again.code == 0 and again.json()["ok"] is True, again
