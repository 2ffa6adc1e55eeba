"""Where rebuilt blocks go: never beside another block of their stripe when the cell has
room, on the rack holding the fewest of the stripe's blocks, spread over the cell rather
than piled on its first free node, and, for a killed rebuild, onto the copy it already
wrote."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from f4 import index as index_file
from f4.block_store import block_name, sidecar_name
from f4.erasure import STRIPE_BLOCKS
from f4.reader import Reader
from f4.rebuild import choose_target, rebuild, verify
from tests.f4.helpers import Blobs, Cell, make_cell, random_blobs, sealed_volume

VID = 1
NODES = 20
RACKS = 4  # host by host: n00..n04 in r0, n05..n09 in r1, ...


def rack_of(node: str) -> str:
    return f"r{int(node[1:]) * RACKS // NODES}"


def _rack_spread(nodes: tuple[str, ...]) -> int:
    """The most blocks of one stripe on one rack."""
    return max(Counter(rack_of(n) for n in nodes).values())


def _migrated(tmp_path: Path, seed: int, count: int) -> tuple[Cell, Blobs]:
    blobs = random_blobs(random.Random(seed), count)
    sealed_volume(tmp_path / "vols", VID, blobs)
    cell = make_cell(tmp_path / "cell", nodes=NODES)
    cell.migrate(tmp_path / "vols", VID)
    return cell, blobs


def test_rebuilt_blocks_keep_racks_apart_and_spread_over_the_cell(tmp_path: Path) -> None:
    cell, blobs = _migrated(tmp_path, 8, 800)
    before = index_file.load(cell.store, VID)
    assert len(before.stripes) >= 6  # the lost node holds a block of each
    spread_before = {s: _rack_spread(info.nodes) for s, info in enumerate(before.stripes)}

    lost = Counter(n for info in before.stripes for n in info.nodes).most_common(1)[0][0]
    (cell.store.root / lost).rename(cell.store.root / f"{lost}.down")
    stats = rebuild(cell.store, VID, racks=rack_of)
    lost_blocks = [
        (s, info.nodes.index(lost)) for s, info in enumerate(before.stripes) if lost in info.nodes
    ]
    assert stats.blocks_rebuilt == len(lost_blocks) >= 4
    assert verify(cell.store, VID, racks=rack_of).ok

    after = index_file.load(cell.store, VID)
    targets = []
    for s, info in enumerate(after.stripes):
        assert len(set(info.nodes)) == STRIPE_BLOCKS  # 14 distinct nodes, the lost one not
        assert lost not in info.nodes
        # A rebuild never crowds a stripe onto one rack more than its placement did.
        assert _rack_spread(info.nodes) <= spread_before[s], (s, info.nodes)
    for s, b in lost_blocks:
        targets.append(after.stripes[s].nodes[b])
    # Spread: the lost node's blocks went to several nodes, none taking most of them.
    load = Counter(targets)
    assert len(load) >= 2 and max(load.values()) <= -(-len(targets) // 2), load
    reader = Reader(cell.store, cell.keys, racks=rack_of)
    for (key, alt), (cookie, data) in blobs.items():
        assert reader.read(VID, key, alt, cookie) == data
    assert reader.counter.degraded_reads == 0  # everything is back where the index says


def test_a_killed_rebuild_resumes_onto_the_copy_it_wrote(tmp_path: Path) -> None:
    cell, _ = _migrated(tmp_path, 9, 120)
    idx = index_file.load(cell.store, VID)
    info = idx.stripes[0]
    lost = info.nodes[3]
    (cell.store.root / lost).rename(cell.store.root / f"{lost}.down")
    first = choose_target(cell.store, VID, 0, info, 3, racks=rack_of)
    assert first not in info.nodes
    # A rebuild killed after committing the block on another free node, before the index
    # named it: the resumed choice is that node, whatever the ranking says.
    spare = next(n for n in cell.store.nodes() if n not in info.nodes and n != first and n != lost)
    source = cell.root / "cell-copy"
    source.mkdir()
    survivor = info.nodes[0]
    for name in (block_name(VID, 0, 0), sidecar_name(VID, 0, 0)):
        data = cell.store.get(survivor, name)  # any complete file stands for the copy
        cell.store.put(spare, name.replace(".b0.", ".b3."), [data])
    assert choose_target(cell.store, VID, 0, info, 3, racks=rack_of) == spare
    # The copy is not the block (it holds block 0's bytes): the resumed rebuild finds it
    # bad, rewrites it in place, and the cell verifies.
    rebuild(cell.store, VID, racks=rack_of)
    assert verify(cell.store, VID, racks=rack_of).ok
    assert index_file.load(cell.store, VID).stripes[0].nodes[3] == spare
