"""The f4 name node's work: serving the cell's migrated blobs and taking their deletes.

It holds the cell's key store and loads each volume's index from its copies on the blocks'
nodes (f4.reader); the storage nodes hold only ciphertext, so decryption happens here, on
the read path, never on a storage node. A read awaits its block ranges on the event loop
(f4.async_blocks: one request to a storage node per range, which it checks against the
block's sidecar); everything that may wait on a disk or a lock (index loads, deletes),
decoding, and decrypting a large record run on a thread pool (`read_threads`),
key lookups on one thread of their own that batches them (f4.key_lookups), never on the
event loop.

A reader that accepts one (replica.read, `X-Pinhole-Read-Ticket`) gets a read ticket
instead of the bytes when the blob's data block is on a storage node process that is not
being skipped (common/read_ticket.py): the same index lookup, cookie check and key lookup
as a read, then a signed URL for the blob's checked range and its key; the reader fetches
the range from the storage node and decrypts it itself. The name node then neither reads
nor sends the blob: a healthy read costs it a small answer. Everything else (a reader
that does not ask, a node read in-process, a process known down, the reader's fallback
after a failed ticketed read) is the full read below, healthy or degraded.

Invariants:
- A volume is served only once its verified mark exists (f4.cell); before that the cell
  answers volume_not_found, exactly as a store node that does not hold the volume.
- An absent blob, a deleted one and a wrong cookie are one answer (BlobAbsent); a ticket,
  and so a blob key, is handed out only past the checks a read makes, at the moment of
  the read (nothing keeps keys for later, nothing hands out a key after its delete).
- A delete of a volume not yet verified is first committed as a tombstone in the key store,
  then applied to every key the index (if it exists by then) lists: the migration's
  reconcile step finds what this could not (f4.handover).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from common import read_ticket
from common.credentials import Credentials
from f4.async_blocks import AsyncBlocks
from f4.blob import BlobId
from f4.cell import Cell
from f4.erasure import Codec
from f4.errors import (
    BlobAbsent,
    BlockMissing,
    BlockUnreachable,
    F4Error,
    IndexUnavailable,
    VolumeNotServed,
)
from f4.reader import AsyncReader, Located, Reader
from store import needle

# While a block is lost, reads of it look for a newer index at most this often per volume.
INDEX_PEEK_S_MIN: Final = 1.0


# A blob up to this long gets its ETag (the needle checksum, xxh3: 18 us per MiB) on the
# event loop, as f4.reader decrypts it (a hand-off to a thread costs ~125 us of CPU).
CHECKSUM_INLINE_BYTES_MAX: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class Ticket:
    """A read answered with a read ticket (common.read_ticket) instead of the bytes."""

    document: bytes


class NameNode:
    def __init__(self, cell: Cell, *, credentials: Credentials | None = None) -> None:
        """`credentials`: the cluster's, for the blocks credential its storage nodes take
        (the nodes of the cell's config that have a url are read over HTTP)."""
        self.cell = cell
        self.config = cell.config
        # Signs read tickets; without it (or without storage node processes, or with
        # read_tickets off) every read is a full read.
        self._ticket_key = (
            credentials.ticket_key if credentials and cell.config.read_tickets else None
        )
        self.reader = Reader(
            cell.store,
            cell.keys,
            Codec(cell.config.code),
            racks=cell.config.rack_of,
            index_peek_s_min=INDEX_PEEK_S_MIN,
        )
        self._pool = ThreadPoolExecutor(cell.config.read_threads, thread_name_prefix="f4-read")
        urls = {n.name: n.url for n in cell.config.nodes if n.url} if credentials else {}
        self.blocks = AsyncBlocks(cell.store, self._pool, urls=urls, credentials=credentials)
        self.async_reader = AsyncReader(self.reader, self.blocks, self._pool)
        self._served: frozenset[int] = frozenset()
        self._alts: dict[tuple[int, int], dict[int, tuple[int, ...]]] = {}
        self.reads = 0
        self.reads_absent = 0
        self.tickets_issued = 0
        self.ticket_batches = 0
        self.ticket_batch_reads = 0
        self.deletes = 0
        self.keys_destroyed = 0
        self.rescan()

    async def aclose(self) -> None:
        await self.blocks.close()
        self.async_reader.close()
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.cell.close()

    # -- which volumes --------------------------------------------------------------------

    def rescan(self) -> frozenset[int]:
        found = set()
        for path in self.config.work_dir.glob("v*.verified"):
            digits = path.name[1 : -len(".verified")]
            if digits.isdigit():
                found.add(int(digits))
        self._served = frozenset(found)
        return self._served

    def served(self) -> frozenset[int]:
        return self._served

    def serves(self, volume: int) -> bool:
        """Served volumes are remembered; any other is looked for (one stat of its verified
        mark), so a volume is served from the moment its mark exists: the directory switches
        its reads here only after that."""
        if volume in self._served:
            return True
        if (self.config.work_dir / f"v{volume}.verified").exists():
            self._served = self._served | {volume}
            return True
        return False

    # -- reads ----------------------------------------------------------------------------

    async def read(
        self, volume: int, key: int, alt_key: int, cookie: int, *, ticket: bool = False
    ) -> tuple[bytes, int] | Ticket:
        """(plaintext, the needle checksum the store would have) or BlobAbsent /
        VolumeNotServed / an F4Error when the stripe cannot be read. With `ticket`, a
        Ticket instead where one can be given (the module docstring)."""
        if not self.serves(volume):
            raise VolumeNotServed(f"volume {volume} is not served by this cell")
        self.reads += 1
        reader = self.async_reader
        try:
            at = await reader.locate(volume, key, alt_key, cookie)
        except BlobAbsent:
            self.reads_absent += 1
            raise
        if ticket:
            document = self._ticket(at, time.time())
            if document is not None:
                return Ticket(document)
        try:
            data = await reader.read_located(at)
        except BlobAbsent:
            self.reads_absent += 1
            raise
        if len(data) <= CHECKSUM_INLINE_BYTES_MAX:
            return data, needle_checksum(key, alt_key, cookie, data)
        loop = asyncio.get_running_loop()
        checksum = await loop.run_in_executor(
            self._pool, needle_checksum, key, alt_key, cookie, data
        )
        return data, checksum

    async def tickets(self, reads: Sequence[tuple[int, int, int, int]]) -> list[bytes | None]:
        """A ticket document or None for each (volume, key, alt_key, cookie): what a GET
        asking for a ticket would get, None wherever that GET would answer anything but a
        ticket (absent, deleted, wrong cookie, a volume not served, a block read here, an
        index that does not load). The keys of the batch are looked up in one wake-up. Only
        the reads answered with a ticket count in `reads` (the others count at their GET)."""
        self.ticket_batches += 1
        self.ticket_batch_reads += len(reads)
        out: list[bytes | None] = [None] * len(reads)
        if self._ticket_key is None:
            return out
        served = [i for i, (volume, *_) in enumerate(reads) if self.serves(volume)]
        try:
            located = await self.async_reader.locate_many([reads[i] for i in served])
        except F4Error:  # e.g. an index that does not load: each plain GET says so
            return out
        now = time.time()
        for i, at in zip(served, located, strict=True):
            if at is not None:
                out[i] = self._ticket(at, now)
        self.reads += sum(d is not None for d in out)
        return out

    def _ticket(self, at: Located, now: float) -> bytes | None:
        """A ticket for the located blob, or None where the name node reads it itself
        (tickets off, the node read in-process or known down)."""
        if self._ticket_key is None:
            return None
        base = self.blocks.url_of(at.node)
        if base is None:
            return None
        self.tickets_issued += 1
        return read_ticket.issue(
            self._ticket_key,
            base_url=base,
            node=at.node,
            block=at.block_name,
            offset=at.start,
            length=at.end - at.start,
            cut=(at.cut.start, at.length),
            secret=at.blob_key.secret,
            nonce=at.blob_key.nonce,
            now=now,
        )

    # -- deletes --------------------------------------------------------------------------

    async def delete(self, volume: int, key: int, alt_key: int | None) -> int:
        """Destroys the keys of the blob (every variant when alt_key is None); how many."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._delete, volume, key, alt_key)

    def _delete(self, volume: int, key: int, alt_key: int | None) -> int:
        self.deletes += 1
        verified = self.serves(volume)
        if not verified:
            self.cell.keys.tombstone(volume, key, alt_key)
        try:
            alts = (alt_key,) if alt_key is not None else self._alts_of(volume, key)
        except (IndexUnavailable, BlockMissing, BlockUnreachable):
            if verified:
                raise
            return 0  # no index yet: the tombstone is the delete (f4.handover.reconcile)
        destroyed = self.cell.keys.delete([BlobId(volume, key, a) for a in alts])
        self.keys_destroyed += destroyed
        return destroyed

    def _alts_of(self, volume: int, key: int) -> tuple[int, ...]:
        idx = self.reader.index(volume)
        table = self._alts.get((volume, idx.generation))
        if table is None:
            grouped: dict[int, list[int]] = {}
            for k, a in idx.entries:
                grouped.setdefault(k, []).append(a)
            table = {k: tuple(sorted(v)) for k, v in grouped.items()}
            for stale in [vk for vk in self._alts if vk[0] == volume]:
                del self._alts[stale]
            self._alts[(volume, idx.generation)] = table
        return table.get(key, ())

    def statistics(self) -> dict[str, Any]:
        counter = self.reader.counter
        return {
            "volumes_served": sorted(self._served),
            "reads": self.reads,
            "reads_absent": self.reads_absent,
            "tickets_issued": self.tickets_issued,
            "ticket_batches": self.ticket_batches,
            "ticket_batch_reads": self.ticket_batch_reads,
            "healthy_reads": counter.healthy_reads,
            "degraded_reads": counter.degraded_reads,
            "bytes_served": counter.bytes_served,
            "bytes_read": counter.bytes_read,
            "deletes": self.deletes,
            "keys_destroyed": self.keys_destroyed,
            "key_lookups": self.async_reader.keys.lookups,
            "key_lookup_batches": self.async_reader.keys.batches,
            "block_client_errors": self.blocks.client_errors(),
        }


def needle_checksum(key: int, alt_key: int, cookie: int, data: bytes) -> int:
    """The checksum (and so the ETag) a store node gives this needle: the same bytes keep
    the same ETag when their volume moves to the cell."""
    _, footer = needle.encode_parts(key=key, alt_key=alt_key, cookie=cookie, data=data)
    at = needle.FOOTER_BYTES - needle.CHECKSUM_BYTES  # the footer ends with the checksum
    return int.from_bytes(footer[at : needle.FOOTER_BYTES], "little")
