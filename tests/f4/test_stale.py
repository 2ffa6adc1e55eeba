"""Stale files (f4/stale.py): the rule on hand-built views (a block placed elsewhere, an
index copy off its placement, a volume whose copies disagree), and the survey and reclaim
on a migrated cell of local directories: a copy of a block left on another node is found
with its size and deleted, kept while its placed copy is corrupt, and kept while the
volume's index copies disagree."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from f4 import index as index_file
from f4.block_store import block_name, index_name, sidecar_name
from f4.cell import Cell
from f4.config import F4Config, F4Node
from f4.index import StripeInfo, VolumeIndex
from f4.reader import Reader
from f4.stale import (
    BLOCK,
    INDEX,
    SIDECAR,
    StaleFile,
    VolumeView,
    committed,
    parse_name,
    reclaim,
    stale_files,
    survey,
)
from f4.watch import Watcher
from tests.f4.helpers import Blobs, random_blobs, sealed_volume

VID = 1
GRACE_S = 3600.0
NODES = [f"n{i:02d}" for i in range(15)]  # one more than a stripe: n14 holds no block


def _index(generation: int = 5) -> VolumeIndex:
    return VolumeIndex(VID, generation, (StripeInfo(4096, tuple(NODES[:14])),))


def _view(*placed_generations: int | None, **others: int | None) -> VolumeView:
    placement = ("n01", "n02", "n03")
    gens = dict(zip(placement, placed_generations, strict=True))
    return VolumeView(_index(), placement, {**gens, **others})


def test_names_parse_into_volume_stripe_block_and_kind() -> None:
    assert parse_name("v1.s0.b3.blk") == (1, 0, 3, BLOCK)
    assert parse_name("v12.s4.b13.sum") == (12, 4, 13, SIDECAR)
    assert parse_name("v7.f4idx") == (7, -1, -1, INDEX)
    assert parse_name("v1.s0.b3.blk.abc.tmp") is None
    assert parse_name("notes.txt") is None


def test_a_block_placed_on_another_node_is_stale_and_its_own_is_not() -> None:
    listings = {
        "n03": {"v1.s0.b3.blk", "v1.s0.b3.sum", "v1.f4idx"},
        "n14": {"v1.s0.b3.blk", "v1.s0.b3.sum", "v1.s9.b0.blk", "v1.s0.b20.blk", "v1.f4idx"},
        "n05": {"v2.s0.b3.blk"},  # a volume without a view: never stale
    }
    found = stale_files(listings, {VID: _view(5, 5, 5, n14=4)})
    assert found == [
        StaleFile("n14", "v1.f4idx", VID, INDEX),
        StaleFile("n14", "v1.s0.b3.blk", VID, BLOCK, 0, 3, "n03"),
        StaleFile("n14", "v1.s0.b3.sum", VID, SIDECAR, 0, 3, "n03"),
    ]


def test_an_index_copy_is_stale_only_when_the_whole_placement_holds_the_generation() -> None:
    listings = {"n14": {"v1.f4idx"}}
    # One placed copy behind: a quorum still commits generation 5, but the off-placement
    # copy may be what a reader needs: kept.
    assert stale_files(listings, {VID: _view(5, 5, 4, n14=4)}) == []
    # Unreadable, or newer than the committed generation: kept.
    assert stale_files(listings, {VID: _view(5, 5, 5, n14=None)}) == []
    assert stale_files({"n14": {"v1.f4idx"}}, {VID: _view(5, 5, 5, n14=6)}) == []


@pytest.mark.parametrize(
    ("placed", "others", "consistent"),
    [
        ((5, 6, 4), {}, True),  # three generations: none on a quorum
        ((5, None, None), {}, True),  # one copy readable
        ((5, 5, 5), {"n14": 6}, True),  # a newer generation off the placement
        ((5, 5, 5), {}, False),  # the copies of generation 5 name different nodes
    ],
)
def test_a_volume_whose_index_copies_disagree_has_nothing_stale(
    placed: tuple[int | None, ...], others: dict[str, int | None], consistent: bool
) -> None:
    view = _view(*placed, **others)
    view = VolumeView(view.index, view.placement, view.generations, consistent)
    assert not committed(view)
    listings = {"n14": {"v1.s0.b3.blk", "v1.s0.b3.sum"}, "n13": {"v1.s0.b3.blk"}}
    assert stale_files(listings, {VID: view}) == []


# -- on a migrated cell ----------------------------------------------------------------------


@pytest.fixture
def blobs() -> Blobs:
    return random_blobs(random.Random(5), 80)


@pytest.fixture
def cell(tmp_path: Path, blobs: Blobs) -> Iterator[Cell]:
    sealed_volume(tmp_path / "vols", VID, blobs)
    c = Cell(
        F4Config(
            cell_root=tmp_path / "cell",
            haystack_dir=tmp_path / "vols",
            nodes=tuple(F4Node(n, f"r{n}") for n in NODES),
            block_bytes=8192,
            rebuild_mb_s=0.0,
            age_s_min=0.0,
            stale_block_grace_s=GRACE_S,
        )
    )
    try:
        c.migrate(VID)
        yield c
    finally:
        c.close()


def _leave_copy(cell: Cell, stripe: int, block: int) -> tuple[str, str, int]:
    """Copies the block and its sidecar onto the node holding no block of the stripe, as a
    node back from the dead holds them: (that node, the placed one, their bytes)."""
    nodes = index_file.load(cell.store, VID).stripes[stripe].nodes
    (on,) = set(NODES) - set(nodes)
    placed = cell.config.blocks_dir / nodes[block]
    total = 0
    for name in (block_name(VID, stripe, block), sidecar_name(VID, stripe, block)):
        shutil.copyfile(placed / name, cell.config.blocks_dir / on / name)
        total += (placed / name).stat().st_size
    return on, nodes[block], total


def _read_all(cell: Cell, blobs: Blobs) -> None:
    reader = Reader(cell.store, cell.keys)
    for (key, alt), (cookie, data) in blobs.items():
        assert reader.read(VID, key, alt, cookie) == data


def test_a_left_copy_is_found_with_its_size_and_deleted(cell: Cell, blobs: Blobs) -> None:
    assert survey(cell.store, [VID]) == ([], {})
    on, placed, nbytes = _leave_copy(cell, 1, 3)
    files, sizes = survey(cell.store, [VID])
    assert [(f.node, f.name, f.placed) for f in files] == [
        (on, block_name(VID, 1, 3), placed),
        (on, sidecar_name(VID, 1, 3), placed),
    ]
    assert sum(sizes.values()) == nbytes > 8192
    report = reclaim(cell.store, files)
    assert report.deleted == files and report.refused == []
    assert report.bytes_deleted == nbytes
    assert not (cell.config.blocks_dir / on / block_name(VID, 1, 3)).exists()
    assert not (cell.config.blocks_dir / on / sidecar_name(VID, 1, 3)).exists()
    assert survey(cell.store, [VID]) == ([], {})
    assert cell.verify(VID).ok
    _read_all(cell, blobs)
    # Run again (a killed run's next): nothing is stale any more, nothing happens.
    again = reclaim(cell.store, files)
    assert again.deleted == [] and again.not_stale == 2


def test_a_left_copy_is_kept_while_its_placed_copy_is_corrupt(cell: Cell) -> None:
    on, placed, _ = _leave_copy(cell, 1, 3)
    files, _ = survey(cell.store, [VID])
    path = cell.config.blocks_dir / placed / block_name(VID, 1, 3)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(raw)
    report = reclaim(cell.store, files)
    assert report.deleted == []
    assert [r.file for r in report.refused] == files
    assert all(f"the placed copy on {placed}" in r.reason for r in report.refused)
    assert (cell.config.blocks_dir / on / block_name(VID, 1, 3)).exists()


def test_nothing_is_deleted_while_the_index_copies_disagree(cell: Cell) -> None:
    on, _, _ = _leave_copy(cell, 1, 3)
    files, _ = survey(cell.store, [VID])
    assert len(files) == 2
    # A newer generation on one placed copy only (a write cut short, or a split): the
    # committed generation is not known, so nothing of the volume is stale.
    idx = index_file.load(cell.store, VID)
    first = index_file.index_nodes(cell.store, VID)[0]
    newer = VolumeIndex(VID, idx.generation + 1, idx.stripes, idx.entries)
    cell.store.put(first, index_name(VID), [index_file.encode(newer)])
    assert survey(cell.store, [VID]) == ([], {})
    report = reclaim(cell.store, files)
    assert report.deleted == [] and report.refused == [] and report.not_stale == 2
    assert (cell.config.blocks_dir / on / block_name(VID, 1, 3)).exists()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_watcher_reports_a_left_copy_and_hands_it_over_only_after_the_grace(
    cell: Cell,
) -> None:
    clock = Clock()
    watcher = Watcher(cell, clock=clock)
    on, placed, nbytes = _leave_copy(cell, 1, 3)
    first = watcher.tick(1)
    assert [(f.node, f.name, f.placed) for f in first.stale] == [
        (on, block_name(VID, 1, 3), placed),
        (on, sidecar_name(VID, 1, 3), placed),
    ]
    assert first.stale_nodes == {on: {"files": 2, "bytes": nbytes}}
    assert first.lost == []
    assert watcher.due_stale() == []
    clock.now += GRACE_S - 1
    assert watcher.tick(2).stale == first.stale
    assert watcher.due_stale() == []  # seen since the first tick, not the second
    clock.now += 1
    due = watcher.due_stale()
    assert due == first.stale
    assert watcher.reclaim(due) == (2, nbytes, 0)
    after = watcher.tick(3)
    assert after.stale == [] and after.stale_nodes == {} and watcher.stale_seen == {}
    assert cell.verify(VID).ok


def test_the_watcher_keeps_a_left_copy_of_a_corrupt_block_for_another_grace(cell: Cell) -> None:
    clock = Clock()
    watcher = Watcher(cell, clock=clock)
    on, placed, _ = _leave_copy(cell, 1, 3)
    path = cell.config.blocks_dir / placed / block_name(VID, 1, 3)
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0x01
    path.write_bytes(raw)
    watcher.tick(1)
    clock.now += GRACE_S
    due = watcher.due_stale()
    assert len(due) == 2
    assert watcher.reclaim(due) == (0, 0, 2)
    assert (cell.config.blocks_dir / on / block_name(VID, 1, 3)).exists()
    # Not read again at every tick: the refused files wait another grace.
    watcher.tick(2)
    assert watcher.due_stale() == []
    clock.now += GRACE_S
    assert watcher.due_stale() == due
