"""The migration's stripe builder: any window and row size writes the same bytes (records
that cross a window's end included), and a data block an earlier run wrote is checked
against its sidecar before parity covers it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from f4 import encoder
from f4.block_store import block_name
from f4.encoder import stripe_nodes
from f4.erasure import DATA_BLOCKS, STRIPE_BLOCKS
from f4.errors import BlockCorrupt
from f4.reader import Reader
from f4.rebuild import verify
from tests.f4.helpers import SMALL_BLOCK, Cell, make_cell, random_blobs, sealed_volume

VID = 3


class Crash(Exception):
    pass


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

    def crash(step: str) -> None:
        if step == "data 0.3":
            raise Crash(step)

    with pytest.raises(Crash):
        cell.migrate(vols, VID, on_step=crash)
    nodes = stripe_nodes(cell.store.nodes(), 0)
    bad = cell.store.root / nodes[1] / block_name(VID, 0, 1)
    raw = bytearray(bad.read_bytes())
    raw[100] ^= 0x01
    bad.write_bytes(raw)
    with pytest.raises(BlockCorrupt, match=r"v3\.s0\.b1\.blk"):
        cell.migrate(vols, VID)
    for b in range(4, STRIPE_BLOCKS):  # nothing more of the stripe, parity least of all
        assert not cell.store.exists(nodes[b], block_name(VID, 0, b))
    assert cell.store.clean_temporaries() == 0  # the aborted writers left none
    raw[100] ^= 0x01
    bad.write_bytes(raw)  # the block repaired: the stripe resumes and completes
    cell.migrate(vols, VID)
    assert verify(cell.store, VID).ok
    assert all(cell.store.exists(nodes[b], block_name(VID, 0, b)) for b in range(DATA_BLOCKS))
