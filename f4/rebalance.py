"""Moving healthy blocks to keep a cell's placement balanced: after a node was added, when
one node holds many more blocks than another, or when a stripe keeps two blocks in one
failure domain although the cell now has a free one.

`plan` is pure: from the nodes' listings, the cell's order and racks and one volume's
index, the moves (stripe, block, from, to) that make the volume's placement better, each
target chosen by f4.rebuild.pick_target (choose_target's rule: a node holding no other
block of the stripe, on the rack holding the fewest of them, the least loaded), the
listings updated as each move is planned. A move is planned only when it helps:

- **spread**: its target holds fewer blocks of the stripe than its node, or as many and
  its rack fewer (the count of node-sharing pairs, then of rack-sharing pairs, of the
  stripe falls with every move, so planning ends);
- **skew**: when the most loaded reachable node holds more than `slack` blocks more than the
  least loaded one, a block of the volume leaves a most loaded node for a target holding
  at least 2 fewer blocks, without making its stripe's spread worse.

`move` carries one out, resumable at every step: copy the block row by row from its node
(each row checked against the source's sidecar, paid for with `throttle.wait(nbytes)`
before it is read) into a new block and sidecar on the target (temporary, fsync, rename:
f4.encoder.ChecksummedWriter), check the copy against its sidecar there, point a new index
generation at it (f4.index.write: the commit, as a rebuild's), and only then delete the old
copy. Until the commit every read goes to the old copy; after it, a reader holding the old
index finds the old copy still there or, once it is deleted, reloads the index (f4.reader),
so a read never fails because of a move. `run` keeps the planned moves in a journal
(`<work>/v<N>.rebalance`, written atomically) before the first one, so a run killed at any
point is resumed by the next one: a move the index already names is finished by deleting
the old copy; one whose copy on the target is complete and healthy is only committed; one
whose source is no longer healthy is rolled back (its copy on the target removed).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from f4 import index as index_file
from f4.block_store import BlockStore, block_name, sidecar_name
from f4.encoder import ROW_BYTES, ChecksummedWriter, write_json_atomic
from f4.errors import BlockMissing, BlockUnreachable, F4Error, IndexUnavailable
from f4.index import RackOf, StripeInfo, VolumeIndex
from f4.rebuild import Pacer, check_block, complete_index, pick_target
from f4.stripe import BLOCK_FAULTS, ReadCounter, StripeRef, read_checked


@dataclass(frozen=True, slots=True)
class Move:
    stripe: int
    block: int
    source: str
    target: str
    reason: str  # "spread" or "skew"


@dataclass(frozen=True, slots=True)
class RebalanceStats:
    volume: int
    moves_planned: int
    blocks_moved: int  # committed by this run (copied, or found copied by a killed run)
    blocks_found_done: int  # the index already named the target (a run killed after commit)
    moves_rolled_back: int
    bytes_copied: int
    seconds: float

    def as_json(self) -> dict[str, float | int]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def journal_path(work_dir: Path, volume: int) -> Path:
    return work_dir / f"v{volume}.rebalance"


def _held(names: Iterable[str]) -> int:
    return sum(1 for x in names if x.endswith(".blk"))


def _spread(info_nodes: list[str], block: int, node: str, rack: RackOf) -> tuple[int, int]:
    """(blocks of the stripe other than `block` on `node`, on `node`'s rack)."""
    others = [n for i, n in enumerate(info_nodes) if i != block]
    return others.count(node), sum(1 for n in others if rack(n) == rack(node))


def plan(
    listings: Mapping[str, set[str]],
    order: list[str],
    idx: VolumeIndex,
    *,
    racks: RackOf | None = None,
    slack: int,
    moves_max: int,
) -> list[Move]:
    """The moves that improve the volume's placement (module docstring), at most
    `moves_max`. `listings`: each reachable node's object names (not changed; a copy is
    updated as moves are planned); blocks on unreachable nodes are the rebuild's business
    and never move."""
    rack = racks or (lambda n: n)
    names = {n: set(v) for n, v in listings.items()}
    held = {n: _held(v) for n, v in names.items()}
    stripes = [list(info.nodes) for info in idx.stripes]
    moves: list[Move] = []

    def target_for(s: int, b: int) -> str | None:
        info = StripeInfo(idx.stripes[s].block_length, tuple(stripes[s]))
        try:
            return pick_target(names, order, idx.volume, s, info, b, racks=racks, leaving=True)
        except IndexUnavailable:
            return None

    def apply(s: int, b: int, target: str, reason: str) -> None:
        source = stripes[s][b]
        for name in (block_name(idx.volume, s, b), sidecar_name(idx.volume, s, b)):
            names[source].discard(name)
            names[target].add(name)
        held[source] -= 1
        held[target] += 1
        stripes[s][b] = target
        moves.append(Move(s, b, source, target, reason))

    for s in range(len(stripes)):
        for b in range(len(stripes[s])):
            if len(moves) >= moves_max:
                return moves
            own = stripes[s][b]
            if own not in names or _spread(stripes[s], b, own, rack) == (0, 0):
                continue
            target = target_for(s, b)
            if target is None or target == own:
                continue
            if _spread(stripes[s], b, target, rack) < _spread(stripes[s], b, own, rack):
                apply(s, b, target, "spread")

    while len(moves) < moves_max and held:
        if max(held.values()) - min(held.values()) <= slack:
            break
        moved = False
        for source in sorted(held, key=lambda n: -held[n]):
            for s, nodes in enumerate(stripes):
                for b, node in enumerate(nodes):
                    if node != source:
                        continue
                    target = target_for(s, b)
                    if (
                        target is not None
                        and target != source
                        and held[target] + 2 <= held[source]
                        and _spread(nodes, b, target, rack) <= _spread(nodes, b, source, rack)
                    ):
                        apply(s, b, target, "skew")
                        moved = True
                        break
                if moved:
                    break
            if moved:
                break
        if not moved:
            break
    return moves


def listings_of(store: BlockStore) -> dict[str, set[str]]:
    """Each reachable node's object names."""
    out: dict[str, set[str]] = {}
    for node in store.nodes():
        try:
            out[node] = set(store.list(node))
        except BlockUnreachable:
            continue
    return out


def _delete_copy(store: BlockStore, node: str, volume: int, stripe: int, block: int) -> None:
    for name in (block_name(volume, stripe, block), sidecar_name(volume, stripe, block)):
        try:
            store.delete(node, name)
        except (BlockUnreachable, BlockMissing):
            pass


class _SourceLost(Exception):
    """The block's own copy failed a read while being copied."""


def _copy(
    store: BlockStore,
    ref: StripeRef,
    block: int,
    target: str,
    throttle: Pacer | None,
    counter: ReadCounter,
) -> int:
    """Copies the block from its node (rows checked against its sidecar there) to
    `target`, sidecar first, through a temporary. Returns the bytes copied."""
    writer = ChecksummedWriter(
        store,
        target,
        block_name(ref.volume, ref.stripe, block),
        sidecar_name(ref.volume, ref.stripe, block),
    )
    length = ref.info.block_length
    try:
        for offset in range(0, length, ROW_BYTES):
            end = min(offset + ROW_BYTES, length)
            if throttle is not None:
                throttle.wait(end - offset)
            try:
                row = read_checked(store, ref, block, offset, end, counter)
            except BLOCK_FAULTS as e:
                raise _SourceLost(str(e)) from e
            writer.write(row)
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    return length


@dataclass
class _Tally:
    moved: int = 0
    found_done: int = 0
    rolled_back: int = 0
    copied: int = 0


def move(
    store: BlockStore,
    idx: VolumeIndex,
    m: Move,
    *,
    racks: RackOf | None = None,
    throttle: Pacer | None = None,
    counter: ReadCounter | None = None,
    tally: _Tally | None = None,
) -> VolumeIndex:
    """Carries out one move (module docstring), whatever an earlier run of it left.
    Returns the index as it is afterwards."""
    tally = tally if tally is not None else _Tally()
    counter = counter if counter is not None else ReadCounter()
    v, s, b = idx.volume, m.stripe, m.block
    info = idx.stripes[s]
    if info.nodes[b] == m.target:  # committed by a killed run: only the old copy is left
        _delete_copy(store, m.source, v, s, b)
        tally.found_done += 1
        return idx
    if info.nodes[b] != m.source:  # a rebuild moved it meanwhile: nothing of ours to do
        tally.rolled_back += 1
        return idx
    length = info.block_length
    if check_block(store, v, s, b, m.target, length, throttle=throttle) is not None:
        try:
            tally.copied += _copy(store, StripeRef(v, s, info), b, m.target, throttle, counter)
        except _SourceLost:
            # The source went bad or away: the rebuild's business. Take our copy away.
            _delete_copy(store, m.target, v, s, b)
            tally.rolled_back += 1
            return idx
        problem = check_block(store, v, s, b, m.target, length)
        if problem is not None:
            _delete_copy(store, m.target, v, s, b)
            raise F4Error(f"volume {v} stripe {s} block {b}: the copy on {m.target}: {problem}")
    idx = idx.with_block_moved(s, b, m.target)
    index_file.write(store, idx, racks=racks)
    _delete_copy(store, m.source, v, s, b)
    tally.moved += 1
    return idx


def run(
    store: BlockStore,
    volume: int,
    work_dir: Path,
    *,
    slack: int,
    moves_max: int,
    racks: RackOf | None = None,
    throttle: Pacer | None = None,
    on_move: Callable[[int, int], None] | None = None,
) -> RebalanceStats:
    """Rebalances the volume: the moves of its journal when a killed run left one, else
    those `plan` finds now (journaled first); each carried out by `move`; then the index
    copies are put on their placement (as a rebuild does) and the journal is removed.
    `on_move(done, total)` after each move."""
    started = time.monotonic()
    idx = index_file.load(store, volume, racks=racks)
    path = journal_path(work_dir, volume)
    if path.exists():
        moves = [Move(**m) for m in json.loads(path.read_bytes())["moves"]]
    else:
        moves = plan(
            listings_of(store), store.nodes(), idx, racks=racks, slack=slack, moves_max=moves_max
        )
        if moves:
            write_json_atomic(path, {"volume": volume, "moves": [asdict(m) for m in moves]})
    tally = _Tally()
    counter = ReadCounter()
    for i, m in enumerate(moves, start=1):
        idx = move(store, idx, m, racks=racks, throttle=throttle, counter=counter, tally=tally)
        if on_move is not None:
            on_move(i, len(moves))
    # As a rebuild ends: the index copies on their placement (which a longer node list
    # changes), then the ones elsewhere removed.
    complete_index(store, idx, racks)
    path.unlink(missing_ok=True)
    return RebalanceStats(
        volume,
        len(moves),
        tally.moved,
        tally.found_done,
        tally.rolled_back,
        tally.copied,
        time.monotonic() - started,
    )


def node_loads(listings: Mapping[str, set[str]]) -> dict[str, int]:
    """Blocks held per reachable node."""
    return {n: _held(v) for n, v in listings.items()}


def skew(listings: Mapping[str, set[str]]) -> int:
    """Most minus fewest blocks held by a reachable node (0 with fewer than 2)."""
    loads = Counter(node_loads(listings))
    return max(loads.values()) - min(loads.values()) if len(loads) > 1 else 0
