"""Reading f4 blobs: healthy reads from one block, degraded reads from 10 survivors.

A read looks the blob up in its volume's index (cached; reloaded when a block is not where
the index said, as after a rebuild moved it), checks the cookie and fetches its key; an
unknown blob, a wrong cookie and a deleted key all raise the same BlobAbsent. The healthy
path is one checked range read from the blob's data block. When that block is missing,
unreachable or fails its sums (or the record fails authentication), the degraded path reads
the blob's chunk-aligned range from 10 other blocks of the stripe and decodes only that
range: about 10 x (length + up to 2 chunks) bytes for `length` bytes served.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from f4 import index as index_file
from f4 import sidecar
from f4.async_blocks import AsyncBlocks
from f4.blob import BlobId, BlobKey, open_sealed
from f4.block_store import BlockStore, block_name
from f4.erasure import DATA_BLOCKS, Codec
from f4.errors import (
    BlobAbsent,
    BlobCorrupt,
    BlockCorrupt,
    BlockMissing,
    BlockUnreachable,
    StripeUnrecoverable,
)
from f4.index import Entry
from f4.key_lookups import KeyLookups
from f4.keystore import KeyStore
from f4.stripe import (
    BLOCK_FAULTS,
    ReadCounter,
    StripeRef,
    aligned,
    read_checked,
    reconstruct,
    survivor_order,
)

T = TypeVar("T")

# Work that costs about what a hand-off to a thread and back costs (~125 us of CPU on this
# VM) or less runs on the event loop; anything longer on the executor.
# A record up to this long is decrypted on the event loop (AES-GCM: 24 us for 200 kB,
# 117 us for 1 MiB).
OPEN_INLINE_BYTES_MAX: Final = 1 << 20
# A degraded range up to this long per block is decoded on the event loop (measured: about
# 20 us for 16 KiB, 50 us for 64 KiB, 100 us for 128 KiB).
DECODE_INLINE_BYTES_MAX: Final = 128 * 1024


class Reader:
    def __init__(
        self,
        store: BlockStore,
        keys: KeyStore,
        codec: Codec | None = None,
        *,
        racks: index_file.RackOf | None = None,
        index_peek_s_min: float = 0.0,
    ) -> None:
        """`racks`: the cell's racks (F4Config.rack_of), where index copies are looked for
        first (f4.index.index_nodes); copies elsewhere are found too."""
        self.store = store
        self.keys = keys
        self.codec = codec or Codec()
        self.racks = racks
        # A lost block makes every read of it look for a newer index (a header read per
        # copy); a busy reader looks at most once per index_peek_s_min per volume and reads
        # degraded meanwhile (the same bytes).
        self.index_peek_s_min = index_peek_s_min
        self._peeked: dict[int, float] = {}
        self.counter = ReadCounter()
        self._indexes: dict[int, index_file.VolumeIndex] = {}

    def index(self, volume: int) -> index_file.VolumeIndex:
        idx = self._indexes.get(volume)
        if idx is None:
            idx = self._indexes[volume] = index_file.load(self.store, volume, racks=self.racks)
        return idx

    def reload(self, volume: int) -> None:
        self._indexes.pop(volume, None)

    def loaded(self, volume: int) -> bool:
        """Whether the volume's index is in memory (place then needs no I/O)."""
        return volume in self._indexes

    def place(self, volume: int, key: int, alt_key: int, cookie: int) -> tuple[BlobId, Entry]:
        """The blob's index entry (the index loaded if need be): BlobAbsent for an unknown
        blob and a wrong cookie."""
        entry = self.index(volume).entries.get((key, alt_key))
        if entry is None or entry.cookie != cookie:
            raise BlobAbsent("no such blob")
        return BlobId(volume, key, alt_key), entry

    def located(self, blob: BlobId, entry: Entry, blob_key: BlobKey | None) -> Located:
        """Where the placed blob is read, with its key; BlobAbsent without a key (deleted):
        the same answer as for an unknown blob."""
        if blob_key is None:
            raise BlobAbsent("no such blob")
        ref = StripeRef(blob.volume, entry.stripe, self.index(blob.volume).stripes[entry.stripe])
        start, end = aligned(entry.offset, entry.length, ref.info.block_length)
        cut = slice(entry.offset - start, entry.offset - start + entry.length)
        return Located(
            entry.block, blob, blob_key, ref, start, end, cut, entry.length, entry.cookie
        )

    def locate(self, volume: int, key: int, alt_key: int, cookie: int) -> Located:
        """Where the blob is and its key (the index loaded if need be, the key store
        asked): BlobAbsent for an unknown blob, a wrong cookie and a deleted key alike."""
        blob, entry = self.place(volume, key, alt_key, cookie)
        return self.located(blob, entry, self.keys.get(blob))

    def read(self, volume: int, key: int, alt_key: int, cookie: int) -> bytes:
        at = self.locate(volume, key, alt_key, cookie)
        try:
            plaintext = self._healthy(at)
        except (BlockMissing, BlockUnreachable):
            if self.reloaded_newer(volume):
                return self.read(volume, key, alt_key, cookie)
            plaintext = self._degraded(at)
        except (BlockCorrupt, BlobCorrupt):
            plaintext = self._degraded(at)
        self.counter.bytes_served += len(plaintext)
        return plaintext

    def reloaded_newer(self, volume: int) -> bool:
        """After a block was missing or unreachable: a rebuild may have moved it since the
        index was loaded. Reloads only when a copy's header names a newer generation (a
        32-byte read per copy); True when a newer index was loaded (read again)."""
        loaded = self.index(volume).generation
        newest = self._newest_generation(volume)
        if newest is None or newest <= loaded:
            return False
        self.reload(volume)
        return self.index(volume).generation > loaded  # not a newer copy that fails

    def peek_due(self, volume: int) -> bool:
        """Whether reloaded_newer would look at the index copies now (no I/O)."""
        return time.monotonic() - self._peeked.get(volume, -math.inf) >= self.index_peek_s_min

    def _newest_generation(self, volume: int) -> int | None:
        if not self.peek_due(volume):
            return None
        self._peeked[volume] = time.monotonic()
        return index_file.newest_generation(self.store, volume, racks=self.racks)

    def _healthy(self, at: Located) -> bytes:
        record = read_checked(self.store, at.ref, at.block, at.start, at.end, self.counter)
        plaintext = open_sealed(at.blob_key, at.blob, record[at.cut])
        self.counter.healthy_reads += 1
        return plaintext

    def degraded_read(self, volume: int, key: int, alt_key: int, cookie: int) -> bytes:
        """The blob decoded from the other blocks, as when its own block is lost."""
        plaintext = self._degraded(self.locate(volume, key, alt_key, cookie))
        self.counter.bytes_served += len(plaintext)
        return plaintext

    def _degraded(self, at: Located) -> bytes:
        rows = reconstruct(
            self.store, self.codec, at.ref, [at.block], at.start, at.end, self.counter
        )
        self.counter.degraded_reads += 1
        return open_sealed(at.blob_key, at.blob, rows[at.block][at.cut])


@dataclass(frozen=True, slots=True)
class Located:
    block: int
    blob: BlobId
    blob_key: BlobKey
    ref: StripeRef
    start: int
    end: int
    cut: slice
    length: int  # of the sealed record
    cookie: int

    @property
    def node(self) -> str:
        return self.ref.info.nodes[self.block]

    @property
    def block_name(self) -> str:
        return block_name(self.ref.volume, self.ref.stripe, self.block)


class AsyncReader:
    """The Reader's read for an event loop (the name node's): the same answers, the same
    counters. What may touch a disk or a lock runs off the loop: an index load on
    `executor`, the key lookup on f4.key_lookups' thread (batched with other reads'),
    decoding a range over DECODE_INLINE_BYTES_MAX on `executor` and decrypting a record
    over OPEN_INLINE_BYTES_MAX there too (smaller ones on the loop: each costs less than
    the hand-off). Block ranges are awaited on
    `blocks`, one request to a storage node each; a degraded read awaits its 10 together."""

    def __init__(self, reader: Reader, blocks: AsyncBlocks, executor: Executor) -> None:
        self.reader = reader
        self.blocks = blocks
        self.executor = executor
        self.keys = KeyLookups(reader.keys)

    def close(self) -> None:
        self.keys.close()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def locate(self, volume: int, key: int, alt_key: int, cookie: int) -> Located:
        """Reader.locate off the loop: BlobAbsent for an unknown blob, a wrong cookie and a
        deleted key alike."""
        r = self.reader
        if r.loaded(volume):
            blob, entry = r.place(volume, key, alt_key, cookie)
        else:
            blob, entry = await self._run(r.place, volume, key, alt_key, cookie)
        return r.located(blob, entry, await self.keys.get(blob))

    async def locate_many(self, reads: Sequence[tuple[int, int, int, int]]) -> list[Located | None]:
        """locate for each (volume, key, alt_key, cookie), their keys asked for in one
        wake-up of the lookup thread; None where locate raises BlobAbsent. The volumes must
        be served (F4Error, such as IndexUnavailable, propagates)."""
        r = self.reader
        placed: list[tuple[BlobId, Entry] | None] = []
        for volume, key, alt_key, cookie in reads:
            try:
                if r.loaded(volume):
                    placed.append(r.place(volume, key, alt_key, cookie))
                else:
                    placed.append(await self._run(r.place, volume, key, alt_key, cookie))
            except BlobAbsent:
                placed.append(None)
        found = [p for p in placed if p is not None]
        keys: Iterator[BlobKey | None] = iter(())
        if found:
            keys = iter(await self.keys.get_many(tuple(blob for blob, _ in found)))
        out: list[Located | None] = []
        for p in placed:
            if p is None:
                out.append(None)
                continue
            blob_key = next(keys)
            out.append(None if blob_key is None else r.located(p[0], p[1], blob_key))
        return out

    async def read(self, volume: int, key: int, alt_key: int, cookie: int) -> bytes:
        return await self.read_located(await self.locate(volume, key, alt_key, cookie))

    async def read_located(self, at: Located) -> bytes:
        """The plaintext of a located blob: healthy, else degraded (after a newer index,
        when a rebuild may have moved its block)."""
        r = self.reader
        volume, key, alt_key = at.blob.volume, at.blob.key, at.blob.alt_key
        try:
            record = await self.blocks.get_checked_range(
                at.node, at.block_name, at.start, at.end - at.start
            )
            r.counter.bytes_read += sidecar.checked_read_bytes(at.start, at.end - at.start)
            plaintext = await self._open(at, record)
            r.counter.healthy_reads += 1
        except (BlockMissing, BlockUnreachable):
            if r.peek_due(volume) and await self._run(r.reloaded_newer, volume):
                return await self.read(volume, key, alt_key, at.cookie)
            plaintext = await self._degraded(at)
        except (BlockCorrupt, BlobCorrupt):
            plaintext = await self._degraded(at)
        r.counter.bytes_served += len(plaintext)
        return plaintext

    async def _open(self, at: Located, record: bytes) -> bytes:
        view = memoryview(record)[at.cut]
        if at.length <= OPEN_INLINE_BYTES_MAX:
            return open_sealed(at.blob_key, at.blob, view)
        return await self._run(open_sealed, at.blob_key, at.blob, view)

    async def _degraded(self, at: Located) -> bytes:
        pieces = await self._fetch_survivors(at)
        codec = self.reader.codec
        if at.end - at.start <= DECODE_INLINE_BYTES_MAX:
            rows = codec.reconstruct(pieces, [at.block])
        else:
            rows = await self._run(codec.reconstruct, pieces, [at.block])
        plaintext = await self._open(at, rows[at.block])
        self.reader.counter.degraded_reads += 1
        return plaintext

    async def _fetch_survivors(self, at: Located) -> dict[int, bytes]:
        """The range of 10 healthy other blocks (f4.stripe.reconstruct's order: data blocks
        first), those on processes known to be down last; the ranges of each process in
        one request (AsyncBlocks.get_checked_ranges), a round again for any that failed."""
        ref, start, end = at.ref, at.start, at.end
        nodes = ref.info.nodes
        candidates = survivor_order([at.block])
        candidates.sort(key=lambda b: not self.blocks.reachable(nodes[b]))  # stable
        pieces: dict[int, bytes] = {}
        while candidates and len(pieces) < DATA_BLOCKS:
            take = candidates[: DATA_BLOCKS - len(pieces)]
            del candidates[: len(take)]
            wants = [(nodes[b], block_name(ref.volume, ref.stripe, b)) for b in take]
            got = await self.blocks.get_checked_ranges(
                [(node, name, start, end - start) for node, name in wants]
            )
            for b, piece in zip(take, got, strict=True):
                if isinstance(piece, BLOCK_FAULTS):
                    continue
                if isinstance(piece, Exception):
                    raise piece
                pieces[b] = piece
                self.reader.counter.bytes_read += sidecar.checked_read_bytes(start, end - start)
        if len(pieces) < DATA_BLOCKS:
            raise StripeUnrecoverable(
                f"volume {ref.volume} stripe {ref.stripe}: only {len(pieces)} healthy blocks"
            )
        return pieces


def delete(keys: KeyStore, volume: int, key: int, alt_key: int) -> bool:
    """Deletes a blob: its key is removed and purged from disk. True if it existed."""
    return keys.delete([BlobId(volume, key, alt_key)]) > 0
