"""Rebalancing healthy blocks (f4/rebalance.py) on a cell of local directories: the plan
after a node was added and for a stripe sharing a failure domain, and a move resumed or
rolled back from each step a kill can leave it at."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest

from f4 import index as index_file
from f4 import rebalance
from f4.block_store import block_name, sidecar_name
from f4.cell import Cell
from f4.config import F4Config, F4Node
from f4.erasure import STRIPE_BLOCKS
from f4.reader import Reader
from tests.f4.helpers import Blobs, random_blobs, sealed_volume

VID = 1
BLOCK_BYTES = 8192


def _config(tmp: Path, nodes: int) -> F4Config:
    return F4Config(
        cell_root=tmp / "cell",
        haystack_dir=tmp / "vols",
        nodes=tuple(F4Node(f"n{i:02d}", f"r{i:02d}") for i in range(nodes)),
        block_bytes=BLOCK_BYTES,
        rebuild_mb_s=0.0,
        age_s_min=0.0,
    )


@pytest.fixture
def blobs(tmp_path: Path) -> Blobs:
    found = random_blobs(random.Random(7), 240)
    sealed_volume(tmp_path / "vols", VID, found)
    cell = Cell(_config(tmp_path, STRIPE_BLOCKS))
    try:
        assert cell.migrate(VID)["stripes"] >= 4
    finally:
        cell.close()
    return found


def _grown(tmp: Path, nodes: int = STRIPE_BLOCKS + 1) -> Cell:
    config = _config(tmp, nodes)
    for n in config.nodes:
        (config.blocks_dir / n.name).mkdir(parents=True, exist_ok=True)
    return Cell(config)


def _read_all(cell: Cell, blobs: Blobs) -> None:
    reader = Reader(cell.store, cell.keys, racks=cell.config.rack_of)
    for (key, alt), (cookie, data) in blobs.items():
        assert reader.read(VID, key, alt, cookie) == data


def _where(cell: Cell) -> Counter[str]:
    return Counter(
        n for n, names in rebalance.listings_of(cell.store).items() for x in names if ".blk" in x
    )


def test_an_added_node_takes_blocks_until_the_skew_is_within_the_slack(
    tmp_path: Path, blobs: Blobs
) -> None:
    cell = _grown(tmp_path)
    try:
        stripes = len(index_file.load(cell.store, VID).stripes)
        before = _where(cell)
        assert [before[n.name] for n in cell.config.nodes] == [stripes] * 14 + [0]
        stats = cell.rebalance(VID)
        assert stats.blocks_moved == stats.moves_planned > 0
        after = _where(cell)
        loads = [after[n.name] for n in cell.config.nodes]
        assert max(loads) - min(loads) <= cell.config.rebalance_slack_blocks
        assert after["n14"] == stats.blocks_moved and sum(loads) == stripes * STRIPE_BLOCKS
        report = cell.verify(VID)
        assert report.ok, report
        idx = index_file.load(cell.store, VID)
        assert idx.generation == stats.blocks_moved + 1
        for info in idx.stripes:  # still 14 distinct nodes per stripe
            assert len(set(info.nodes)) == STRIPE_BLOCKS
        _read_all(cell, blobs)
        assert not rebalance.journal_path(cell.config.work_dir, VID).exists()
        assert cell.rebalance(VID).moves_planned == 0  # balanced: nothing more to do
    finally:
        cell.close()


def test_a_stripe_sharing_a_node_is_spread_when_the_cell_has_room(
    tmp_path: Path, blobs: Blobs
) -> None:
    cell = _grown(tmp_path)
    try:
        # Put stripe 0's block 3 beside its block 2, as a rebuild on a full cell would.
        idx = index_file.load(cell.store, VID)
        info = idx.stripes[0]
        shared = info.nodes[2]
        for name in (block_name(VID, 0, 3), sidecar_name(VID, 0, 3)):
            cell.store.put(shared, name, [cell.store.get(info.nodes[3], name)])
            cell.store.delete(info.nodes[3], name)
        idx = idx.with_block_moved(0, 3, shared)
        index_file.write(cell.store, idx)
        moves = rebalance.plan(
            rebalance.listings_of(cell.store), cell.store.nodes(), idx, slack=1000, moves_max=10
        )
        # One of the two blocks sharing the node leaves it (the first one found).
        assert [(m.stripe, m.block, m.source, m.reason) for m in moves] == [
            (0, 2, shared, "spread")
        ]
        assert moves[0].target not in index_file.load(cell.store, VID).stripes[0].nodes
        cell.rebalance(VID)
        assert len(set(index_file.load(cell.store, VID).stripes[0].nodes)) == STRIPE_BLOCKS
        assert cell.verify(VID).ok
        _read_all(cell, blobs)
    finally:
        cell.close()


def _journal(cell: Cell, moves: list[rebalance.Move]) -> None:
    doc = {"volume": VID, "moves": [asdict(m) for m in moves]}
    rebalance.journal_path(cell.config.work_dir, VID).write_text(json.dumps(doc))


def test_a_killed_move_resumes_or_rolls_back_from_each_step(tmp_path: Path, blobs: Blobs) -> None:
    cell = _grown(tmp_path)
    try:
        idx = index_file.load(cell.store, VID)
        listings = rebalance.listings_of(cell.store)
        copied, committed, lost = rebalance.plan(
            listings, cell.store.nodes(), idx, slack=2, moves_max=3
        )
        store = cell.store

        def copy(m: rebalance.Move) -> None:
            for name in (block_name(VID, m.stripe, m.block), sidecar_name(VID, m.stripe, m.block)):
                store.put(m.target, name, [store.get(m.source, name)])

        # 1. killed after the copy, before the commit: the copy is checked, then committed.
        copy(copied)
        # 2. killed after the commit, before the old copy was deleted.
        copy(committed)
        idx = idx.with_block_moved(committed.stripe, committed.block, committed.target)
        index_file.write(store, idx)
        # 3. killed after a partial copy, and the source went bad meanwhile: rolled back.
        store.put(lost.target, sidecar_name(VID, lost.stripe, lost.block), [b"partial"])
        path = cell.config.blocks_dir / lost.source / block_name(VID, lost.stripe, lost.block)
        raw = bytearray(path.read_bytes())
        raw[100] ^= 0xFF
        path.write_bytes(bytes(raw))
        _journal(cell, [copied, committed, lost])

        stats = cell.rebalance(VID)
        assert (stats.moves_planned, stats.blocks_moved, stats.blocks_found_done) == (3, 1, 1)
        assert stats.moves_rolled_back == 1
        assert stats.bytes_copied == 0  # the copy on the target was found whole
        after = index_file.load(store, VID)
        for m in (copied, committed):
            assert after.stripes[m.stripe].nodes[m.block] == m.target
            assert not store.exists(m.source, block_name(VID, m.stripe, m.block))
            assert not store.exists(m.source, sidecar_name(VID, m.stripe, m.block))
        assert after.stripes[lost.stripe].nodes[lost.block] == lost.source
        assert not store.exists(lost.target, sidecar_name(VID, lost.stripe, lost.block))
        assert not rebalance.journal_path(cell.config.work_dir, VID).exists()
        _read_all(cell, blobs)  # the corrupt block reads degraded
        damaged = cell.verify(VID)
        assert [(d.stripe, d.block) for d in damaged.damage] == [(lost.stripe, lost.block)]
        cell.rebuild(VID)
        assert cell.verify(VID).ok
    finally:
        cell.close()


def test_blocks_on_an_unreachable_node_never_move(tmp_path: Path, blobs: Blobs) -> None:
    cell = _grown(tmp_path)
    try:
        idx = index_file.load(cell.store, VID)
        listings = rebalance.listings_of(cell.store)
        down = idx.stripes[0].nodes[0]
        del listings[down]
        moves = rebalance.plan(listings, cell.store.nodes(), idx, slack=2, moves_max=100)
        assert moves and all(down not in (m.source, m.target) for m in moves)
    finally:
        cell.close()
