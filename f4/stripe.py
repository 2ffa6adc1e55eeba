"""Reading ranges of a stripe's blocks: checked reads, and reconstruction from survivors.

Every range read from a block is widened to whole sidecar chunks and checked against the
sums of just those chunks (read from the sidecar at their offset) where the block is: a
storage node checks before it answers (BlockStore.get_checked_range, one request), so no
unchecked byte is ever used. A reconstruction of rows `wanted` over [offset, offset +
length) reads that same chunk-aligned range from the first 10 healthy other blocks of the
stripe, data blocks first (cheapest to decode), skipping any that is missing, unreachable
or fails its sums, and decodes only that range (f4.erasure). Bytes read are counted in a
ReadCounter.

The reads of a reconstruction go out together (FETCH_THREADS_MAX threads shared by every
reconstruction of the process): over storage nodes a degraded read then waits for its
slowest range, not for ten in a row. A block that fails is replaced by the next
candidate in the same order, so the blocks used are the first 10 healthy ones, as before.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Final

from f4 import sidecar
from f4.block_store import BlockStore, block_name
from f4.erasure import DATA_BLOCKS, STRIPE_BLOCKS, Codec
from f4.errors import BlockCorrupt, BlockMissing, BlockUnreachable, StripeUnrecoverable
from f4.index import StripeInfo

BLOCK_FAULTS = (BlockMissing, BlockUnreachable, BlockCorrupt)
FETCH_THREADS_MAX: Final = 16  # a reconstruction's concurrent block reads, per process

_fetch_pool: ThreadPoolExecutor | None = None
_fetch_pool_lock = threading.Lock()
_count_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _fetch_pool
    with _fetch_pool_lock:
        if _fetch_pool is None:
            _fetch_pool = ThreadPoolExecutor(FETCH_THREADS_MAX, thread_name_prefix="f4-fetch")
        return _fetch_pool


@dataclass
class ReadCounter:
    bytes_read: int = 0  # block and sidecar bytes read from nodes
    bytes_served: int = 0
    healthy_reads: int = 0
    degraded_reads: int = 0


@dataclass(frozen=True, slots=True)
class StripeRef:
    volume: int
    stripe: int
    info: StripeInfo


def aligned(offset: int, length: int, block_length: int) -> tuple[int, int]:
    """The chunk-aligned [start, end) that covers [offset, offset + length)."""
    c = sidecar.CHUNK_BYTES
    start = offset // c * c
    end = min(-(-(offset + length) // c) * c, block_length)
    return start, end


def read_checked(
    store: BlockStore, ref: StripeRef, block: int, start: int, end: int, counter: ReadCounter
) -> bytes:
    """Block bytes [start, end) (chunk-aligned), checked against the sidecar where the
    block is (one request to a storage node)."""
    node = ref.info.nodes[block]
    data = store.get_checked_range(
        node, block_name(ref.volume, ref.stripe, block), start, end - start
    )
    with _count_lock:  # reconstructions read from several threads
        counter.bytes_read += sidecar.checked_read_bytes(start, end - start)
    return data


def survivor_order(wanted: Collection[int], avoid: Collection[int] = ()) -> list[int]:
    """The blocks a reconstruction of `wanted` tries, in order: data blocks first (the
    cheapest to decode), none wanted nor known bad."""
    return [b for b in range(STRIPE_BLOCKS) if b not in wanted and b not in avoid]


def reconstruct(
    store: BlockStore,
    codec: Codec,
    ref: StripeRef,
    wanted: Collection[int],
    start: int,
    end: int,
    counter: ReadCounter,
    *,
    avoid: Collection[int] = (),
) -> dict[int, bytes]:
    """Rows `wanted` of [start, end) (chunk-aligned) decoded from 10 healthy other blocks;
    blocks in `avoid` are known bad and not tried."""
    candidates = survivor_order(wanted, avoid)
    pieces: dict[int, bytes] = {}
    pool = _pool()
    running: dict[Future[bytes], int] = {}

    def more() -> None:
        while candidates and len(pieces) + len(running) < DATA_BLOCKS:
            block = candidates.pop(0)
            future = pool.submit(read_checked, store, ref, block, start, end, counter)
            running[future] = block

    more()
    while running:
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            block = running.pop(future)
            try:
                pieces[block] = future.result()
            except BLOCK_FAULTS:
                continue
        more()
    if len(pieces) < DATA_BLOCKS:
        raise StripeUnrecoverable(
            f"volume {ref.volume} stripe {ref.stripe}: only {len(pieces)} healthy blocks"
        )
    return codec.reconstruct(pieces, list(wanted))
