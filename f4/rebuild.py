"""Finding lost or corrupt blocks and rebuilding them whole, throttled and resumable.

`verify` checks every block of a volume: present, the length its stripe says, its sidecar
whole and every chunk matching; and every index copy readable on its placement (over the
nodes that answer: f4.index.walk_placement, so a lost node's copy is expected on its
replacement). With
`parity`, it also recomputes each stripe's 4 parity rows from its 10 data rows (the rows the
encoder used, ROW_BYTES of each block at a time) and compares them with the stored parity
byte for byte: one row of each of the 14 blocks in memory at a time, never a whole block.
A mismatch is damage with problem PARITY_MISMATCH: on the parity blocks that disagree when
some of the healthy parity blocks agree (a wrong data byte would change all of them); when
all disagree, on the one data block whose decoded row (from the other 13) makes every
parity row agree; when no single block explains it, on every parity block that disagrees.
Parity alone cannot tell more than that (which side lies); the sidecar sums are the first
line, parity the check for what they cannot see. Each row is paid for with
`throttle.wait(nbytes)` before it is read.

`rebuild` rewrites each damaged block (by `verify`, with parity when asked), row by row,
decoded from 10 healthy blocks of its stripe, onto its own node when that is fine, else a
node holding no other block of the stripe, on the rack holding the fewest of them, the least
loaded (`choose_target`: the stripe's failure domains stay apart and rebuilt blocks spread
over the cell), through a temporary
file that is fsync'd and renamed (sidecar first). Only then does a new index generation
point at it; the old copy is removed last. A rebuild killed at any point resumes: a block
already complete and healthy on the chosen node is not rewritten. Every block written is
paced by `throttle.wait(nbytes)` before its bytes are read. Last (`complete_index`), it
writes the index copies its placement over the nodes that answer lacks (a lost node's on
the placement's next node), and only when all of them hold the newest generation removes
the copies found elsewhere (written under another placement, or on a replacement while a
node that is back was down).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from f4 import index as index_file
from f4 import sidecar
from f4.block_store import BlockStore, block_name, sidecar_name
from f4.encoder import ROW_BYTES, ChecksummedWriter
from f4.erasure import DATA_BLOCKS, STRIPE_BLOCKS, Codec
from f4.errors import (
    BlockMissing,
    BlockUnreachable,
    F4Error,
    F4FormatError,
    IndexUnavailable,
)
from f4.index import RackOf
from f4.stripe import BLOCK_FAULTS, ReadCounter, StripeRef, read_checked, reconstruct

PARITY_MISMATCH: Final = "parity_mismatch"


class Pacer(Protocol):
    """What a rebuild is paced by: common.jobs.local.Throttle (also where a cancel is seen)."""

    def wait(self, nbytes: int = 0) -> None:
        """Accounts `nbytes` and blocks until the rate allows more."""


@dataclass(frozen=True, slots=True)
class Damage:
    stripe: int
    block: int
    problem: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    volume: int
    blocks_checked: int
    damage: tuple[Damage, ...]
    index_copies_ok: int
    index_copies_expected: int
    parity_checked: bool = False  # the stripes' parity was recomputed and compared
    bytes_read: int = 0  # block and sidecar bytes read by the rows' checks

    @property
    def ok(self) -> bool:
        return not self.damage and self.index_copies_ok == self.index_copies_expected


@dataclass(frozen=True, slots=True)
class RebuildProgress:
    blocks_done: int
    blocks_total: int
    bytes_written: int


@dataclass(frozen=True, slots=True)
class RebuildStats:
    volume: int
    blocks_rebuilt: int
    blocks_found_done: int
    bytes_written: int
    bytes_read: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes_written / 1e6 / self.seconds if self.seconds else 0.0


def _problem(e: F4Error) -> str:
    """What a fault reading a block says about it (Damage.problem)."""
    if isinstance(e, BlockUnreachable):
        return "node unreachable"
    if isinstance(e, BlockMissing):
        return "missing"
    if isinstance(e, F4FormatError):
        return f"sidecar: {e.message}"
    return e.message


def _check_shape(
    store: BlockStore, volume: int, stripe: int, block: int, node: str, block_length: int
) -> str | None:
    """None when the block's sidecar is whole and for a block of `block_length` bytes and the
    block has that length, else what is wrong."""
    try:
        sums = sidecar.decode(store.get(node, sidecar_name(volume, stripe, block)))
        if sums.block_length != block_length or sums.chunk_bytes != sidecar.CHUNK_BYTES:
            return "sidecar is for another block length"
        if store.size(node, block_name(volume, stripe, block)) != block_length:
            return "block has the wrong length"
    except (*BLOCK_FAULTS, F4FormatError) as e:
        return _problem(e)
    return None


def check_block(
    store: BlockStore,
    volume: int,
    stripe: int,
    block: int,
    node: str,
    block_length: int,
    *,
    throttle: Pacer | None = None,
    counter: ReadCounter | None = None,
) -> str | None:
    """None when the block on `node` is healthy, else what is wrong with it."""
    problem = _check_shape(store, volume, stripe, block, node, block_length)
    if problem is not None:
        return problem
    info = index_file.StripeInfo(block_length, (node,) * STRIPE_BLOCKS)
    ref = StripeRef(volume, stripe, info)
    counter = counter if counter is not None else ReadCounter()
    try:
        for offset in range(0, block_length, ROW_BYTES):
            end = min(offset + ROW_BYTES, block_length)
            if throttle is not None:
                throttle.wait(end - offset)
            read_checked(store, ref, block, offset, end, counter)
    except BLOCK_FAULTS as e:
        return _problem(e)
    return None


def verify(
    store: BlockStore,
    volume: int,
    *,
    parity: bool = False,
    throttle: Pacer | None = None,
    codec: Codec | None = None,
    racks: RackOf | None = None,
) -> VerifyReport:
    """Every block of the volume checked against its sidecar (and, with `parity`, every
    stripe's parity recomputed and compared), and its index copies on their placement."""
    idx = index_file.load(store, volume, racks=racks)
    counter = ReadCounter()
    damage = []
    copies_ok, copies_placed = _index_copies(store, idx, racks)
    for s, info in enumerate(idx.stripes):
        if parity:
            problems = _verify_stripe_rows(
                store, codec or Codec(), StripeRef(volume, s, info), throttle, counter
            )
        else:
            problems = {}
            for b in range(STRIPE_BLOCKS):
                problem = check_block(
                    store,
                    volume,
                    s,
                    b,
                    info.nodes[b],
                    info.block_length,
                    throttle=throttle,
                    counter=counter,
                )
                if problem is not None:
                    problems[b] = problem
        damage += [Damage(s, b, problems[b]) for b in sorted(problems)]
    return VerifyReport(
        volume,
        len(idx.stripes) * STRIPE_BLOCKS,
        tuple(damage),
        copies_ok,
        copies_placed,
        parity_checked=parity,
        bytes_read=counter.bytes_read,
    )


def _verify_stripe_rows(
    store: BlockStore,
    codec: Codec,
    ref: StripeRef,
    throttle: Pacer | None,
    counter: ReadCounter,
) -> dict[int, str]:
    """Block -> problem for one stripe, reading it a row (ROW_BYTES of each block) at a
    time: each row checked against its sidecar sums, then, when the 10 data rows are
    healthy, the parity recomputed from them and compared with the healthy parity rows. A
    block with a problem is not read further."""
    length = ref.info.block_length
    problems: dict[int, str] = {}
    for b in range(STRIPE_BLOCKS):
        problem = _check_shape(store, ref.volume, ref.stripe, b, ref.info.nodes[b], length)
        if problem is not None:
            problems[b] = problem
    for offset in range(0, length, ROW_BYTES):
        end = min(offset + ROW_BYTES, length)
        live = [b for b in range(STRIPE_BLOCKS) if b not in problems]
        if not live:
            break
        if throttle is not None:
            throttle.wait((end - offset) * len(live))
        rows: dict[int, bytes] = {}
        for b in live:
            try:
                rows[b] = read_checked(store, ref, b, offset, end, counter)
            except BLOCK_FAULTS as e:
                problems[b] = _problem(e)
        if all(b in rows for b in range(DATA_BLOCKS)):
            for b in parity_disagreement(codec, rows):
                problems.setdefault(b, PARITY_MISMATCH)
    return problems


def parity_disagreement(codec: Codec, rows: dict[int, bytes]) -> list[int]:
    """The blocks to blame when a row's stored parity differs from the parity of its data
    rows (empty when it agrees). `rows`: block -> the same range of each block, all 10
    data blocks and the healthy parity blocks."""
    data = [rows[b] for b in range(DATA_BLOCKS)]
    stored = {b: rows[b] for b in range(DATA_BLOCKS, STRIPE_BLOCKS) if b in rows}
    computed = codec.parity(data)
    wrong = [b for b in stored if computed[b - DATA_BLOCKS] != stored[b]]
    if not wrong or len(wrong) < len(stored) or len(stored) < 2:
        # A wrong data byte changes every parity row (every coefficient of an MDS code's
        # parity is non-zero): some parity rows agreeing blames those that do not.
        return wrong
    suspects = [b for b in range(DATA_BLOCKS) if _explains(codec, rows, stored, b)]
    return suspects if len(suspects) == 1 else wrong


def _explains(codec: Codec, rows: dict[int, bytes], stored: dict[int, bytes], block: int) -> bool:
    """Whether replacing data block `block`'s row by the one decoded from the 9 other data
    rows and one parity row makes every stored parity row agree."""
    first = min(stored)
    pieces = {b: rows[b] for b in range(DATA_BLOCKS) if b != block}
    pieces[first] = stored[first]
    decoded = codec.reconstruct(pieces, [block])[block]
    data = [decoded if b == block else rows[b] for b in range(DATA_BLOCKS)]
    computed = codec.parity(data)
    return all(computed[b - DATA_BLOCKS] == stored[b] for b in stored)


def index_copies_ok(store: BlockStore, idx: index_file.VolumeIndex, racks: RackOf | None) -> int:
    """How many of the placement's copies are readable and of `idx`'s generation (the
    placement over the nodes that answer: f4.index.walk_placement)."""
    return _index_copies(store, idx, racks)[0]


def _index_copies(
    store: BlockStore, idx: index_file.VolumeIndex, racks: RackOf | None
) -> tuple[int, int]:
    """(copies readable and of `idx`'s generation, copies placed) on the placement over the
    nodes that answer."""
    placed = index_file.placed_copies(store, idx.volume, racks=racks)
    ok = sum(c is not None and c.generation == idx.generation for c in placed.values())
    return ok, len(placed)


def choose_target(
    store: BlockStore,
    volume: int,
    stripe: int,
    info: index_file.StripeInfo,
    block: int,
    *,
    racks: RackOf | None = None,
) -> str:
    """Where a damaged block is rebuilt: its own node when that is reachable and holds no
    other block of the stripe (the file was lost or went bad, the disk is fine). Else,
    among the reachable nodes holding no other block of the stripe (all reachable nodes when
    none is free): one that already holds a copy of the block (a rebuild killed after
    writing it: the resumed run checks that copy instead of writing another), else the one
    on the rack holding the fewest of the stripe's other blocks, then holding the fewest
    blocks in all, then first in the cell's order. So the stripe keeps its failure domains
    apart when the cell has room, and rebuilt blocks spread over the cell instead of
    piling onto its first free node."""
    listings: dict[str, list[str]] = {}
    for node in store.nodes():
        try:
            listings[node] = store.list(node)
        except BlockUnreachable:
            continue
    return pick_target(listings, store.nodes(), volume, stripe, info, block, racks=racks)


def pick_target(
    listings: Mapping[str, Collection[str]],
    order: list[str],
    volume: int,
    stripe: int,
    info: index_file.StripeInfo,
    block: int,
    *,
    racks: RackOf | None = None,
    leaving: bool = False,
) -> str:
    """choose_target's rule over given listings (reachable node -> its object names) and
    the cell's node order. `leaving`: the block moves off its own node (a rebalance), which
    is then no candidate; a node already holding a copy of the block is still preferred
    (a move killed after its copy: the resumed run checks that copy)."""
    if not listings:
        raise IndexUnavailable("no node is reachable")
    own = info.nodes[block]
    others = [n for i, n in enumerate(info.nodes) if i != block]
    reachable = [n for n in listings if not (leaving and n == own)]
    if not reachable:
        raise IndexUnavailable("no other node is reachable")
    free = [n for n in reachable if n not in others]
    if own in free:
        return own
    pool = free or reachable
    name = block_name(volume, stripe, block)
    for node in pool:
        if name in listings[node]:
            return node
    rack = racks or (lambda n: n)
    on_rack = Counter(rack(n) for n in others)
    position = {n: i for i, n in enumerate(order)}

    def cost(node: str) -> tuple[int, int, int, int]:
        held = sum(1 for x in listings[node] if x.endswith(".blk"))
        return others.count(node), on_rack[rack(node)], held, position.get(node, len(order))

    return min(pool, key=cost)


def rebuild(
    store: BlockStore,
    volume: int,
    *,
    codec: Codec | None = None,
    throttle: Pacer | None = None,
    on_progress: Callable[[RebuildProgress], None] | None = None,
    parity: bool = False,
    racks: RackOf | None = None,
) -> RebuildStats:
    """Rebuilds what `verify` (with `parity` when asked; not paced: the rebuild pays for
    what it writes) finds damaged, then puts the index copies on their placement."""
    started = time.monotonic()
    codec = codec or Codec()
    idx = index_file.load(store, volume, racks=racks)
    report = verify(store, volume, parity=parity, codec=codec, racks=racks)
    counter = ReadCounter()
    rebuilt = found_done = written = 0
    damaged: dict[int, set[int]] = {}
    for d in report.damage:
        damaged.setdefault(d.stripe, set()).add(d.block)
    total = len(report.damage)
    for stripe, blocks in sorted(damaged.items()):
        for block in sorted(blocks):
            info = idx.stripes[stripe]
            target = choose_target(store, volume, stripe, info, block, racks=racks)
            moved = target != info.nodes[block]
            if (
                moved
                and check_block(
                    store, volume, stripe, block, target, info.block_length, throttle=throttle
                )
                is None
            ):
                found_done += 1
            else:
                written += _rebuild_block(
                    store,
                    codec,
                    StripeRef(volume, stripe, info),
                    block,
                    target,
                    blocks,
                    throttle,
                    counter,
                )
                rebuilt += 1
            if moved:
                old = info.nodes[block]
                idx = idx.with_block_moved(stripe, block, target)
                index_file.write(store, idx, racks=racks)
                for name in (
                    block_name(volume, stripe, block),
                    sidecar_name(volume, stripe, block),
                ):
                    try:
                        store.delete(old, name)
                    except BlockUnreachable:
                        pass
            if on_progress is not None:
                on_progress(RebuildProgress(rebuilt + found_done, total, written))
    complete_index(store, idx, racks)
    return RebuildStats(
        volume, rebuilt, found_done, written, counter.bytes_read, time.monotonic() - started
    )


def complete_index(store: BlockStore, idx: index_file.VolumeIndex, racks: RackOf | None) -> None:
    """How a rebuild (and a rebalance) ends: the copies its placement over the nodes that
    answer lacks (a node lost for good has its copy on the walk's next node) written at
    `idx`'s generation, and, only once all of them hold it, the copies elsewhere removed (a
    replacement's copy after its node came back, copies of an older placement)."""
    ok, placed = _index_copies(store, idx, racks)
    if ok < placed:
        index_file.write(store, idx, racks=racks)
        ok, placed = _index_copies(store, idx, racks)
    if ok == placed:
        index_file.remove_misplaced(store, idx, racks=racks)


def _rebuild_block(
    store: BlockStore,
    codec: Codec,
    ref: StripeRef,
    block: int,
    target: str,
    damaged: set[int],
    throttle: Pacer | None,
    counter: ReadCounter,
) -> int:
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
            rows = reconstruct(
                store, codec, ref, [block], offset, end, counter, avoid=damaged - {block}
            )
            writer.write(rows[block])
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    return length
