"""Finding lost or corrupt blocks and rebuilding them whole, throttled and resumable.

`verify` checks every block of a volume: present, the length its stripe says, its sidecar
whole and every chunk matching; and every index copy readable. `rebuild` rewrites each
damaged block, row by row, decoded from 10 healthy blocks of its stripe, onto a node that
holds no other block of the stripe when there is one (else the same node, else any reachable
one), through a temporary file that is fsync'd and renamed (sidecar first). Only then does a
new index generation point at it; the old copy is removed last. A rebuild killed at any
point resumes: a block already complete and healthy on the chosen node is not rewritten.
Every block written is paced by `throttle.wait(nbytes)` before its bytes are read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from f4 import index as index_file
from f4 import sidecar
from f4.block_store import BlockStore, block_name, index_name, sidecar_name
from f4.encoder import ROW_BYTES, ChecksummedWriter
from f4.erasure import STRIPE_BLOCKS, Codec
from f4.errors import BlockMissing, BlockUnreachable, F4FormatError, IndexUnavailable
from f4.stripe import BLOCK_FAULTS, ReadCounter, StripeRef, reconstruct


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


def check_block(
    store: BlockStore, volume: int, stripe: int, block: int, node: str, block_length: int
) -> str | None:
    """None when the block on `node` is healthy, else what is wrong with it."""
    try:
        sums = sidecar.decode(store.get(node, sidecar_name(volume, stripe, block)))
        if sums.block_length != block_length or sums.chunk_bytes != sidecar.CHUNK_BYTES:
            return "sidecar is for another block length"
        name = block_name(volume, stripe, block)
        if store.size(node, name) != block_length:
            return "block has the wrong length"
        for offset in range(0, block_length, ROW_BYTES):
            data = store.get_range(node, name, offset, min(ROW_BYTES, block_length - offset))
            sums.check(data, offset)
    except BlockUnreachable:
        return "node unreachable"
    except BlockMissing:
        return "missing"
    except F4FormatError as e:
        return f"sidecar: {e.message}"
    except BLOCK_FAULTS as e:
        return e.message
    return None


def verify(store: BlockStore, volume: int) -> VerifyReport:
    idx = index_file.load(store, volume)
    damage = []
    for s, info in enumerate(idx.stripes):
        for b in range(STRIPE_BLOCKS):
            problem = check_block(store, volume, s, b, info.nodes[b], info.block_length)
            if problem is not None:
                damage.append(Damage(s, b, problem))
    return VerifyReport(
        volume,
        len(idx.stripes) * STRIPE_BLOCKS,
        tuple(damage),
        _index_copies_ok(store, idx),
        len(index_file.index_nodes(store, volume)),
    )


def _index_copies_ok(store: BlockStore, idx: index_file.VolumeIndex) -> int:
    ok = 0
    for node in index_file.index_nodes(store, idx.volume):
        try:
            copy = index_file.decode(store.get(node, index_name(idx.volume)))
        except (BlockMissing, BlockUnreachable, F4FormatError):
            continue
        ok += copy.generation == idx.generation
    return ok


def _reachable(store: BlockStore, node: str) -> bool:
    try:
        store.list(node)
    except BlockUnreachable:
        return False
    return True


def choose_target(store: BlockStore, info: index_file.StripeInfo, block: int) -> str:
    """A reachable node with no other block of the stripe; else the block's own node if
    reachable; else the reachable node holding the fewest of the stripe's blocks."""
    nodes = [n for n in store.nodes() if _reachable(store, n)]
    if not nodes:
        raise IndexUnavailable("no node is reachable")
    others = [n for i, n in enumerate(info.nodes) if i != block]
    free = [n for n in nodes if n not in others]
    if info.nodes[block] in free:
        return info.nodes[block]
    if free:
        return free[0]
    return min(nodes, key=others.count)


def rebuild(
    store: BlockStore,
    volume: int,
    *,
    codec: Codec | None = None,
    throttle: Pacer | None = None,
    on_progress: Callable[[RebuildProgress], None] | None = None,
) -> RebuildStats:
    started = time.monotonic()
    codec = codec or Codec()
    idx = index_file.load(store, volume)
    report = verify(store, volume)
    counter = ReadCounter()
    rebuilt = found_done = written = 0
    damaged: dict[int, set[int]] = {}
    for d in report.damage:
        damaged.setdefault(d.stripe, set()).add(d.block)
    total = len(report.damage)
    for stripe, blocks in sorted(damaged.items()):
        for block in sorted(blocks):
            info = idx.stripes[stripe]
            target = choose_target(store, info, block)
            moved = target != info.nodes[block]
            if (
                moved
                and check_block(store, volume, stripe, block, target, info.block_length) is None
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
                index_file.write(store, idx)
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
    if _index_copies_ok(store, idx) < len(index_file.index_nodes(store, volume)):
        index_file.write(store, idx)
    return RebuildStats(
        volume, rebuilt, found_done, written, counter.bytes_read, time.monotonic() - started
    )


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
