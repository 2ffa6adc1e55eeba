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

import math
import time
from dataclasses import dataclass

from f4 import index as index_file
from f4.blob import BlobId, BlobKey, open_sealed
from f4.block_store import BlockStore
from f4.erasure import Codec
from f4.errors import BlobAbsent, BlobCorrupt, BlockCorrupt, BlockMissing, BlockUnreachable
from f4.keystore import KeyStore
from f4.stripe import ReadCounter, StripeRef, aligned, read_checked, reconstruct


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

    def _locate(self, volume: int, key: int, alt_key: int, cookie: int) -> _Located:
        entry = self.index(volume).entries.get((key, alt_key))
        if entry is None or entry.cookie != cookie:
            raise BlobAbsent("no such blob")
        blob = BlobId(volume, key, alt_key)
        blob_key = self.keys.get(blob)
        if blob_key is None:
            raise BlobAbsent("no such blob")
        ref = StripeRef(volume, entry.stripe, self.index(volume).stripes[entry.stripe])
        start, end = aligned(entry.offset, entry.length, ref.info.block_length)
        cut = slice(entry.offset - start, entry.offset - start + entry.length)
        return _Located(entry.block, blob, blob_key, ref, start, end, cut)

    def read(self, volume: int, key: int, alt_key: int, cookie: int) -> bytes:
        at = self._locate(volume, key, alt_key, cookie)
        try:
            plaintext = self._healthy(at)
        except (BlockMissing, BlockUnreachable):
            # A rebuild may have moved the block since the index was loaded: reload only
            # when a copy's header names a newer generation (a 32-byte read per copy).
            loaded = self.index(volume).generation
            newest = self._newest_generation(volume)
            if newest is not None and newest > loaded:
                self.reload(volume)
                if self.index(volume).generation > loaded:  # not a newer copy that fails
                    return self.read(volume, key, alt_key, cookie)
            plaintext = self._degraded(at)
        except (BlockCorrupt, BlobCorrupt):
            plaintext = self._degraded(at)
        self.counter.bytes_served += len(plaintext)
        return plaintext

    def _newest_generation(self, volume: int) -> int | None:
        now = time.monotonic()
        if now - self._peeked.get(volume, -math.inf) < self.index_peek_s_min:
            return None
        self._peeked[volume] = now
        return index_file.newest_generation(self.store, volume, racks=self.racks)

    def _healthy(self, at: _Located) -> bytes:
        record = read_checked(self.store, at.ref, at.block, at.start, at.end, self.counter)
        plaintext = open_sealed(at.blob_key, at.blob, record[at.cut])
        self.counter.healthy_reads += 1
        return plaintext

    def degraded_read(self, volume: int, key: int, alt_key: int, cookie: int) -> bytes:
        """The blob decoded from the other blocks, as when its own block is lost."""
        plaintext = self._degraded(self._locate(volume, key, alt_key, cookie))
        self.counter.bytes_served += len(plaintext)
        return plaintext

    def _degraded(self, at: _Located) -> bytes:
        rows = reconstruct(
            self.store, self.codec, at.ref, [at.block], at.start, at.end, self.counter
        )
        self.counter.degraded_reads += 1
        return open_sealed(at.blob_key, at.blob, rows[at.block][at.cut])


@dataclass(frozen=True, slots=True)
class _Located:
    block: int
    blob: BlobId
    blob_key: BlobKey
    ref: StripeRef
    start: int
    end: int
    cut: slice


def delete(keys: KeyStore, volume: int, key: int, alt_key: int) -> bool:
    """Deletes a blob: its key is removed and purged from disk. True if it existed."""
    return keys.delete([BlobId(volume, key, alt_key)]) > 0
