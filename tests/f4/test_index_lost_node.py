"""A volume's index copies when a node is lost for good (f4.index.walk_placement): the
placement passes over the node and its copy goes to the walk's next node by the same rule;
the watcher sees the missing copy only after the grace, the rebuild writes it and verify
passes while the node stays gone; when the node comes back its stale copy loses to the
newer generation, and the next rebuild puts the copies back on the whole placement. On
local directories (a node moved away is a dead node), in a cell of 16 nodes listed host
by host in 4 racks of 4."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from f4 import index as index_file
from f4.block_store import index_name
from f4.cell import Cell
from f4.config import F4Config, F4Node
from f4.reader import Reader
from f4.rebuild import complete_index, index_copies_ok
from f4.watch import IndexCopyLost, Watcher
from tests.f4.helpers import Blobs, random_blobs, sealed_volume

VID = 1
GRACE_S = 60.0
NODES = 16
RACK = {f"n{i:02d}": f"r{i // 4}" for i in range(NODES)}


def rack_of(node: str) -> str:
    return RACK[node]


@pytest.fixture
def blobs() -> Blobs:
    return random_blobs(random.Random(11), 120)


@pytest.fixture
def cell(tmp_path: Path, blobs: Blobs) -> Iterator[Cell]:
    sealed_volume(tmp_path / "vols", VID, blobs)
    c = Cell(
        F4Config(
            cell_root=tmp_path / "cell",
            haystack_dir=tmp_path / "vols",
            nodes=tuple(F4Node(n, r) for n, r in RACK.items()),
            block_bytes=8192,
            rebuild_mb_s=0.0,
            age_s_min=0.0,
            node_lost_after_s=GRACE_S,
        )
    )
    try:
        c.migrate(VID)
        yield c
    finally:
        c.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _holders(cell: Cell) -> set[str]:
    return {n for n in cell.store.nodes() if cell.store.exists(n, index_name(VID))}


def _read_all(cell: Cell, blobs: Blobs) -> Reader:
    reader = Reader(cell.store, cell.keys, racks=rack_of)
    for (key, alt), (cookie, data) in blobs.items():
        assert reader.read(VID, key, alt, cookie) == data
    return reader


def test_a_down_node_moves_only_its_own_copy_by_the_same_rule(tmp_path: Path) -> None:
    cell = Cell(
        F4Config(
            cell_root=tmp_path,
            haystack_dir=tmp_path,
            nodes=tuple(F4Node(n, r) for n, r in RACK.items()),
        )
    )
    store = cell.store
    for volume in range(64):
        whole = index_file.index_nodes(store, volume, racks=rack_of)
        for gone in whole:
            placed = index_file.index_nodes(store, volume, racks=rack_of, down={gone})
            assert gone not in placed and len(set(placed)) == 3
            assert len({RACK[n] for n in placed}) == 3, (volume, gone, placed)
            assert set(whole) - {gone} <= set(placed)  # the other copies stay put
            assert placed == index_file.index_nodes(store, volume, racks=rack_of, down={gone})
        # A node outside the placement going down changes nothing.
        other = next(n for n in store.nodes() if n not in whole)
        assert index_file.index_nodes(store, volume, racks=rack_of, down={other}) == whole
    # Two racks down: the copies still go to 3 distinct nodes of what is left.
    placed = index_file.index_nodes(
        store, 0, racks=rack_of, down={n for n, r in RACK.items() if r in ("r0", "r1")}
    )
    assert placed == ["n08", "n12", "n09"]


def test_a_lost_node_s_copy_is_rebuilt_elsewhere_and_superseded_when_it_returns(
    cell: Cell, blobs: Blobs, tmp_path: Path
) -> None:
    clock = Clock()
    watcher = Watcher(cell, clock=clock)
    whole = index_file.index_nodes(cell.store, VID, racks=rack_of)
    assert _holders(cell) == set(whole)
    before = index_file.load(cell.store, VID)
    # The lost node holds a copy and blocks (so the rebuild moves them: a new generation).
    gone = next(n for n in whole if any(n in s.nodes for s in before.stripes))
    away = tmp_path / "away"
    shutil.move(cell.config.blocks_dir / gone, away)
    replacement = index_file.index_nodes(cell.store, VID, racks=rack_of, down={gone})
    (new_node,) = set(replacement) - set(whole)

    clock.now += 1
    waiting = watcher.tick(1)
    assert waiting.nodes_waiting == [gone] and waiting.index_copies_lost == []
    clock.now += GRACE_S
    lost = watcher.tick(2)
    assert lost.nodes_lost == [gone]
    assert lost.index_copies_lost == [IndexCopyLost(VID, new_node, "missing")]
    # Readers find the 2 copies that answer meanwhile and read every blob.
    _read_all(cell, blobs)

    stats = cell.rebuild(VID)  # raises unless verify passes afterwards
    assert stats.blocks_rebuilt > 0
    report = cell.verify(VID)
    assert report.ok and report.index_copies_ok == report.index_copies_expected == 3
    assert _holders(cell) == set(replacement)
    after = index_file.load(cell.store, VID)
    assert after.generation > before.generation
    assert all(gone not in s.nodes for s in after.stripes)
    assert watcher.tick(3).index_copies_lost == [] and watcher.tick(3).lost == []
    _read_all(cell, blobs)

    # The node comes back with its old copy: never read as current, and flagged stale.
    shutil.move(away, cell.config.blocks_dir / gone)
    assert index_file.peek_generation(cell.store, VID, gone) == before.generation
    assert index_file.load(cell.store, VID).generation == after.generation
    assert index_file.newest_generation(cell.store, VID) == after.generation
    _read_all(cell, blobs)
    clock.now += 1
    back = watcher.tick(4)
    assert back.nodes_lost == [] and back.index_copies_lost == [IndexCopyLost(VID, gone, "stale")]
    stale = cell.verify(VID)
    assert (stale.index_copies_ok, stale.index_copies_expected) == (2, 3)

    cell.rebuild(VID)  # the whole placement again, the replacement's copy removed
    assert _holders(cell) == set(whole)
    assert index_file.peek_generation(cell.store, VID, gone) == after.generation
    assert cell.verify(VID).ok and watcher.tick(5).index_copies_lost == []
    _read_all(cell, blobs)


def test_the_copy_alone_is_written_at_its_generation_and_the_node_s_own_stays_current(
    cell: Cell, blobs: Blobs, tmp_path: Path
) -> None:
    """What a rebuild ends with when no block moved (the node held only the copy): the
    replacement gets the same generation, and the node's copy when it returns is as
    current as the others, so either may be read."""
    idx = index_file.load(cell.store, VID)
    whole = index_file.index_nodes(cell.store, VID, racks=rack_of)
    gone = whole[1]
    shutil.move(cell.config.blocks_dir / gone, tmp_path / "away")
    assert index_copies_ok(cell.store, idx, rack_of) == 2
    complete_index(cell.store, idx, rack_of)
    assert index_copies_ok(cell.store, idx, rack_of) == 3
    replacement = index_file.index_nodes(cell.store, VID, racks=rack_of, down={gone})
    assert _holders(cell) == set(replacement)
    assert index_file.load(cell.store, VID) == idx
    shutil.move(tmp_path / "away", cell.config.blocks_dir / gone)
    assert index_copies_ok(cell.store, idx, rack_of) == 3
    assert index_file.load(cell.store, VID) == idx
    _read_all(cell, blobs)
    complete_index(cell.store, idx, rack_of)
    assert _holders(cell) == set(whole)
