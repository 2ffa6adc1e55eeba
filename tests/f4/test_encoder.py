"""The migration's stripe builder: any window and row size writes the same bytes (records
that cross a window's end included), and a data block an earlier run wrote is checked
against its sidecar before parity covers it (failures of the concurrent block writes
themselves: test_encoder_uploads.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from f4 import encoder
from f4.block_store import block_name
from f4.encoder import Migration, stripe_nodes
from f4.erasure import STRIPE_BLOCKS
from f4.errors import BlockCorrupt, BlockUnreachable
from f4.needle_source import NeedleSource
from f4.reader import Reader
from f4.rebuild import verify
from tests.f4.faulty_store import FaultyStore
from tests.f4.helpers import SMALL_BLOCK, Cell, make_cell, random_blobs, sealed_volume

VID = 3


def _files(cell: Cell) -> dict[str, bytes]:
    root = cell.store.root
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_small_windows_write_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = random_blobs(random.Random(5), 120, size_max=6000)
    vols = sealed_volume(tmp_path / "vols", VID, blobs)
    whole = make_cell(tmp_path / "whole")  # one window per block (SMALL_BLOCK < WINDOW_BYTES)
    whole.migrate(vols, VID)
    monkeypatch.setattr(encoder, "ROW_BYTES", 4096)
    monkeypatch.setattr(encoder, "WINDOW_BYTES", 8192)  # two windows per block, records cross
    assert SMALL_BLOCK > encoder.WINDOW_BYTES
    small = make_cell(tmp_path / "small", keys=whole.keys)
    stats = small.migrate(vols, VID)
    assert stats.blobs == len(blobs) and stats.stripes > 1
    assert _files(small) == _files(whole)
    assert verify(small.store, VID).ok
    reader = Reader(small.store, small.keys)
    for (key, alt), (cookie, data) in blobs.items():
        assert reader.read(VID, key, alt, cookie) == data


def test_a_written_data_block_that_went_bad_stops_the_resumed_stripe(tmp_path: Path) -> None:
    blobs = random_blobs(random.Random(6), 60)
    vols = sealed_volume(tmp_path / "vols", VID, blobs)
    cell = make_cell(tmp_path / "cell")
    nodes = stripe_nodes(cell.store.nodes(), 0)
    # A first run loses parity block 12: the stripe's blocks before it are committed
    # (all 14 go out together, and the run waits for them in order).
    lost = FaultyStore(cell.store, fail_puts={block_name(VID, 0, 12)})
    source = NeedleSource(vols, VID)
    try:
        with pytest.raises(BlockUnreachable):
            Migration(source, lost, cell.keys, cell.work, block_bytes=SMALL_BLOCK).run()
    finally:
        source.close()
    assert all(cell.store.exists(nodes[b], block_name(VID, 0, b)) for b in range(12))
    written = _files(cell)
    bad = cell.store.root / nodes[1] / block_name(VID, 0, 1)
    raw = bytearray(bad.read_bytes())
    raw[100] ^= 0x01
    bad.write_bytes(raw)
    with pytest.raises(BlockCorrupt, match=r"v3\.s0\.b1\.blk"):
        cell.migrate(vols, VID)
    # Nothing more of the stripe, parity least of all, and no upload left open.
    assert not cell.store.exists(nodes[12], block_name(VID, 0, 12))
    assert _files(cell).keys() == written.keys()
    assert cell.store.clean_temporaries() == 0
    raw[100] ^= 0x01
    bad.write_bytes(raw)  # the block repaired: the stripe resumes and completes
    cell.migrate(vols, VID)
    assert verify(cell.store, VID).ok
    assert all(cell.store.exists(nodes[b], block_name(VID, 0, b)) for b in range(STRIPE_BLOCKS))
