"""Where a volume's index copies go: 3 distinct racks when the cell has them (a cell listed
host by host, 4 racks of 4/4/3/3 nodes), found wherever they are, moved onto their
placement by a rebuild; losing a whole rack then leaves the volume readable."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from f4 import index as index_file
from f4.block_store import index_name
from f4.errors import IndexUnavailable
from f4.reader import Reader
from f4.rebuild import rebuild, verify
from tests.f4.helpers import Blobs, Cell, make_cell, random_blobs, sealed_volume

VID = 1
RACK_SIZES = (4, 4, 3, 3)
RACK: dict[str, str] = {}  # host by host: n00..n03 in r0, n04..n07 in r1, ...
for _r, _size in enumerate(RACK_SIZES):
    for _ in range(_size):
        RACK[f"n{len(RACK):02d}"] = f"r{_r}"


def rack_of(node: str) -> str:
    return RACK[node]


def _holders(cell: Cell, volume: int = VID) -> list[str]:
    return sorted(n for n in cell.store.nodes() if cell.store.exists(n, index_name(volume)))


def _kill_rack(cell: Cell, rack: str) -> None:
    for node, r in RACK.items():
        if r == rack:
            (cell.store.root / node).rename(cell.store.root / f"{node}.down")


def _read_all(reader: Reader, blobs: Blobs) -> None:
    for (key, alt), (cookie, data) in blobs.items():
        assert reader.read(VID, key, alt, cookie) == data


@pytest.fixture
def blobs() -> Blobs:
    return random_blobs(random.Random(5), 100)


@pytest.fixture
def cell(tmp_path: Path, blobs: Blobs) -> Cell:
    sealed_volume(tmp_path / "vols", VID, blobs)
    c = make_cell(tmp_path / "cell", nodes=len(RACK))
    c.migrate(tmp_path / "vols", VID)
    return c


def test_placement_spans_three_racks_for_every_volume(tmp_path: Path) -> None:
    store = make_cell(tmp_path, nodes=len(RACK)).store
    seen: set[str] = set()
    for volume in range(200):
        placed = index_file.index_nodes(store, volume, racks=rack_of)
        assert len(set(placed)) == 3
        assert len({RACK[n] for n in placed}) == 3, (volume, placed)
        assert placed == index_file.index_nodes(store, volume, racks=rack_of)  # deterministic
        assert placed[0] == store.nodes()[volume % len(RACK)]
        seen.update(placed)
    assert seen == set(RACK)  # every node takes its share
    # Without racks (each node its own): consecutive nodes, as before.
    assert index_file.index_nodes(store, 12) == ["n12", "n13", "n00"]
    # Consecutive nodes already in distinct racks: the same nodes either way.
    assert index_file.index_nodes(store, 5, racks=lambda n: str(int(n[1:]) % 4)) == [
        "n05", "n06", "n07",
    ]  # fmt: skip
    # Two racks: three distinct nodes, both racks used.
    two = index_file.index_nodes(store, 2, racks=lambda n: "a" if n < "n07" else "b")
    assert two == ["n02", "n07", "n03"]


def test_rebuild_moves_copies_onto_three_racks_and_a_rack_loss_keeps_reading(
    cell: Cell, blobs: Blobs
) -> None:
    # Placed without racks (each node its own), volume 1's copies sit on n01..n03: one rack.
    assert _holders(cell) == ["n01", "n02", "n03"]
    report = verify(cell.store, VID, racks=rack_of)
    assert report.damage == () and report.index_copies_ok == 1 < report.index_copies_expected
    # Readers that know the racks still find the copies where they are.
    _read_all(Reader(cell.store, cell.keys, racks=rack_of), blobs)

    stats = rebuild(cell.store, VID, racks=rack_of)
    assert stats.blocks_rebuilt == 0
    placed = index_file.index_nodes(cell.store, VID, racks=rack_of)
    assert _holders(cell) == sorted(placed)  # the misplaced copies are gone
    assert sorted(RACK[n] for n in placed) == ["r0", "r1", "r2"]
    assert verify(cell.store, VID, racks=rack_of).ok

    _kill_rack(cell, "r0")  # 4 nodes: a copy and 4 blocks of every stripe
    after = verify(cell.store, VID, racks=rack_of)
    assert after.index_copies_ok == 2
    reader = Reader(cell.store, cell.keys, racks=rack_of)
    _read_all(reader, blobs)
    assert reader.counter.degraded_reads > 0
    # A reader that does not know the racks falls back to every node and reads too.
    _read_all(Reader(cell.store, cell.keys), blobs)


def test_one_rack_placement_is_lost_with_its_rack(cell: Cell) -> None:
    """What the placement is for: copies on consecutive nodes of one rack die with it."""
    _kill_rack(cell, "r0")
    with pytest.raises(IndexUnavailable):
        index_file.load(cell.store, VID, racks=rack_of)


def test_copies_are_found_wherever_they_are_and_the_newest_wins(cell: Cell) -> None:
    idx = index_file.load(cell.store, VID)
    newer = idx.with_block_moved(0, 0, idx.stripes[0].nodes[0])
    index_file.write(cell.store, newer, racks=rack_of)  # gen 2 on the rack placement
    placed = index_file.index_nodes(cell.store, VID, racks=rack_of)
    assert set(_holders(cell)) == {"n01", "n02", "n03", *placed}
    # Without racks the placement is n01..n03: n01 holds gen 2, n02 and n03 gen 1 (behind),
    # so every other node is read and gen 2 wins.
    assert index_file.load(cell.store, VID).generation == 2
    assert index_file.newest_generation(cell.store, VID) == 2
    for node in ("n01", "n02", "n03"):
        if node not in placed:
            cell.store.delete(node, index_name(VID))
    for node in placed:
        if node in ("n01", "n02", "n03"):
            cell.store.delete(node, index_name(VID))
    # None of the unaware placement answers: the header peek looks at every node.
    assert index_file.newest_generation(cell.store, VID) == 2
    assert index_file.load(cell.store, VID).generation == 2
    # A copy elsewhere newer than the placement's is never removed as misplaced.
    index_file.write(cell.store, newer, racks=rack_of)
    stray = next(n for n in cell.store.nodes() if n not in placed)
    newest = newer.with_block_moved(0, 0, idx.stripes[0].nodes[0])
    cell.store.put(stray, index_name(VID), [index_file.encode(newest)])
    old = next(n for n in cell.store.nodes() if n not in placed and n != stray)
    cell.store.put(old, index_name(VID), [index_file.encode(idx)])
    assert index_file.remove_misplaced(cell.store, newer, racks=rack_of) == 1
    assert set(_holders(cell)) == {*placed, stray}
